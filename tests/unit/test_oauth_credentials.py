"""The edge's access tokens and what a request's credentials mean under each
`mcp_server_auth_mode`, called directly."""

from __future__ import annotations

import time

import pytest
from starlette.requests import Request

from services import virtual_keys
from services.contracts import registry_pb2
from services.edge.errors import InsufficientScopeError, UnauthorizedError
from services.edge.identity.credentials import Credentials, resource_path
from services.edge.identity.tokens import AccessClaims, AccessTokens, InvalidTokenError, looks_like_jwt
from services.edge.policy import Governance, KeyPolicy, Selection

BASE = "http://gw.test:8080"
SECRET = "vk_the-key-of-alice-0123456789"


def governance(
    mode: registry_pb2.AuthMode.ValueType, active: bool = True, require_key: bool = False
) -> Governance:
    key = KeyPolicy(
        "vk-1",
        "alice",
        virtual_keys.digest(SECRET),
        active,
        0,
        Selection({"s": frozenset({"*"})}),
        frozenset(),
    )
    return Governance(
        require_key=require_key, keys={key.secret_hash: key}, by_id={key.id: key}, auth_mode=mode
    )


def request(path: str = "/mcp", authorization: str | None = None, host: str = "gw.test:8080") -> Request:
    headers = [(b"host", host.encode())]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    return Request({"type": "http", "method": "POST", "scheme": "http", "path": path, "headers": headers})


def token(tokens: AccessTokens, resource: str = f"{BASE}/mcp", **changes: object) -> str:
    claims = tokens.claims("vk-1", "grant-1", "client-1", ["mcp"], resource)
    fields = {**{f: getattr(claims, f) for f in AccessClaims.__slots__}, **changes}
    return tokens.issue(BASE, AccessClaims(**fields))


def test_a_token_verifies_only_for_its_issuer_resource_and_secret() -> None:
    tokens = AccessTokens("shared", 600)
    issued = token(tokens)
    assert looks_like_jwt(issued) and not looks_like_jwt(SECRET)
    claims = tokens.verify(issued, BASE, f"{BASE}/mcp")
    assert (claims.key_id, claims.grant_id, claims.client_id, claims.scopes) == (
        "vk-1",
        "grant-1",
        "client-1",
        ("mcp",),
    )
    with pytest.raises(InvalidTokenError, match="not issued for"):
        tokens.verify(issued, BASE, f"{BASE}/mcp/s")
    with pytest.raises(InvalidTokenError, match="not issued by http://elsewhere"):
        tokens.verify(issued, "http://elsewhere", f"{BASE}/mcp")
    with pytest.raises(InvalidTokenError, match="not issued by this gateway"):
        AccessTokens("another secret", 600).verify(issued, BASE, f"{BASE}/mcp")
    with pytest.raises(InvalidTokenError, match="expired"):
        tokens.verify(token(tokens, expires_at=int(time.time()) - 5), BASE, f"{BASE}/mcp")
    # Revocation reads the grant of a token whatever its resource.
    assert tokens.inspect(issued, BASE).grant_id == "grant-1"


def test_tampering_with_a_token_breaks_it() -> None:
    tokens = AccessTokens("shared", 600)
    header, payload, signature = token(tokens).split(".")
    forged = f"{header}.{payload[:-2]}AA.{signature}"
    with pytest.raises(InvalidTokenError):
        tokens.verify(forged, BASE, f"{BASE}/mcp")


def test_headers_mode_reads_keys_only() -> None:
    credentials = Credentials(AccessTokens("shared", 600))
    rules = governance(registry_pb2.AUTH_MODE_HEADERS)
    assert credentials.key_of(rules, request()) is None  # no key needed, none given
    assert credentials.key_of(rules, request(authorization=f"Bearer {SECRET}")).id == "vk-1"  # type: ignore[union-attr]
    with pytest.raises(UnauthorizedError) as refused:
        credentials.key_of(rules, request(authorization=f"Bearer {token(AccessTokens('shared', 600))}"))
    assert "resource_metadata" not in refused.value.headers["www-authenticate"]


