"""Two registries over one PostgreSQL database, as deploy/ scales them: they start together
(migrating and applying the config one at a time), serve the same snapshot, count the same
connector replicas, and when one is killed the other carries on: calls, admin writes, and
the connection state the dead one had been told."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.integration.conftest import PG_DSN_VARIABLE
from tests.integration.test_gateway_http import call, initialize
from tests.processes import ROOT, service_tree, stdio_server, tree_processes, wait_until

pytestmark = pytest.mark.postgres
ADMIN = "admin-token-for-registry-replicas"
FIXTURE = ROOT / "tests" / "servers" / "fixture_server.py"


@contextmanager
def database() -> Iterator[str]:
    """A PostgreSQL database of its own beside MCPGW_TEST_PG_DSN's, dropped after; its URL."""
    dsn = os.environ.get(PG_DSN_VARIABLE)
    if not dsn:
        pytest.skip(f"{PG_DSN_VARIABLE} is not set")
    name = f"mcpgw_replicas_{uuid.uuid4().hex[:10]}"

    async def run(statement: str) -> None:
        engine = create_async_engine(dsn, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(statement))
        finally:
            await engine.dispose()

    anyio.run(run, f'CREATE DATABASE "{name}"')
    try:
        yield dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        anyio.run(run, f'DROP DATABASE "{name}" WITH (FORCE)')


def api(base: str, method: str, path: str, body: Any = None) -> httpx2.Response:
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx2.request(method, f"{base}/api{path}", json=body, headers=headers, timeout=15)


def test_two_registries_share_one_database_and_one_survives_the_other(tmp_path: Path) -> None:
    with database() as url:
        env = {
            "MCPGW_DB": url,
            "MCPGW_REGISTRY_KEY": "one-key-for-every-registry-replica",
            "MCPGW_ADMIN_TOKEN": ADMIN,
            "MCPGW_CONNECTOR_LOST_SECONDS": "2",
            "MCPGW_HEARTBEAT_SECONDS": "0.5",
        }
        servers = [stdio_server("fixture", FIXTURE)]
        with service_tree(tmp_path, servers, edges=2, connectors=2, registries=2, env=env) as (one, two):
            session = initialize(f"{one}/mcp")
            assert (
                call(f"{one}/mcp", session, "fixture_echo", {"text": "a"})["result"]["content"][0]["text"]
                == "a"
            )
            registries = tree_processes(tmp_path, "registry")
            assert len(registries) == 2
            registries[0].send_signal(signal.SIGKILL)
            registries[0].wait(10)
            # Calls never needed the registry; writes go to the one left, and both edges follow.
            assert (
                call(f"{two}/mcp", session, "fixture_echo", {"text": "b"}, id=2)["result"]["content"][0][
                    "text"
                ]
                == "b"
            )
            created = api(
                two,
                "POST",
                "/keys",
                {
                    "name": "after",
                    "mcp_configs": [{"mcp_client_name": "fixture", "tools_to_execute": ["echo"]}],
                },
            )
            assert created.status_code == 201, created.text
            value = created.json()["secret"]

            def works_on_one() -> bool:
                reply = httpx2.post(
                    f"{one}/mcp",
                    json={
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "initialize",
                        "params": {
                            "protocolVersion": "2025-06-18",
                            "capabilities": {},
                            "clientInfo": {"name": "t", "version": "1"},
                        },
                    },
                    headers={"x-api-key": value, "accept": "application/json, text/event-stream"},
                    timeout=5,
                )
                return reply.status_code == 200

            wait_until(works_on_one, 10, "the key made through the surviving registry on the other edge")
            # What connectors reported to the dead one is in the store: the server stays
            # connected through the survivor's sweeps, with a connector killed too.
            connectors = tree_processes(tmp_path, "connector")
            connectors[0].send_signal(signal.SIGKILL)
            connectors[0].wait(10)
            states = {s["config"]["name"]: s["state"] for s in api(two, "GET", "/servers").json()}
            assert states == {"fixture": "connected"}
            answer = call(f"{one}/mcp", session, "fixture_echo", {"text": "c"}, id=3)
            assert answer["result"]["content"][0]["text"] == "c"
