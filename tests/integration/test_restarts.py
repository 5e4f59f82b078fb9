"""`mcpgw up` restarts a service that dies, and the gateway carries on: calls made while
the connector restarts wait for it rather than fail, and sessions work (and what they
did, such as ending, holds) after nats-server restarts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx2
import psutil

from tests.integration.conftest import FIXTURE
from tests.integration.test_gateway_http import call, initialize
from tests.processes import mcpgw_up, stdio_server, wait_until


def _service(base_pid: int, name: str) -> psutil.Process:
    """The child of `mcpgw up` running service `name` (or the program of that name)."""
    return next(
        p
        for p in psutil.Process(base_pid).children()
        if name in p.cmdline() or os.path.basename(p.cmdline()[0]) == name
    )


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


def _post(mcp: str, session: str, body: dict[str, object]) -> httpx2.Response:
    headers = {"accept": "application/json, text/event-stream", "mcp-session-id": session}
    return httpx2.post(mcp, json=body, headers=headers, timeout=10)


def test_sessions_work_and_stay_ended_across_a_nats_restart(tmp_path: Path) -> None:
    with mcpgw_up(tmp_path, [stdio_server("fixture", FIXTURE)], "mcpgw up") as base:
        mcp = f"{base}/mcp"
        ended = initialize(mcp)
        assert httpx2.delete(mcp, headers={"mcp-session-id": ended}, timeout=10).status_code == 200
        up = next(p for p in psutil.process_iter(["cmdline"]) if _is_up(p, tmp_path))
        nats = _service(up.pid, "nats-server")
        nats.kill()
        nats.wait(10)
        set_level = {"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": "info"}}

        def sessions_work() -> bool:
            try:
                return "result" in _post(mcp, initialize(mcp), set_level).json()
            except (httpx2.HTTPError, AssertionError, ValueError):
                return False

        wait_until(sessions_work, 20, "sessions working after NATS restarted")
        # What sessions did survives: the session ended before the restart stays ended.
        assert _post(mcp, ended, {"jsonrpc": "2.0", "id": 2, "method": "ping"}).status_code == 404
        # And ending one works again.
        session = initialize(mcp)
        assert httpx2.delete(mcp, headers={"mcp-session-id": session}, timeout=10).status_code == 200
        assert _post(mcp, session, {"jsonrpc": "2.0", "id": 3, "method": "ping"}).status_code == 404