@pytest.mark.parametrize("mode", [registry_pb2.AUTH_MODE_BOTH, registry_pb2.AUTH_MODE_OAUTH])
def test_oauth_modes_challenge_a_request_without_credentials(mode: registry_pb2.AuthMode.ValueType) -> None:
    credentials = Credentials(AccessTokens("shared", 600))
    with pytest.raises(UnauthorizedError) as refused:
        credentials.key_of(governance(mode), request("/mcp/s/"))
    challenge = refused.value.headers["www-authenticate"]
    assert (
        challenge
        == f'Bearer resource_metadata="{BASE}/.well-known/oauth-protected-resource/mcp/s", scope="mcp"'
    )


def test_both_mode_takes_keys_and_tokens_and_oauth_mode_tokens_only() -> None:
    tokens = AccessTokens("shared", 600)
    credentials = Credentials(tokens)
    good = f"Bearer {token(tokens)}"
    for mode in (registry_pb2.AUTH_MODE_BOTH, registry_pb2.AUTH_MODE_OAUTH):
        assert credentials.key_of(governance(mode), request(authorization=good)).name == "alice"  # type: ignore[union-attr]
    assert credentials.key_of(
        governance(registry_pb2.AUTH_MODE_BOTH), request(authorization=f"Bearer {SECRET}")
    )
    with pytest.raises(UnauthorizedError, match="OAuth access tokens only") as refused:
        credentials.key_of(
            governance(registry_pb2.AUTH_MODE_OAUTH), request(authorization=f"Bearer {SECRET}")
        )
    assert "resource_metadata=" in refused.value.headers["www-authenticate"]
    # A bad key in `both` mode still points at discovery.
    with pytest.raises(UnauthorizedError, match="not recognised") as refused:
        credentials.key_of(
            governance(registry_pb2.AUTH_MODE_BOTH), request(authorization="Bearer vk_wrong-key-000000")
        )
    assert "resource_metadata=" in refused.value.headers["www-authenticate"]


def test_a_token_is_refused_for_another_resource_host_revoked_grant_or_inactive_key() -> None:
    tokens = AccessTokens("shared", 600)
    good = f"Bearer {token(tokens)}"
    both = governance(registry_pb2.AUTH_MODE_BOTH)
    cases = [
        (Credentials(tokens), both, request("/mcp/s", good), "not issued for"),
        (Credentials(tokens), both, request("/mcp", good, host="other.test:8080"), "not issued by"),
        (
            Credentials(tokens, revoked=lambda grant: grant == "grant-1"),
            both,
            request("/mcp", good),
            "revoked",
        ),
        (
            Credentials(tokens),
            governance(registry_pb2.AUTH_MODE_BOTH, active=False),
            request("/mcp", good),
            "no longer",
        ),
    ]
    for credentials, rules, made, message in cases:
        with pytest.raises(UnauthorizedError, match=message) as refused:
            credentials.key_of(rules, made)
        assert refused.value.status == 401
        assert 'error="invalid_token"' in refused.value.headers["www-authenticate"]


def test_a_configured_public_url_names_the_resource_whatever_the_host() -> None:
    tokens = AccessTokens("shared", 600)
    credentials = Credentials(tokens, public_url=f"{BASE}/")
    behind_a_proxy = request("/mcp", f"Bearer {token(tokens)}", host="10.0.0.7:8080")
    assert credentials.key_of(governance(registry_pb2.AUTH_MODE_BOTH), behind_a_proxy) is not None


def test_a_token_without_the_scope_gets_the_scope_challenge() -> None:
    tokens = AccessTokens("shared", 600)
    narrow = f"Bearer {token(tokens, scopes=())}"
    with pytest.raises(InsufficientScopeError) as refused:
        Credentials(tokens).key_of(governance(registry_pb2.AUTH_MODE_BOTH), request("/mcp", narrow))
    assert refused.value.status == 403
    assert 'error="insufficient_scope"' in refused.value.headers["www-authenticate"]


def test_resource_paths() -> None:
    assert [resource_path(p) for p in ("/mcp", "/mcp/", "/mcp/a/", "/sse", "/message")] == [
        "/mcp",
        "/mcp",
        "/mcp/a",
        "/sse",
        "/sse",
    ]
