"""Access tokens on kept grants, from two registries on one database (SQLite and, where
reachable, PostgreSQL) against an authorization server that rotates refresh tokens and
revokes a person's grant when a spent one comes back: however many connectors ask at once,
a grant is refreshed once, and its refresh token never presented twice."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx2
import pytest

from services.contracts import registry_pb2
from services.registry.access_tokens import AccessTokens, GrantEndedError
from services.registry.config import OAuthConfig, parse_config
from services.registry.governance import GovernanceStore, MissingError
from services.registry.sealing import Sealer
from services.registry.store import RegistryStore
from services.registry.user_tokens import Grant, UserTokens
from tests.integration.conftest import postgres_schema
from tests.integration.test_upstream_auth import SECRET, authorization_server

pytestmark = pytest.mark.anyio

REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    delayed = ("--refresh-delay", "0.3")
    with authorization_server("--rotate-refresh", *delayed, "--token-seconds", "600") as started:
        yield started


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def registries(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[RegistryStore, RegistryStore]]:
    """Two registries' stores on one database, sealing under one key."""
    sealer = Sealer(secrets.token_urlsafe(32))
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
        stores = [await RegistryStore.open(url, sealer) for _ in range(2)]
        yield stores[0], stores[1]
        for store in stores:
            await store.close()
        return
    async with postgres_schema() as (dsn, options):
        stores = [await RegistryStore.open(dsn, sealer, **options) for _ in range(2)]
        try:
            yield stores[0], stores[1]
        finally:
            for store in stores:
                await store.close()


def oauth(origin: str) -> OAuthConfig:
    return OAuthConfig(
        authorize_url=f"{origin}/authorize",
        token_url=f"{origin}/token",
        client_id="gateway",
        client_secret=SECRET,
        grant_type="authorization_code",
    )


async def stats(origin: str) -> dict[str, int]:
    async with httpx2.AsyncClient() as http:
        return (await http.get(f"{origin}/stats")).json()  # type: ignore[no-any-return]


async def authorized(origin: str, user: str) -> dict[str, Any]:
    """What the token endpoint answers for `user`'s consent (authorization code with PKCE)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    query = {
        "response_type": "code",
        "client_id": "gateway",
        "redirect_uri": REDIRECT,
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "user": user,
    }
    async with httpx2.AsyncClient() as http:
        consent = await http.get(f"{origin}/authorize?{urlencode(query)}")
        code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        answer = await http.post(f"{origin}/token", data=form, auth=("gateway", SECRET))
    answer.raise_for_status()
    return answer.json()  # type: ignore[no-any-return]


async def connected(store: RegistryStore, origin: str, user: str) -> str:
    """A per_user_oauth server and a key whose person authorized it, the access token already
    expired (so the next ask refreshes); the key's id."""
    clients = [{"name": "personal", "connection_type": "http", "connection_string": f"{origin}/mcp/",
                "tools_to_execute": ["*"], "auth_type": "per_user_oauth",
                "oauth": oauth(origin).model_dump(exclude_defaults=True)}]  # fmt: skip
    await store.apply_config(parse_config({"mcp": {"client_configs": clients}}))
    issued = await GovernanceStore(store).create_key(registry_pb2.VirtualKey(name=user, active=True))
    grant = Grant.of(await authorized(origin, user))
    assert grant is not None
    await UserTokens(store).put("personal", issued.key.id, replace(grant, expires_at=time.time() - 1))
    return issued.key.id


async def test_many_asks_on_two_registries_refresh_a_grant_once(
    registries: tuple[RegistryStore, RegistryStore], origin: str
) -> None:
    one, two = registries
    key_id = await connected(one, origin, "fay")
    before = await stats(origin)
    tokens = [AccessTokens(UserTokens(one)), AccessTokens(UserTokens(two))]
    handed: list[str] = []

    async def ask(index: int) -> None:
        grant = await tokens[index % 2].issue("personal", oauth(origin), key_id)
        handed.append(grant.access_token)

    async with anyio.create_task_group() as tg:
        for index in range(16):
            tg.start_soon(ask, index)
    after = await stats(origin)
    assert (after["refreshes"] - before["refreshes"], after["reused"] - before["reused"]) == (1, 0)
    assert len(set(handed)) == 1 and len(handed) == 16
    # The next asks get the same token, with no request at all.
    again = await tokens[1].issue("personal", oauth(origin), key_id)
    assert again.access_token == handed[0] and (await stats(origin))["refreshes"] == after["refreshes"]


