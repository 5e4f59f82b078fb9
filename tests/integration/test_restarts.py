"""`mcpgw up` restarts a service that dies, and calls made meanwhile wait for it rather
than fail: the connector, killed with SIGKILL, takes the next call a moment later."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from tests.integration.conftest import FIXTURE
from tests.integration.test_gateway_http import call, initialize
from tests.processes import mcpgw_up, stdio_server


def _service(base_pid: int, name: str) -> psutil.Process:
    return next(p for p in psutil.Process(base_pid).children() if name in p.cmdline())


def test_a_call_made_while_the_connector_restarts_waits_for_it(tmp_path: Path) -> None:
    with mcpgw_up(tmp_path, [stdio_server("fixture", FIXTURE)], "mcpgw up") as base:
        mcp = f"{base}/mcp"
        session = initialize(mcp)
        assert (
            call(mcp, session, "fixture_echo", {"text": "before"})["result"]["content"][0]["text"] == "before"
        )
        up = next(p for p in psutil.process_iter(["cmdline"]) if _is_up(p, tmp_path))
        connector = _service(up.pid, "connector")
        connector.kill()
        connector.wait(10)
        started = time.monotonic()
        answer = call(mcp, session, "fixture_echo", {"text": "during"})
        assert "result" in answer and not answer["result"].get("isError"), answer
        assert answer["result"]["content"][0]["text"] == "during"
        assert time.monotonic() - started < 10


def _is_up(process: psutil.Process, state: Path) -> bool:
    cmdline = process.info["cmdline"] or []
    return "up" in cmdline and str(state / "state") in cmdline
