"""The console's sign-in: the admin token in constant time, signed cookies that expire and
end at sign-out, and the CSRF and Origin checks of a state change."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from services.edge.console.session import (
    ADMIN,
    VIEWER,
    ConsoleAuthError,
    ConsoleSessions,
    check_change,
    is_secure,
    same_origin,
)
from services.edge.console.sso import people, role_of

TOKEN = "the-admin-token-0123456789"


def request(headers: dict[str, str], scheme: str = "http") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "127.0.0.1:8080", **headers}.items()]
    return Request({"type": "http", "method": "POST", "path": "/ui/keys", "scheme": scheme, "headers": raw})


def test_only_the_admin_token_signs_in() -> None:
    sessions = ConsoleSessions(TOKEN, "secret")
    assert sessions.token_matches("10.0.0.1", TOKEN)
    assert not sessions.token_matches("10.0.0.1", TOKEN[:-1])
    assert not sessions.token_matches("10.0.0.1", "")
    assert not ConsoleSessions("", "secret").token_matches("10.0.0.1", "")


def test_a_session_lives_until_it_expires_or_signs_out() -> None:
    sessions = ConsoleSessions(TOKEN, "secret", seconds=60)
    session, cookie = sessions.issue(now=1000)
    assert sessions.session_of(cookie, now=1059) == session
    assert sessions.session_of(cookie, now=1060) is None
    sessions.ended(session.id, session.expires_at, now=1001)
    assert sessions.session_of(cookie, now=1002) is None


def test_forged_or_foreign_cookies_are_refused() -> None:
    sessions = ConsoleSessions(TOKEN, "secret")
    _session, cookie = sessions.issue()
    assert sessions.session_of(cookie[:-2] + "xx") is None
    assert sessions.session_of("console1.abc.123.sig") is None
    assert sessions.session_of("") is None
    # Another admin token, or another shared secret, signs other cookies.
    assert ConsoleSessions("another-admin-token-0123", "secret").session_of(cookie) is None
    assert ConsoleSessions(TOKEN, "other").session_of(cookie) is None
    # Edges sharing both accept each other's sessions.
    assert ConsoleSessions(TOKEN, "secret").session_of(cookie) is not None


def test_the_csrf_token_belongs_to_its_session() -> None:
    sessions = ConsoleSessions(TOKEN, "secret")
    one, _ = sessions.issue()
    other, _ = sessions.issue()
    assert one.csrf != other.csrf
    assert sessions.csrf_matches(one, one.csrf)
    assert not sessions.csrf_matches(one, other.csrf)
    assert not sessions.csrf_matches(one, None)
    assert not sessions.csrf_matches(one, "é")


def test_a_change_needs_the_same_origin_and_the_csrf_token() -> None:
    sessions = ConsoleSessions(TOKEN, "secret")
    session, _ = sessions.issue()
    origin = {"origin": "http://127.0.0.1:8080"}
    check_change(sessions, session, request(origin), session.csrf)
    check_change(sessions, session, request({**origin, "x-csrf-token": session.csrf}), None)
    for headers, csrf in (
        (origin, None),
        (origin, "wrong"),
        ({"origin": "http://evil.example"}, session.csrf),
        ({"origin": "https://127.0.0.1:8080"}, session.csrf),
        ({"origin": "null"}, session.csrf),
        ({}, session.csrf),
    ):
        with pytest.raises(ConsoleAuthError) as refused:
            check_change(sessions, session, request(headers), csrf)
        assert refused.value.status == 403


def test_the_referer_stands_in_for_a_missing_origin() -> None:
    assert same_origin(request({"referer": "http://127.0.0.1:8080/ui/keys"}))
    assert not same_origin(request({"referer": "http://127.0.0.1:9999/ui/keys"}))


def test_the_console_is_off_without_an_admin_token() -> None:
    from services.edge.console import create_console, is_console_path

    off = create_console(lambda *_: None, "", "internal", "secret", lambda: None, None)  # type: ignore[arg-type,return-value]
    assert off is None
    assert is_console_path("/ui") and is_console_path("/ui/keys")
    assert not is_console_path("/uix")


def test_a_session_carries_its_role_and_who_signed_in() -> None:
    sessions = ConsoleSessions("", "secret")
    viewer, cookie = sessions.issue(role=VIEWER, who="grace@example.org")
    shown = sessions.session_of(cookie)
    assert shown == viewer and shown.read_only and shown.who == "grace@example.org"
    admin, cookie = sessions.issue(who="ada@example.com")
    assert not admin.read_only
    # Without the admin token, no token signs in; the sessions are still signed.
    assert not sessions.token_matches("10.0.0.1", "")
    with pytest.raises(ValueError, match="no console role"):
        sessions.issue(role="owner")


def test_without_any_secret_the_signing_key_is_random() -> None:
    _session, cookie = ConsoleSessions("", "").issue()
    assert ConsoleSessions("", "").session_of(cookie) is None


def test_roles_from_the_providers_claim() -> None:
    admins, viewers = people("Ada@Example.com, *@ops.example.com"), people("*@example.org,bob@example.net")
    assert role_of("ada@example.com", admins, viewers, domains=True) == ADMIN
    assert role_of("kim@ops.example.com", admins, viewers, domains=True) == ADMIN
    assert role_of("grace@example.org", admins, viewers, domains=True) == VIEWER
    assert role_of("BOB@example.net", admins, viewers, domains=True) == VIEWER
    assert role_of("eve@elsewhere.net", admins, viewers, domains=True) is None
    assert role_of("not an address", admins, viewers, domains=True) is None
    # Anyone who is both is an admin.
    assert role_of("ada@example.com", admins, people("*@example.com"), domains=True) == ADMIN


def test_domains_match_only_an_email_claim() -> None:
    """A claim that is not the email (preferred_username, say) may look like an address in a
    domain without being one: only exact entries match it."""
    admins, viewers = people("ada@example.com, *@ops.example.com"), people("*@example.org")
    assert role_of("ada@example.com", admins, viewers) == ADMIN
    assert role_of("kim@ops.example.com", admins, viewers) is None
    assert role_of("grace@example.org", admins, viewers) is None
    assert role_of("grace@example.org", admins, viewers, domains=True) == VIEWER


def test_behind_a_tls_proxy_the_public_url_sets_the_origin_and_secure() -> None:
    """A proxy that terminates TLS off loopback forwards http and its own Host: the Origin a
    browser sends, and whether the cookie is Secure, follow MCPGW_PUBLIC_URL instead."""
    public = "https://gw.example.com/"
    proxied = {"host": "10.0.0.5:8080", "origin": "https://gw.example.com"}
    assert not same_origin(request(proxied))
    assert same_origin(request(proxied), public)
    assert not same_origin(request({"host": "10.0.0.5:8080", "origin": "http://10.0.0.5:8080"}), public)
    assert not same_origin(request({"origin": "http://gw.example.com"}), public)
    assert is_secure(request({}), public)
    assert not is_secure(request({}))
    assert is_secure(request({}, scheme="https"))
    assert not is_secure(request({}, scheme="https"), "http://127.0.0.1:8080")
    sessions = ConsoleSessions(TOKEN, "secret", public_url=public)
    session, _cookie = sessions.issue()
    check_change(sessions, session, request(proxied), session.csrf)
    with pytest.raises(ConsoleAuthError):
        check_change(ConsoleSessions(TOKEN, "secret"), session, request(proxied), session.csrf)


def test_a_sealed_value_opens_for_its_own_session_only() -> None:
    sessions = ConsoleSessions(TOKEN, "secret")
    mine, _ = sessions.issue()
    theirs, _ = sessions.issue()
    sealed = sessions.seal(mine, "sk-the-new-secret")
    assert "sk-the-new-secret" not in sealed
    assert sessions.unseal(mine, sealed) == "sk-the-new-secret"
    # Another edge with the same secrets opens it; another session, a forgery or nothing do not.
    assert ConsoleSessions(TOKEN, "secret").unseal(mine, sealed) == "sk-the-new-secret"
    assert sessions.unseal(theirs, sealed) is None
    assert sessions.unseal(mine, sealed[:-2] + ("AA" if sealed[-2:] != "AA" else "BB")) is None
    assert sessions.unseal(mine, "not base64 é") is None
    assert sessions.unseal(mine, None) is None