async def test_a_refused_token_is_renewed_once_however_many_saw_it_refused(
    registries: tuple[RegistryStore, RegistryStore], origin: str
) -> None:
    one, two = registries
    key_id = await connected(one, origin, "gus")
    first = (await AccessTokens(UserTokens(one)).issue("personal", oauth(origin), key_id)).access_token
    before = await stats(origin)
    handed: list[str] = []

    async def refused(store: RegistryStore) -> None:
        handed.append(
            (
                await AccessTokens(UserTokens(store)).issue("personal", oauth(origin), key_id, first)
            ).access_token
        )

    async with anyio.create_task_group() as tg:
        for store in (one, two, one, two):
            tg.start_soon(refused, store)
    assert len(set(handed)) == 1 and first not in handed
    assert (await stats(origin))["refreshes"] - before["refreshes"] == 1


async def test_the_operators_grant_is_renewed_the_same_way_without_a_new_revision(
    registries: tuple[RegistryStore, RegistryStore], origin: str
) -> None:
    one, two = registries
    await connected(one, origin, "operator")
    grant = Grant.of(await authorized(origin, "operator"))
    assert grant is not None
    await one.put_secret("oauth-refresh:personal", replace(grant, expires_at=time.time() - 1).to_json())
    revision = await one.revision()
    async with anyio.create_task_group() as tg:
        for store in (one, two):
            tg.start_soon(AccessTokens(UserTokens(store)).issue, "personal", oauth(origin), "")
    found = await UserTokens(two).read("personal", "")
    assert found is not None and found[0].refresh_token != grant.refresh_token
    assert found[0].refresh_in(time.time()) > 500 and await two.revision() == revision


async def test_a_grant_the_server_refuses_is_dropped(
    registries: tuple[RegistryStore, RegistryStore], origin: str
) -> None:
    one, _ = registries
    key_id = await connected(one, origin, "hal")
    async with httpx2.AsyncClient() as http:
        (await http.post(f"{origin}/revoke-all?user=hal")).raise_for_status()
    with pytest.raises(GrantEndedError, match="revoked or expired"):
        await AccessTokens(UserTokens(one)).issue("personal", oauth(origin), key_id)
    assert await UserTokens(one).read("personal", key_id) is None
    with pytest.raises(MissingError, match="no authorization"):
        await AccessTokens(UserTokens(one)).issue("personal", oauth(origin), key_id)


async def test_a_lease_its_holder_left_behind_lapses(
    registries: tuple[RegistryStore, RegistryStore], origin: str
) -> None:
    """A registry that died mid-refresh: the others wait out its lease, then renew."""
    one, two = registries
    key_id = await connected(one, origin, "ida")
    grants = UserTokens(one)
    found = await grants.read("personal", key_id)
    assert found is not None
    assert (
        await grants.swap("personal", key_id, found[1], replace(found[0], lease_until=time.time() + 1))
        is not None
    )
    started = time.monotonic()
    renewed = await AccessTokens(UserTokens(two)).issue("personal", oauth(origin), key_id)
    assert renewed.access_token != found[0].access_token and renewed.lease_until == 0.0
    assert time.monotonic() - started >= 0.5


async def test_a_write_from_an_older_version_changes_nothing(
    registries: tuple[RegistryStore, RegistryStore], origin: str
) -> None:
    """A disconnect or a reconnect meanwhile wins over a refresh that read the grant before."""
    one, two = registries
    key_id = await connected(one, origin, "jo")
    found = await UserTokens(one).read("personal", key_id)
    assert found is not None
    newer = Grant(refresh_token="reconnected")
    await UserTokens(two).put("personal", key_id, newer)
    assert await UserTokens(one).swap("personal", key_id, found[1], found[0]) is None
    kept = await UserTokens(one).read("personal", key_id)
    assert kept is not None and kept[0] == newer
    await UserTokens(two).delete("personal", key_id)
    assert await UserTokens(one).swap("personal", key_id, kept[1], None) is None
