"""The gateway the end-to-end client and conformance tests share: `mcpgw up` in front of
the conformance fixture server, over stdio as `conf` and over Streamable HTTP as `confhttp`,
and of its TypeScript SDK twin (resumable: priming events, requests on the GET stream) as
`confts`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from services.up.main import free_port
from tests.processes import NODE, NODE_DIR, ROOT, mcpgw_up, port_open, python_script, running, wait_until

FIXTURE = ROOT / "tests" / "servers" / "conformance_server.py"
TS_FIXTURE = NODE_DIR / "conformance-server.mjs"


@pytest.fixture(scope="session")
def fixture_url() -> Iterator[str]:
    port = free_port()
    with running(python_script(FIXTURE, "--http", str(port))) as process:
        wait_until(lambda: port_open(port), 15, "conformance fixture", process)
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="session")
def ts_fixture_url() -> Iterator[str]:
    port = free_port()
    with running([str(NODE), str(TS_FIXTURE), "--port", str(port)]) as process:
        wait_until(lambda: port_open(port), 15, "TypeScript conformance fixture", process)
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="session")
def conformance_gateway(
    fixture_url: str, ts_fixture_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("conformance")
    servers: list[dict[str, Any]] = [
        {
            "name": "conf",
            "connection_type": "stdio",
            "stdio_config": {"command": sys.executable, "args": [str(FIXTURE)]},
            "tools_to_execute": ["*"],
        },
        {
            "name": "confhttp",
            "connection_type": "http",
            "connection_string": fixture_url,
            "tools_to_execute": ["*"],
        },
        {
            "name": "confts",
            "connection_type": "http",
            "connection_string": ts_fixture_url,
            "tools_to_execute": ["*"],
        },
    ]
    with mcpgw_up(tmp, servers, "mcpgw up with every fixture") as base:
        yield f"{base}/mcp"
