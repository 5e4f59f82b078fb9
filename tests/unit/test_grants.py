"""What an authorization leaves for registry to keep: a refresh token, or from a server
that issues none the access token and its expiry; and tokens kept before, as they were."""

from __future__ import annotations

import time

from services.registry.user_tokens import Grant


def test_a_refresh_token_is_kept_alone() -> None:
    before = int(time.time())
    grant = Grant.of({"access_token": "a", "refresh_token": "r", "expires_in": 60})
    assert grant is not None and (grant.refresh_token, grant.access_token) == ("r", "")
    assert before <= grant.authorized_at <= time.time()
    assert Grant.from_json(grant.to_json()) == grant


def test_without_a_refresh_token_the_access_token_is_kept_with_its_expiry() -> None:
    before = time.time()
    grant = Grant.of({"access_token": "a", "expires_in": 60})
    assert grant is not None and grant.access_token == "a" and not grant.refresh_token
    assert before + 60 <= grant.expires_at <= time.time() + 60
    assert Grant.from_json(grant.to_json()) == grant
    # No expires_in: a token that does not expire.
    forever = Grant.of({"access_token": "a"})
    assert forever is not None and forever.expires_at == 0.0


def test_an_answer_without_a_token_is_no_grant() -> None:
    assert Grant.of({"token_type": "bearer"}) is None
    assert Grant.of({"access_token": "", "refresh_token": 7}) is None


def test_a_bare_refresh_token_kept_before_reads_as_one() -> None:
    assert Grant.from_json("opaque-refresh-token") == Grant(refresh_token="opaque-refresh-token")
