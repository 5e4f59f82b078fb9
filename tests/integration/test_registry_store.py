"""The registry store on a real SQLite file and, where reachable, the local PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text

from services.contracts import registry_pb2
from services.registry.config import GatewayConfig, parse_config
from services.registry.governance import GovernanceStore
from services.registry.sealing import Sealer
from services.registry.store import (
    RegistryStore,
    StoredItem,
    TooManyPendingError,
    UnknownServerError,
    client_name,
    credentials_name,
    refresh_token_name,
)
from services.registry.user_tokens import Grant, UserTokens
from services.settings import ConfigurationError
from tests.integration.conftest import postgres_schema

pytestmark = pytest.mark.anyio


def config(*names: str, separator: str = "_") -> GatewayConfig:
    clients = [
        {
            "name": n,
            "connection_type": "http",
            "connection_string": f"http://{n}/mcp",
            "tools_to_execute": ["*"],
        }
        for n in names
    ]
    return parse_config({"mcp": {"client_configs": clients}, "mcpgw": {"tool_separator": separator}})


async def test_applying_the_same_config_twice_changes_nothing(store: RegistryStore) -> None:
    first, changed = await store.apply_config(config("a", "b"))
    assert changed and first >= 1
    again, changed = await store.apply_config(config("a", "b"))
    assert (again, changed) == (first, False)
    revision, servers = await store.servers()
    assert revision == first
    assert [s.config.name for s in servers] == ["a", "b"]


async def test_servers_removed_from_the_file_leave_the_registry(store: RegistryStore) -> None:
    await store.apply_config(config("a", "b"))
    revision, changed = await store.apply_config(config("b"))
    assert changed
    _, servers = await store.servers()
    assert [s.config.name for s in servers] == ["b"]
    assert (await store.revision()) == revision


async def test_catalog_reports_bump_the_revision_only_when_something_changed(store: RegistryStore) -> None:
    base, _ = await store.apply_config(config("a"))
    items = [
        StoredItem("a", "tool", "echo", '{"name":"echo","inputSchema":{"type":"object"}}'),
        StoredItem("a", "resource", "test://r", '{"uri":"test://r","name":"r"}'),
    ]
    connected, changed = await store.report_catalog("a", "connected", "", items, '{"tools":{}}')
    assert changed and connected == base + 1
    same, changed = await store.report_catalog("a", "connected", "", items, '{"tools":{}}')
    assert (same, changed) == (connected, False)
    state = await store.catalog()
    assert [(i.server, i.kind, i.key) for i in state.items] == [
        ("a", "tool", "echo"),
        ("a", "resource", "test://r"),
    ]
    assert state.servers[0].state == "connected"
    assert state.servers[0].capabilities_json == '{"tools":{}}'
    more, changed = await store.report_catalog("a", "connected", "", items, '{"tools":{},"resources":{}}')
    assert changed and more == connected + 1


async def test_a_disconnected_server_keeps_its_catalog_for_when_it_returns(store: RegistryStore) -> None:
    await store.apply_config(config("a"))
    await store.report_catalog("a", "connected", "", [StoredItem("a", "tool", "echo", '{"name":"echo"}')])
    await store.report_catalog("a", "disconnected", "EOF", [])
    state = await store.catalog()
    assert state.servers[0].state == "disconnected"
    assert state.servers[0].error == "EOF"
    assert [i.key for i in state.items] == ["echo"]


async def test_reports_for_unknown_servers_are_refused(store: RegistryStore) -> None:
    with pytest.raises(UnknownServerError):
        await store.report_catalog("ghost", "connected", "", [])


async def test_removing_a_server_removes_its_tools(store: RegistryStore) -> None:
    await store.apply_config(config("a", "b"))
    await store.report_catalog("a", "connected", "", [StoredItem("a", "tool", "echo", '{"name":"echo"}')])
    await store.apply_config(config("b"))
    assert (await store.catalog()).items == []


async def test_server_configs_are_sealed_at_rest(store: RegistryStore) -> None:
    secret = "Bearer literal-upstream-secret"
    clients = [
        {
            "name": "sealed",
            "connection_type": "http",
            "connection_string": "http://sealed/mcp",
            "headers": {"Authorization": secret},
        }
    ]
    first, _ = await store.apply_config(parse_config({"mcp": {"client_configs": clients}}))
    again, changed = await store.apply_config(parse_config({"mcp": {"client_configs": clients}}))
    assert (again, changed) == (first, False), "sealing anew must not look like a change"
    async with store.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT config_json FROM servers"))).scalar_one()
    assert secret not in stored and stored.startswith("fernet:")
    _, servers = await store.servers()
    assert servers[0].config.headers == {"Authorization": secret}


async def test_a_registry_with_another_key_says_so(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    sealed = await RegistryStore.open(url, Sealer("first key"))
    await sealed.apply_config(config("a"))
    await sealed.close()
    reopened = await RegistryStore.open(url, Sealer("another key"))
    try:
        with pytest.raises(ConfigurationError, match="MCPGW_REGISTRY_KEY"):
            await reopened.servers()
    finally:
        await reopened.close()


def _modes(folder: Path, prefix: str) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.name.startswith(prefix)}


async def test_the_sqlite_file_and_its_journal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    database = tmp_path / "registry.db"
    database.touch(mode=0o644)  # made by an earlier version, or under a loose umask
    database.chmod(0o644)
    store = await RegistryStore.open(f"sqlite+aiosqlite:///{database}")
    try:
        await store.apply_config(config("a"))
        modes = _modes(tmp_path, "registry.db")
        assert "registry.db" in modes and set(modes.values()) == {0o600}, modes
    finally:
        await store.close()


def oauth_config(url: str, *before: str) -> GatewayConfig:
    """A per_user_oauth server at `url`, after plain servers named `before`."""
    client = {
        "name": "notion",
        "connection_type": "http",
        "connection_string": url,
        "tools_to_execute": ["*"],
        "auth_type": "per_user_oauth",
    }
    plain = config(*before).mcp.client_configs
    return parse_config({"mcp": {"client_configs": [*[c.model_dump() for c in plain], client]}})


async def test_a_server_that_moves_or_goes_takes_its_authorizations_with_it(store: RegistryStore) -> None:
    """Tokens issued for one server must never reach another under its name."""
    await store.apply_config(oauth_config("https://mcp.notion.test/mcp"))
    issued = await GovernanceStore(store).create_key(registry_pb2.VirtualKey(name="kim", active=True))
    tokens = UserTokens(store)

    async def authorize() -> None:
        for name in (
            client_name("notion"),
            refresh_token_name("notion"),
            credentials_name("notion", issued.key.id),
        ):
            await store.put_secret(name, "{}")
        await tokens.put("notion", issued.key.id, Grant(refresh_token="kim's"))

    await authorize()
    # Another position or name in the file changes nothing of where it is reached.
    await store.apply_config(oauth_config("https://mcp.notion.test/mcp", "a"))
    assert await tokens.read("notion", issued.key.id) is not None
    assert refresh_token_name("notion") in await store.secrets()
    # Another address: its client, the operator's grant and every identity's are dropped.
    await store.apply_config(oauth_config("https://elsewhere.test/mcp"))
    kept = await store.secrets()
    assert client_name("notion") not in kept and refresh_token_name("notion") not in kept
    assert credentials_name("notion", issued.key.id) in kept
    assert await tokens.read("notion", issued.key.id) is None
    # Through the API as well, and removed, nothing of it is left.
    await authorize()
    (moved,) = oauth_config("https://third.test/mcp").mcp.client_configs
    await store.put_server(moved, create=False)
    assert client_name("notion") not in await store.secrets()
    await authorize()
    await store.remove_server("notion")
    assert not [name for name in await store.secrets() if "notion" in name]


async def test_a_waiting_authorization_is_taken_once_and_not_after_it_expires(
    store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put_pending("state-1", '{"flow": 1}', time.time() + 60)
    await store.put_pending("state-2", '{"flow": 2}', time.time() - 1)
    assert await store.take_pending("state-1") == '{"flow": 1}'
    assert await store.take_pending("state-1") is None
    assert await store.take_pending("state-2") is None
    assert await store.take_pending("never-issued") is None
    # The state itself is never stored, and what waits is sealed.
    async with store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT key, value FROM registry_meta"))).all()
    assert not any("state-" in key or "flow" in value for key, value in rows)
    # Bounded: past the cap a new flow is refused, and expired ones make room.
    monkeypatch.setattr("services.registry.store.MAX_PENDING", 2)
    await store.put_pending("state-3", "{}", time.time() + 60)
    await store.put_pending("state-4", "{}", time.time() + 60)
    with pytest.raises(TooManyPendingError):
        await store.put_pending("state-5", "{}", time.time() + 60)


@pytest.mark.postgres
async def test_registries_starting_together_on_one_database_migrate_one_at_a_time() -> None:
    async with postgres_schema() as (dsn, options):
        opened: list[RegistryStore] = []

        async def start() -> None:
            opened.append(await RegistryStore.open(dsn, Sealer("one-key-for-every-replica"), **options))

        # Without the advisory lock, the second CREATE TABLE of the same name fails.
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(start)
        try:
            async with opened[0].sessions() as session:
                version = await session.scalar(text("SELECT version_num FROM alembic_version"))
            assert version == "0008"
            await opened[1].apply_config(config("a"))
            _, servers = await opened[2].servers()
            assert [s.config.name for s in servers] == ["a"]
        finally:
            for store in opened:
                await store.close()
