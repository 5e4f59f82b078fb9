"""Governance in the registry store, on a real SQLite file and the local PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from sqlalchemy import text

from services import virtual_keys
from services.contracts import registry_pb2
from services.registry.catalog import build_snapshot
from services.registry.config import GatewayConfig, parse_config
from services.registry.governance import ConflictError, GovernanceStore, InvalidFieldError, MissingError
from services.registry.store import RegistryStore, StoredItem
from tests.integration.test_registry_store import config

pytestmark = pytest.mark.anyio


def selection(server: str, *tools: str) -> registry_pb2.ToolSelection:
    return registry_pb2.ToolSelection(mcp_client_name=server, tools_to_execute=tools)


async def with_servers(store: RegistryStore, *names: str) -> GovernanceStore:
    await store.apply_config(config(*names))
    return GovernanceStore(store)


async def test_a_key_is_stored_hashed_and_its_policy_kept_across_rotation(store: RegistryStore) -> None:
    governance = await with_servers(store, "a", "b")
    before = await store.revision()
    issued = await governance.create_key(
        registry_pb2.VirtualKey(name="team", active=True, mcp_configs=[selection("a", "x", "y")])
    )
    assert issued.secret.startswith("vk_") and await store.revision() == before + 1
    assert issued.key.secret_hash == "" and issued.key.secret_prefix == issued.secret[:8]
    async with store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT secret_hash FROM virtual_keys"))).all()
    assert rows == [(virtual_keys.digest(issued.secret),)]
    rotated = await governance.rotate_key(issued.key.id)
    assert rotated.secret != issued.secret
    [stored] = await governance.keys(with_hash=True)
    assert stored.secret_hash == virtual_keys.digest(rotated.secret)
    assert list(stored.mcp_configs) == [selection("a", "x", "y")]


async def test_bad_keys_and_groups_are_refused_naming_the_field(store: RegistryStore) -> None:
    governance = await with_servers(store, "a")
    with pytest.raises(InvalidFieldError) as unknown:
        await governance.create_key(registry_pb2.VirtualKey(name="k", mcp_configs=[selection("zzz", "*")]))
    assert unknown.value.field == "mcp_configs[0].mcp_client_name"
    with pytest.raises(InvalidFieldError) as pattern:
        await governance.create_key(registry_pb2.VirtualKey(name="k", mcp_configs=[selection("a", "x*")]))
    assert pattern.value.field == "mcp_configs[0].tools_to_execute[0]"
    with pytest.raises(InvalidFieldError, match="groups"):
        await governance.create_key(registry_pb2.VirtualKey(name="k", groups=["none"]))
    await governance.create_key(registry_pb2.VirtualKey(name="k"))
    with pytest.raises(ConflictError):
        await governance.create_key(registry_pb2.VirtualKey(name="k"))
    with pytest.raises(ConflictError):
        await governance.put_group(registry_pb2.ToolGroup(name="a"), create=True)
    with pytest.raises(MissingError):
        await governance.put_group(registry_pb2.ToolGroup(name="g"), create=False)
    with pytest.raises(InvalidFieldError):
        await governance.set_blocklist(["a_*x"])
    with pytest.raises(MissingError):
        await governance.delete_key("vk-none")


async def test_deleting_a_group_detaches_it_from_keys(store: RegistryStore) -> None:
    governance = await with_servers(store, "a")
    await governance.put_group(registry_pb2.ToolGroup(name="g", tools=[selection("a", "*")]), create=True)
    issued = await governance.create_key(registry_pb2.VirtualKey(name="k", groups=["g"]))
    assert list((await governance.keys())[0].groups) == ["g"]
    await governance.delete_group("g")
    assert list((await governance.keys())[0].groups) == []
    assert issued.key.id == (await governance.keys())[0].id


async def test_the_snapshot_carries_governance_and_leaves_out_tools_switched_off(
    store: RegistryStore,
) -> None:
    governance = await with_servers(store, "a")
    tools = [StoredItem("a", "tool", name, f'{{"name":"{name}"}}') for name in ("x", "y")]
    await store.report_catalog("a", "connected", "", tools)
    await governance.set_tool_enabled("a", "y", False)
    await governance.set_blocklist(["a_x", "b_*", "a_x"])
    await governance.set_settings(registry_pb2.GovernanceSettings(require_key=True))
    snapshot = build_snapshot(
        await store.catalog(), await governance.governance(), await governance.disabled_tools()
    )
    assert [t.exposed_name for t in snapshot.tools] == ["a_x"]
    assert list(snapshot.governance.blocklist) == ["a_x", "b_*"] and snapshot.governance.settings.require_key
    revision = await store.revision()
    assert await governance.set_tool_enabled("a", "y", False) == revision, "no change, no new revision"


async def test_file_keys_follow_the_config(store: RegistryStore) -> None:
    def with_keys(*keys: Mapping[str, object]) -> GatewayConfig:
        return parse_config(
            {
                "mcp": {
                    "client_configs": [
                        {"name": "a", "connection_type": "http", "connection_string": "http://a"}
                    ]
                },
                "governance": {"virtual_keys": list(keys)},
                "client": {"enforce_governance_header": True},
            }
        )

    governance = GovernanceStore(store)
    first = {
        "id": "f1",
        "name": "one",
        "value": "sk-bf-aaaaaaaaaaaaaaaa",
        "mcp_configs": [{"mcp_client_name": "a"}],
    }
    await store.apply_config(with_keys(first))
    await governance.apply_config(with_keys(first))
    revision = await store.revision()
    await governance.apply_config(with_keys(first))
    assert await store.revision() == revision, "an unchanged file changes nothing"
    [key] = await governance.keys(with_hash=True)
    assert (key.id, key.secret_hash) == ("f1", virtual_keys.digest("sk-bf-aaaaaaaaaaaaaaaa"))
    assert (await governance.settings()).require_key
    await governance.apply_config(with_keys({**first, "value": "sk-bf-bbbbbbbbbbbbbbbb"}))
    assert (await governance.keys(with_hash=True))[0].secret_hash == virtual_keys.digest(
        "sk-bf-bbbbbbbbbbbbbbbb"
    )
    await governance.apply_config(with_keys())
    assert await governance.keys() == []


async def test_a_person_names_at_most_one_key_and_identities_are_well_formed(store: RegistryStore) -> None:
    governance = await with_servers(store, "a")
    ada = await governance.create_key(
        registry_pb2.VirtualKey(name="ada", active=True, identities=["Ada@Example.com", "*@example.org"])
    )
    assert list(ada.key.identities) == ["*@example.org", "ada@example.com"]
    with pytest.raises(ConflictError, match=re.escape("'ada@example.com' belongs to the key 'ada'")):
        await governance.create_key(
            registry_pb2.VirtualKey(name="eve", active=True, identities=["ADA@example.com"])
        )
    for bad in ("", "a b@example.com", "*@", "ada*@example.com", "*@*.example.com"):
        with pytest.raises(InvalidFieldError) as refused:
            await governance.create_key(registry_pb2.VirtualKey(name="bad", active=True, identities=[bad]))
        assert refused.value.field == "identities[0]", bad
    # A key keeps its own identities when it is updated.
    ada.key.description = "changed"
    updated = await governance.update_key(ada.key)
    assert list(updated.identities) == ["*@example.org", "ada@example.com"]
    [snapshot_key] = (await governance.governance()).keys
    assert list(snapshot_key.identities) == ["*@example.org", "ada@example.com"]
