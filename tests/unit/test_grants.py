"""What an authorization leaves for registry to keep: a refresh token (from a server that
issues one) and the latest access token with its expiry; how long that token may be handed
out; and tokens kept before, as they were."""

from __future__ import annotations

import time

from services.registry.user_tokens import YEAR_SECONDS, Grant


def test_the_refresh_token_is_kept_with_the_access_token() -> None:
    before = int(time.time())
    grant = Grant.of({"access_token": "a", "refresh_token": "r", "expires_in": 60})
    assert grant is not None and (grant.refresh_token, grant.access_token, grant.lifetime) == ("r", "a", 60)
    assert before <= grant.authorized_at <= time.time()
    assert Grant.from_json(grant.to_json()) == grant


def test_a_renewal_keeps_the_refresh_token_unless_it_rotated() -> None:
    grant = Grant(refresh_token="r1", access_token="a1", expires_at=1.0, authorized_at=7, lease_until=9.0)
    kept = grant.renewed({"access_token": "a2", "expires_in": 100}, now=1000.0)
    assert kept == Grant("r1", "a2", 1100.0, 7, 100.0)
    rotated = grant.renewed({"access_token": "a3", "refresh_token": "r2", "expires_in": 100}, now=1000.0)
    assert rotated is not None and (rotated.refresh_token, rotated.lease_until) == ("r2", 0.0)


def test_a_renewable_token_is_handed_out_until_a_margin_before_it_expires() -> None:
    # A tenth of a short lifetime, 30 s of a long one; nothing once refused or expired.
    short = Grant(refresh_token="r", access_token="a", expires_at=1100.0, lifetime=100.0)
    assert short.refresh_in(1000.0) == 90.0
    assert short.refresh_in(1095.0) == 0.0
    assert short.refresh_in(1000.0, stale="a") == 0.0
    long = Grant(refresh_token="r", access_token="a", expires_at=4600.0, lifetime=3600.0)
    assert long.refresh_in(1000.0) == 3570.0
    # No renewal possible: to the very end; no expiry: for as long as a year.
    last = Grant(access_token="a", expires_at=1100.0, lifetime=100.0)
    assert last.refresh_in(1099.0) == 1.0 and last.refresh_in(1101.0) == 0.0
    assert Grant(access_token="a").refresh_in(1000.0) == YEAR_SECONDS
    assert Grant(refresh_token="r").refresh_in(1000.0) == 0.0


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
