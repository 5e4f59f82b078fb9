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
from tests.processes import (
    NODE,
    NODE_DIR,
    ROOT,
    mcpgw_up,
    port_open,
    python_script,
    running,
    stdio_server,
    wait_until,
)

FIXTURE = ROOT / "tests" / "servers" / "conformance_server.py"
EVERYTHING = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
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


# The gateway of the agent-facing tests (Code Mode, the execution API): a Python server over
# stdio and server-everything (the TypeScript SDK) over Streamable HTTP, a key in code mode
# and a classic one, and tight sandbox limits.
AGENT_ADMIN = "admin-token-for-agent-tests"
CODER = "sk-code-mode-key-0123456789abcdef"
CLASSIC = "sk-classic-key-00-0123456789abcdef"
CAREFUL = "sk-careful-key-00-0123456789abcdef"
SEARCHER = "sk-searcher-key-0123456789abcdef"
# echo runs at once; sleep waits for a person's approval.
CAREFUL_VIEW = [
    {"mcp_client_name": "fixture", "tools_to_execute": ["echo", "sleep"], "tools_to_auto_execute": ["echo"]}
]
VIEW = [
    {"mcp_client_name": "fixture", "tools_to_execute": ["echo", "fail", "sleep", "hold"]},
    {"mcp_client_name": "everything", "tools_to_execute": ["echo", "get-sum", "get-structured-content"]},
]
LIMITS = {
    "MCPGW_CODE_MODE_WALL_SECONDS": "8",
    "MCPGW_CODE_MODE_CPU_SECONDS": "1",
    "MCPGW_CODE_MODE_MEMORY_BYTES": str(16 * 1024 * 1024),
    "MCPGW_CODE_MODE_RECURSION_DEPTH": "100",
    "MCPGW_CODE_MODE_TOOL_CALLS": "10",
    "MCPGW_CODE_MODE_RESULT_BYTES": str(64 * 1024),
    "MCPGW_APPROVAL_TIMEOUT_SECONDS": "6",
}


@pytest.fixture(scope="session")
def everything_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("everything-code-mode")
    port = free_port()
    argv = ["env", "-i", f"PORT={port}", str(NODE), str(EVERYTHING), "streamableHttp"]
    with running(argv, log=tmp / "everything.log") as process:
        wait_until(lambda: port_open(port), 15, "server-everything", process)
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="session")
def agent_gateway(everything_http: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("code-mode-gateway")
    servers = [
        stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py"),
        {
            "name": "everything",
            "connection_type": "http",
            "connection_string": everything_http,
            "tools_to_execute": ["*"],
        },
    ]
    keys = [
        {"id": "vk-coder", "name": "coder", "value": CODER, "mcp_configs": VIEW, "tool_mode": "code"},
        {"id": "vk-classic", "name": "classic", "value": CLASSIC, "mcp_configs": VIEW},
        {"id": "vk-careful", "name": "careful", "value": CAREFUL, "mcp_configs": CAREFUL_VIEW},
        {
            "id": "vk-searcher",
            "name": "searcher",
            "value": SEARCHER,
            "mcp_configs": VIEW,
            "tool_mode": "search",
        },
    ]
    env = {"MCPGW_ADMIN_TOKEN": AGENT_ADMIN, **LIMITS}
    config = {"governance": {"virtual_keys": keys}}
    with mcpgw_up(tmp, servers, "mcpgw up for Code Mode", env, config) as base:
        yield base
