"""The official MCP conformance suite against the gateway (`make conformance`).

The fixture server (tests/servers/conformance_server.py) sits behind `mcpgw up`
twice: over stdio as `conf` and over Streamable HTTP as `confhttp`; its twin on the
TypeScript SDK (tests/node/conformance-server.mjs, with an event store, so its answer
streams open with priming events) sits there as `confts`. The suite runs against each
`/mcp/{name}` (every scenario must pass), against both fixtures directly (the fixtures
themselves must be right), and against the prefixed `/mcp`, where only the scenarios
that look names up verbatim may fail.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.processes import NODE, NODE_DIR

SUITE = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EXPECTED_FAILURES = Path(__file__).with_name("conformance-prefixed.yml")
SUITE_SECONDS = 300

pytestmark = pytest.mark.skipif(
    not (NODE.exists() and SUITE.exists()),
    reason="the conformance suite is not installed: run `make install` (npm ci in tests/node)",
)


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


def test_the_typescript_fixture_itself_passes_every_scenario(ts_fixture_url: str, tmp_path: Path) -> None:
    code, summary = run_suite(ts_fixture_url, tmp_path)
    assert code == 0, summary


@pytest.mark.parametrize("server", ["conf", "confhttp", "confts"])
def test_every_scenario_passes_through_a_server_endpoint(
    conformance_gateway: str, server: str, tmp_path: Path
) -> None:
    code, summary = run_suite(f"{conformance_gateway}/{server}", tmp_path)
    assert code == 0, summary


def test_the_prefixed_aggregate_fails_only_verbatim_name_lookups(
    conformance_gateway: str, tmp_path: Path
) -> None:
    code, summary = run_suite(conformance_gateway, tmp_path, "--expected-failures", str(EXPECTED_FAILURES))
    assert code == 0, summary
