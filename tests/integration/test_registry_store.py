"""The registry store on a real SQLite file and, where reachable, the local PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from services.registry.config import GatewayConfig, parse_config
from services.registry.sealing import Sealer
from services.registry.store import RegistryStore, StoredItem, UnknownServerError
from services.settings import ConfigurationError

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
