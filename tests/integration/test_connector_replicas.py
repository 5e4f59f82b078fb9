"""What connector replicas report lives in the store, so registry replicas agree on it: a
server is connected while a replica heard from within the lost interval holds it, one that
only dead replicas held is disconnected, and a replica back from silence reports again.
Servicers over one real store (SQLite and PostgreSQL), on a clock the test moves; then the
whole tree with a connector killed."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from services.contracts import registry_pb2
from services.registry.config import parse_config
from services.registry.servicer import RegistryServicer
from services.registry.store import RegistryStore, StoredItem
from tests.processes import ROOT, service_tree, stdio_server, tree_processes, wait_until

LOST = 6.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Bus:
    """The servicer's NATS, down: announcements are skipped (edges would poll)."""

    is_connected = False


def report(server: str, connector: str, state: str) -> registry_pb2.ReportCatalogRequest:
    return registry_pb2.ReportCatalogRequest(
        server=server,
        connector_id=connector,
        state=state,
        tools_json=[b'{"name": "echo"}'] if state == "connected" else [],
        capabilities_json=b"{}",
    )


async def state_of(store: RegistryStore, name: str) -> str:
    _, servers = await store.servers()
    return next(s.state for s in servers if s.config.name == name)


async def beat(registry: RegistryServicer, connector: str) -> registry_pb2.ReportAliveReply:
    """One heartbeat of `connector` to `registry`."""
    return await registry.ReportAlive(registry_pb2.ReportAliveRequest(connector_id=connector), CONTEXT)


async def started(store: RegistryStore, clock: Clock) -> tuple[RegistryServicer, RegistryServicer]:
    clients = [
        {
            "name": "a",
            "connection_type": "http",
            "connection_string": "http://a/mcp",
            "tools_to_execute": ["*"],
        }
    ]
    await store.apply_config(parse_config({"mcp": {"client_configs": clients}}))
    # Two registry replicas over one store; each connector replica talks to one of them.
    one = RegistryServicer(store, Bus(), LOST, clock)  # type: ignore[arg-type]
    two = RegistryServicer(store, Bus(), LOST, clock)  # type: ignore[arg-type]
    return one, two


pytestmark = pytest.mark.anyio
CONTEXT: Any = None


async def test_a_server_stays_connected_while_any_live_replica_holds_it(store: RegistryStore) -> None:
    clock = Clock()
    one, two = await started(store, clock)
    await one.ReportCatalog(report("a", "c1", "connected"), CONTEXT)
    await two.ReportCatalog(report("a", "c2", "connected"), CONTEXT)
    # c2 loses it, reporting to the other registry: c1 still serves it.
    await two.ReportCatalog(report("a", "c2", "disconnected"), CONTEXT)
    assert await state_of(store, "a") == "connected"
    await one.ReportCatalog(report("a", "c1", "disconnected"), CONTEXT)
    assert await state_of(store, "a") == "disconnected"


async def test_a_server_only_a_silent_replica_held_is_disconnected_by_any_registry(
    store: RegistryStore,
) -> None:
    clock = Clock()
    one, two = await started(store, clock)
    await one.ReportCatalog(report("a", "c1", "connected"), CONTEXT)
    await two.ReportCatalog(report("a", "c2", "connected"), CONTEXT)
    # Both heartbeat once: replicas that do are judged by their silence.
    await beat(one, "c1")
    await beat(two, "c2")
    clock.now += LOST  # past the registries' first lost interval
    for _ in range(3):
        clock.now += LOST / 2
        await beat(one, "c1")
        assert await two.sweep() == [] and await state_of(store, "a") == "connected"
    # c1 dies without a word: c2 was silent all along, so nobody holds it within the interval.
    clock.now += LOST + 0.1
    assert await two.sweep() == ["a"]
    assert await state_of(store, "a") == "disconnected"
    _, servers = await store.servers()
    assert "heard from" in servers[0].error
    # Its catalog is kept for when it returns; c1 back is told to report again, and does.
    reply = await beat(one, "c1")
    assert reply.report_again
    await one.ReportCatalog(report("a", "c1", "connected"), CONTEXT)
    assert await state_of(store, "a") == "connected"
    again = await beat(one, "c1")
    assert not again.report_again


