"""The gateway every integration module talks to: the real process tree, started once."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx2
import pytest

from services.up.main import free_port
from tests.processes import ROOT, http_ok, nats_server, running, service, wait_until

FIXTURE = ROOT / "tests" / "servers" / "fixture_server.py"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="session")
def gateway_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="session")
def gateway(gateway_dir: Path) -> Iterator[str]:
    tmp = gateway_dir
    config = {
        "mcp": {
            "client_configs": [
                {
                    "name": "fixture",
                    "connection_type": "stdio",
                    "stdio_config": {"command": sys.executable, "args": [str(FIXTURE)]},
                    "tools_to_execute": ["*"],
                }
            ]
        }
    }
    (tmp / "config.json").write_text(json.dumps(config))
    registry, connector, edge = (f"127.0.0.1:{free_port()}" for _ in range(3))
    port = edge.split(":")[1]
    with ExitStack() as stack:
        nats_url = stack.enter_context(nats_server(tmp))
        env = {
            "MCPGW_NATS_URL": nats_url,
            "MCPGW_REGISTRY_ADDR": registry,
            "MCPGW_REGISTRY_LISTEN": registry,
            "MCPGW_CONNECTOR_ADDR": connector,
            "MCPGW_CONNECTOR_LISTEN": connector,
            "MCPGW_STATE_DIR": str(tmp),
            "MCPGW_AUDIT_FILE": str(tmp / "spans.jsonl"),
            "MCPGW_MAX_BODY_BYTES": str(MAX_BODY),
            "MCPGW_SESSION_SECRET": "test-secret",
        }
        log = tmp / "services.log"
        stack.enter_context(running(service("registry", "--config", str(tmp / "config.json")), env, log))
        stack.enter_context(running(service("connector"), env, log))
        stack.enter_context(running(service("audit"), env, log))
        edge_process = stack.enter_context(running(service("edge", "--port", port), env, log))
        base = f"http://127.0.0.1:{port}"

        def has_tools() -> bool:
            return http_ok(f"{base}/readyz") and httpx2.get(f"{base}/readyz").json()["tools"] >= 5

        wait_until(has_tools, 30, "gateway with the fixture's tools", edge_process)
        yield f"{base}/mcp"
