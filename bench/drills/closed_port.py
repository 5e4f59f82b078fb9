"""A downstream on a port nobody listens on: how often it is tried, what registry publishes for
it, and what trying costs the connector and registry."""

from __future__ import annotations

import asyncio

from bench.drills.gateway import Gateway
from bench.drills.report import Row
from bench.targets import port_open
from services.up.main import free_port

SERVER = "closedport"
LABEL = "downstream on a closed port"


def _cpu(gw: Gateway) -> dict[str, float]:
    processes = gw.processes()
    return {name: sum(processes[name].cpu_times()[:2]) for name in ("connector", "registry")}


async def closed_port_drill(gw: Gateway, window: float, heal_seconds: float) -> Row:
    """Add a server on a free port through the admin API, leave it `window` seconds, remove it."""
    row = Row(LABEL)
    await gw.wait_healthy(heal_seconds)
    port = free_port()
    config = {
        "name": SERVER,
        "connection_type": "http",
        "connection_string": f"http://127.0.0.1:{port}/mcp",
        "tools_to_execute": ["*"],
    }
    before = await gw.readyz()
    cpu_before = _cpu(gw)
    status, body = await gw.api("POST", "/api/servers", config)
    if status != 201:
        raise RuntimeError(f"POST /api/servers: HTTP {status} {body}")
    try:
        # The measurement window itself: the connector's backoff runs on its own meanwhile.
        await asyncio.sleep(window)
        cpu_after = _cpu(gw)
        after = await gw.readyz()
        status, servers = await gw.api("GET", "/api/servers")
        if status != 200:
            raise RuntimeError(f"GET /api/servers: HTTP {status} {servers}")
    finally:
        await gw.api("DELETE", f"/api/servers/{SERVER}")
    [state] = [s for s in servers if s["config"].get("name") == SERVER]
    if port_open(port):
        row.notes.append(f"port {port} was taken by another program during the window")
    revisions = (after or {}).get("revision", 0) - (before or {}).get("revision", 0)
    cpu = ", ".join(f"{name} {cpu_after[name] - cpu_before[name]:.2f} s" for name in cpu_after)
    row.measured = (
        f"{window:.0f} s: {state['attempts']} connection attempts (state {state['state']}); "
        f"{revisions} registry revisions (the add included); CPU {cpu}"
    )
    row.notes.append(f"last error: {state['error'][:200]}")
    return row
