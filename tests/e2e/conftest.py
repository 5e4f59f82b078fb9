"""The gateway the end-to-end client and conformance tests share: `mcpgw up` in front of
the conformance fixture server, over stdio as `conf` and over Streamable HTTP as `confhttp`,
and of its TypeScript SDK twin (resumable: priming events, requests on the GET stream) as
`confts`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx2
import psutil
import pytest

from services.up.main import free_port
from tests.processes import NODE, NODE_DIR, ROOT, port_open, python_script, running, stop, wait_until

FIXTURE = ROOT / "tests" / "servers" / "conformance_server.py"
TS_FIXTURE = NODE_DIR / "conformance-server.mjs"
SERVERS = {"conf", "confhttp", "confts"}


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
    config = {
        "mcp": {
            "client_configs": [
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
        }
    }
    (tmp / "config.json").write_text(json.dumps(config))
    port = free_port()
    argv = [
        sys.executable, "-m", "services.cli", "up",
        "--config", str(tmp / "config.json"),
        "--state-dir", str(tmp / "state"),
        "--port", str(port),
    ]  # fmt: skip
    log = (tmp / "up.log").open("wb")
    process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _connected(base) == SERVERS, 60, "mcpgw up with every fixture", process)
        yield f"{base}/mcp"
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        stop(process, signal.SIGKILL)
        log.close()


def _connected(base: str) -> set[str]:
    try:
        body = httpx2.get(f"{base}/readyz", timeout=1).json()
    except (httpx2.HTTPError, ValueError):
        return set()
    return set(body.get("servers", []))