async def test_a_sweep_settles_only_the_servers_whose_state_is_out_of_date(
    store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    clients = [
        {"name": f"s{i}", "connection_type": "http", "connection_string": f"http://s{i}/mcp"}
        for i in range(20)
    ]
    await store.apply_config(parse_config({"mcp": {"client_configs": clients}}))
    registry = RegistryServicer(store, Bus(), LOST, clock)  # type: ignore[arg-type]
    for i in range(20):
        await registry.ReportCatalog(report(f"s{i}", "c1" if i < 19 else "c2", "connected"), CONTEXT)
    await beat(registry, "c1")
    await beat(registry, "c2")
    settled: list[str] = []
    settle = store.settle

    async def counted(server: str, alive_since: float, lost_error: str) -> tuple[int, bool]:
        settled.append(server)
        return await settle(server, alive_since, lost_error)

    monkeypatch.setattr(store, "settle", counted)
    clock.now += LOST + 1
    await beat(registry, "c1")
    await beat(registry, "c2")
    # Every server as its replicas say: nothing is locked, whatever the number of servers.
    assert await registry.sweep() == [] and settled == []
    # c2 goes silent: its one server is settled, the 19 others are not touched.
    clock.now += LOST / 2
    await beat(registry, "c1")
    clock.now += LOST / 2 + 0.1
    assert await registry.sweep() == ["s19"] and settled == ["s19"]
    assert await state_of(store, "s19") == "disconnected" and await state_of(store, "s0") == "connected"


async def test_a_registry_just_started_gives_connectors_a_lost_interval(store: RegistryStore) -> None:
    clock = Clock()
    one, _ = await started(store, clock)
    await one.ReportCatalog(report("a", "c1", "connected"), CONTEXT)
    clock.now += LOST + 1
    # A registry started now must not disconnect what connectors alive through its restart hold.
    restarted = RegistryServicer(store, Bus(), LOST, clock)  # type: ignore[arg-type]
    assert await restarted.sweep() == []
    assert await state_of(store, "a") == "connected"


async def test_long_silent_replicas_are_forgotten(store: RegistryStore) -> None:
    clock = Clock()
    one, _ = await started(store, clock)
    await one.ReportCatalog(report("a", "c1", "connected"), CONTEXT)
    await beat(one, "c1")
    clock.now += 1000 * LOST
    await one.sweep()
    assert await store.connections(0.0) == {}
    await store.report_catalog("a", "connected", "", [StoredItem("a", "tool", "echo", '{"name":"echo"}')])


async def test_a_server_disconnected_while_its_replica_was_silent_returns_when_it_speaks(
    store: RegistryStore,
) -> None:
    clock = Clock()
    one, _ = await started(store, clock)
    await one.ReportCatalog(report("a", "c1", "connected"), CONTEXT)
    await beat(one, "c1")
    clock.now += 3 * LOST
    assert await one.sweep() == ["a"] and await state_of(store, "a") == "disconnected"
    # It speaks again (a heartbeat, not a report of "a"): it still holds "a", and the next
    # sweep takes its word for it, the catalog kept.
    await beat(one, "c1")
    assert await one.sweep() == ["a"] and await state_of(store, "a") == "connected"
    assert [i.key for i in (await store.catalog()).items] == ["echo"]


async def test_a_replica_that_never_heartbeats_is_not_judged_by_its_silence(store: RegistryStore) -> None:
    clock = Clock()
    one, _ = await started(store, clock)
    # A connector from before heartbeats reports, and then says nothing for a long while.
    await one.ReportCatalog(report("a", "old", "connected"), CONTEXT)
    clock.now += 10 * LOST
    assert await one.sweep() == [] and await state_of(store, "a") == "connected"


async def test_reports_racing_across_registries_settle_on_the_live_holder(store: RegistryStore) -> None:
    clock = Clock()
    one, two = await started(store, clock)
    await one.ReportCatalog(report("a", "c1", "connected"), CONTEXT)
    await beat(one, "c1")
    await beat(two, "c2")
    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(two.ReportCatalog, report("a", "c2", "disconnected"), CONTEXT)
            group.start_soon(one.ReportCatalog, report("a", "c1", "connected"), CONTEXT)
            group.start_soon(one.sweep)
    assert await state_of(store, "a") == "connected"


def test_a_killed_connector_stops_counting_and_the_other_keeps_the_server(tmp_path: Path) -> None:
    fixture = stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py")
    lost = 2.0
    env = {"MCPGW_CONNECTOR_LOST_SECONDS": str(lost), "MCPGW_HEARTBEAT_SECONDS": "0.5"}
    with service_tree(tmp_path, [fixture], connectors=2, env=env) as (base,):

        def servers() -> set[str]:
            return set(httpx2.get(f"{base}/readyz", timeout=2).json().get("servers", []))

        def silent_for(connector_id: str) -> float:
            with sqlite3.connect(tmp_path / "registry.db") as db:
                row = db.execute(
                    "SELECT alive_unix FROM connectors WHERE connector_id = ?", (connector_id,)
                ).fetchone()
            return time.time() - float(row[0])

        first, second = tree_processes(tmp_path, "connector")
        first_id = first.environ()["MCPGW_CONNECTOR_ID"]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # Once the registry has counted it lost (and swept after), the other still holds it.
        wait_until(lambda: silent_for(first_id) > 2 * lost, 15, f"{first_id} silent past two sweeps")
        assert "fixture" in servers()
        second.send_signal(signal.SIGKILL)
        second.wait(10)
        wait_until(lambda: "fixture" not in servers(), 2 * lost + 5, "the server gone with both replicas")
