"""A server on a closed port is retried with backoff, not in a storm: few attempts, few
registry revisions, its last error shown, and it connects soon after the port opens."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2

from services.up.main import free_port
from tests.processes import ROOT, port_open, python_script, running, service_tree, stdio_server, wait_until

FIXTURE = ROOT / "tests" / "servers" / "fixture_server.py"
ADMIN = "backoff-admin"
# The window the bound is stated for, and the bounds (DESIGN: no failure becomes a storm).
WINDOW_SECONDS = 60.0
MAX_ATTEMPTS = 10
MAX_REVISIONS = 10
# The largest backoff step (MCPGW_RECONNECT_MAX_SECONDS' default) and a connection's own time.
BACKOFF_MAX_SECONDS = 30.0
CONNECT_SECONDS = 10.0


def server_state(base: str, name: str) -> dict[str, Any]:
    servers = httpx2.get(f"{base}/api/servers", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    state: dict[str, Any] = next(s for s in servers.json() if s["config"]["name"] == name)
    return state


def revision(base: str) -> int:
    return int(httpx2.get(f"{base}/readyz", timeout=5).json()["revision"])


def logged_attempts(tmp_path: Path) -> list[str]:
    log = (tmp_path / "services.log").read_text(errors="replace")
    return re.findall(r"server late (?:disconnected|failed): .* \(attempt (\d+) failed", log)


def test_a_closed_port_is_retried_with_backoff_and_connects_once_it_opens(tmp_path: Path) -> None:
    port = free_port()
    closed = {
        "name": "late",
        "connection_type": "http",
        "connection_string": f"http://127.0.0.1:{port}/mcp",
        "tools_to_execute": ["*"],
    }
    with service_tree(tmp_path, [stdio_server("fixture", FIXTURE)], env={"MCPGW_ADMIN_TOKEN": ADMIN}) as (
        base,
    ):
        headers = {"authorization": f"Bearer {ADMIN}"}
        added = httpx2.post(f"{base}/api/servers", json=closed, headers=headers, timeout=10)
        assert added.status_code == 201, added.text
        first_revision = revision(base)
        # An observation window, not synchronisation: the bound is "attempts per minute".
        time.sleep(WINDOW_SECONDS)

        attempts = logged_attempts(tmp_path)
        assert 1 <= len(attempts) <= MAX_ATTEMPTS, f"{len(attempts)} connection attempts in 60 s"
        assert revision(base) - first_revision <= MAX_REVISIONS

        state = server_state(base, "late")
        assert state["state"] == "disconnected"
        assert state["error"], "the last error is shown"
        # Attempts go on meanwhile (each is logged, then reported to registry): the state read
        # between two reads of the log is within them, the report of the last logged one
        # possibly still on its way.
        assert len(attempts) - 1 <= state["attempts"] <= len(logged_attempts(tmp_path))
        assert state["next_attempt"] is not None
        due = datetime.fromisoformat(state["next_attempt"]).timestamp()
        assert due - time.time() <= BACKOFF_MAX_SECONDS + 1

        with running(python_script(FIXTURE, "--http", str(port))) as process:
            wait_until(lambda: port_open(port), 15, "the late server's port", process)
            # One backoff step at most (the pending one is no longer than the largest).
            wait_until(
                lambda: server_state(base, "late")["state"] == "connected",
                BACKOFF_MAX_SECONDS + CONNECT_SECONDS,
                "the late server connected within one backoff step",
            )
