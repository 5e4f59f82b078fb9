"""Downstreams that die, hang, come back and stall, over the real process tree with short
health-check intervals, and a connector replica killed under a stream of calls."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import psutil
import pytest

from services.up.main import free_port
from tests.integration.test_gateway_http import ACCEPT, call, initialize, post
from tests.processes import (
    ROOT,
    downstream_processes,
    port_open,
    python_script,
    running,
    service_tree,
    stdio_server,
    tree_processes,
    wait_until,
)

FIXTURE = ROOT / "tests" / "servers" / "fixture_server.py"
ADMIN = "lifecycle-admin"
HEALTH = {"check_interval": "200ms", "check_timeout": "300ms", "max_consecutive_failures": 2}


def gated_fixture(gate: Path) -> dict[str, Any]:
    server = stdio_server("fixture", FIXTURE)
    server["stdio_config"]["envs"] = {"FIXTURE_GATE": str(gate)}
    return server


def state(base: str, server: str) -> str:
    servers = httpx2.get(
        f"{base}/api/servers", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10
    ).json()
    return str(next(s["state"] for s in servers if s["config"]["name"] == server))


def tool_names(mcp: str, session: str) -> set[str]:
    listed = post(mcp, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session).json()
    return {t["name"] for t in listed["result"]["tools"]}


@contextlib.contextmanager
def changes(mcp: str, session: str) -> Iterator[Iterator[str]]:
    """The notification methods a session's GET stream receives, as they come (open already)."""
    headers = {"accept": "text/event-stream", "mcp-session-id": session}
    with httpx2.stream("GET", mcp, headers=headers, timeout=30) as stream:
        lines = stream.iter_lines()
        assert next(lines) == ": stream open"
        yield (json.loads(line[len("data: ") :])["method"] for line in lines if line.startswith("data: "))


@pytest.fixture
def auto(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    config = {"mcp": {"health_monitor_config": HEALTH}}
    servers = [gated_fixture(tmp_path / "gate")]
    with service_tree(tmp_path, servers, env={"MCPGW_ADMIN_TOKEN": ADMIN}, config=config) as (base,):
        yield base, tmp_path


def test_a_killed_downstream_leaves_and_comes_back_on_its_own(auto: tuple[str, Path]) -> None:
    base, tmp = auto
    mcp = f"{base}/mcp"
    session = initialize(mcp)
    assert "fixture_echo" in tool_names(mcp, session)
    with changes(mcp, session) as heard:
        # Down for a while: the next start fails until the gate opens again.
        (tmp / "gate").touch()
        [downstream] = downstream_processes(tmp, "fixture_server.py")
        downstream.send_signal(signal.SIGKILL)
        assert next(heard) == "notifications/tools/list_changed"
        assert "fixture_echo" not in tool_names(mcp, session)
        # While it cannot start, it is retried: connecting and disconnected by turns, never connected.
        wait_until(lambda: state(base, "fixture") != "connected", 10, "reported down")
        answer = call(mcp, session, "fixture_echo", {"text": "x"})
        assert answer["error"]["code"] == -32602, "a gone server's tools are unknown"
        (tmp / "gate").unlink()
        assert next(heard) == "notifications/tools/list_changed"
    wait_until(lambda: "fixture_echo" in tool_names(mcp, session), 30, "tools back after auto-reconnect")
    assert call(mcp, session, "fixture_echo", {"text": "back"})["result"]["content"][0]["text"] == "back"
    assert state(base, "fixture") == "connected"


def test_a_hung_downstream_fails_its_health_checks_and_is_replaced(auto: tuple[str, Path]) -> None:
    base, tmp = auto
    mcp = f"{base}/mcp"
    session = initialize(mcp)
    [hung] = downstream_processes(tmp, "fixture_server.py")
    hung.send_signal(signal.SIGSTOP)
    try:
        # 2 missed pings of 200 ms every 200 ms: gone within a second or two, not at a call timeout.
        wait_until(lambda: "fixture_echo" not in tool_names(mcp, session), 10, "hung server dropped")
        wait_until(lambda: "fixture_echo" in tool_names(mcp, session), 30, "a fresh server process")
        assert all(p.pid != hung.pid for p in downstream_processes(tmp, "fixture_server.py"))
    finally:
        # Normally the connector has killed it by now.
        with contextlib.suppress(psutil.NoSuchProcess):
            hung.send_signal(signal.SIGCONT)


def test_without_auto_reconnect_the_reconnect_api_brings_it_back(tmp_path: Path) -> None:
    config = {"mcp": {"health_monitor_config": HEALTH}, "mcpgw": {"auto_reconnect": False}}
    servers = [gated_fixture(tmp_path / "gate")]
    with service_tree(tmp_path, servers, env={"MCPGW_ADMIN_TOKEN": ADMIN}, config=config) as (base,):
        mcp = f"{base}/mcp"
        session = initialize(mcp)
        [downstream] = downstream_processes(tmp_path, "fixture_server.py")
        downstream.send_signal(signal.SIGKILL)
        wait_until(lambda: state(base, "fixture") == "disconnected", 10, "reported disconnected")
        wait_until(
            lambda: not downstream_processes(tmp_path, "fixture_server.py"), 10, "the dead child reaped"
        )
        assert "fixture_echo" not in tool_names(mcp, session)
        headers = {"authorization": f"Bearer {ADMIN}"}
        asked = httpx2.post(f"{base}/api/mcp/client/fixture/reconnect", headers=headers, timeout=10)
        assert asked.status_code == 202
        wait_until(
            lambda: "fixture_echo" in tool_names(mcp, session), 20, "tools back after the reconnect request"
        )


@pytest.fixture
def hanging_http(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    with running(python_script(FIXTURE, "--http", str(port))) as process:
        wait_until(lambda: port_open(port), 15, "fixture over HTTP", process)
        slow = {
            "name": "slow",
            "connection_type": "http",
            "connection_string": f"http://127.0.0.1:{port}/mcp",
            "tools_to_execute": ["*"],
            "tool_execution_timeout": "20s",
            "tool_timeouts": {"sleep": "1s"},
        }
        with service_tree(tmp_path, [slow, stdio_server("fixture", FIXTURE)]) as (base,):
            yield base, tmp_path


def test_a_hanging_http_downstream_times_out_while_others_answer(hanging_http: tuple[str, Path]) -> None:
    base, _ = hanging_http
    mcp = f"{base}/mcp"
    session = initialize(mcp)
    started = time.monotonic()
    with httpx2.Client(timeout=30) as client:
        hanging = client.build_request(
            "POST",
            mcp,
            json={
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "slow_sleep", "arguments": {"seconds": 30}},
            },
            headers={"accept": ACCEPT, "mcp-session-id": session},
        )
        # Meanwhile another server answers at once.
        assert (
            call(mcp, session, "fixture_echo", {"text": "still here"})["result"]["content"][0]["text"]
            == "still here"
        )
        answer = client.send(hanging).json()
    elapsed = time.monotonic() - started
    assert answer["result"]["isError"] is True
    assert (
        "1s" in answer["result"]["content"][0]["text"]
        or "timed out" in answer["result"]["content"][0]["text"]
    )
    assert 1.0 <= elapsed < 5.0, f"the 1 s per-tool timeout took {elapsed:.1f} s"


def test_killing_one_of_two_connectors_leaves_calls_succeeding(tmp_path: Path) -> None:
    with service_tree(tmp_path, [stdio_server("fixture", FIXTURE)], connectors=2) as (base,):
        mcp = f"{base}/mcp"
        session = initialize(mcp)
        connectors = tree_processes(tmp_path, "connector")
        assert len(connectors) == 2
        outcomes: list[bool] = []
        killed_at = None
        for turn in range(300):
            if turn == 100:
                connectors[0].send_signal(signal.SIGKILL)
                killed_at = turn
            answer = call(mcp, session, "fixture_echo", {"text": str(turn)}, id=turn + 10)
            outcomes.append("result" in answer and not answer["result"].get("isError"))
        assert killed_at is not None
        assert all(outcomes[:killed_at]), "calls failed before the kill"
        # The call in flight when the connector died may fail; every later one succeeds.
        assert sum(not ok for ok in outcomes[killed_at:]) <= 1, outcomes[killed_at:].count(False)
        assert all(outcomes[killed_at + 2 :])


def test_a_connector_stopped_gracefully_under_calls_loses_none_of_them(tmp_path: Path) -> None:
    """SIGTERM, not SIGKILL: the stopping replica retires its Calls streams and finishes what it
    runs, and the edge sends every other call to the replica that stays."""
    with service_tree(tmp_path, [stdio_server("fixture", FIXTURE)], connectors=2) as (base,):
        mcp = f"{base}/mcp"
        session = initialize(mcp)
        stopping, staying = tree_processes(tmp_path, "connector")
        stopped = threading.Event()
        failures: list[dict[str, Any]] = []
        before_stop, after_stop = [0], [0]

        def caller(n: int) -> None:
            turn = 0
            # Until 400 calls went after the stop, or 60 s (then the count below fails the test).
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                was_stopped = stopped.is_set()
                answer = call(mcp, session, "fixture_echo", {"text": f"{n}-{turn}"}, id=turn)
                turn += 1
                if "result" not in answer or answer["result"].get("isError"):
                    failures.append(answer)
                if not was_stopped:
                    before_stop[0] += 1
                else:
                    after_stop[0] += 1
                    if after_stop[0] >= 400:
                        return

        with ThreadPoolExecutor(8) as pool:
            callers = [pool.submit(caller, n) for n in range(8)]
            wait_until(lambda: before_stop[0] >= 200, 30, "calls under way on both replicas")
            stopping.send_signal(signal.SIGTERM)
            assert stopping.wait(15) == 0, "the connector did not stop cleanly"
            stopped.set()
            for done in callers:
                done.result(90)
        assert after_stop[0] >= 400, "the calls after the stop did not all run"
        assert not failures, failures[:3]
        assert staying.is_running()


def successor(tmp: Path, pid: int) -> psutil.Process:
    """The one fixture child, once it is another process than `pid`."""
    found: list[psutil.Process] = []

    def started() -> bool:
        found[:] = downstream_processes(tmp, "fixture_server.py")
        return len(found) == 1 and found[0].pid != pid

    wait_until(started, 30, "a new child process")
    return found[0]


def test_stdio_children_are_confined_logged_stopped_and_reaped(tmp_path: Path) -> None:
    server = gated_fixture(tmp_path / "gate")
    env = {"MCPGW_ADMIN_TOKEN": ADMIN, "SOMETHING_PRIVATE": "connector-only"}
    with service_tree(tmp_path, [server], env=env) as (base,):
        mcp = f"{base}/mcp"
        session = initialize(mcp)
        names = call(mcp, session, "fixture_environment", {})["result"]["structuredContent"]["result"]
        # What its config names, plus the SDK's safe minimum; nothing of the connector's own.
        assert "FIXTURE_GATE" in names and "PATH" in names
        assert not any(n.startswith("MCPGW_") or n == "SOMETHING_PRIVATE" for n in names), names
        call(mcp, session, "fixture_to_stderr", {"text": "a line for the log"})
        wait_until(
            lambda: "fixture: a line for the log" in (tmp_path / "services.log").read_text(),
            10,
            "stderr logged",
        )
        [first] = downstream_processes(tmp_path, "fixture_server.py")
        first.send_signal(signal.SIGKILL)
        # Reaped, not a zombie, and replaced.
        wait_until(lambda: not psutil.pid_exists(first.pid), 10, "the killed child reaped")
        second = successor(tmp_path, first.pid)
        wait_until(lambda: "fixture_echo" in tool_names(mcp, session), 30, "the new child serving")
        headers = {"authorization": f"Bearer {ADMIN}"}
        assert httpx2.delete(f"{base}/api/servers/fixture", headers=headers, timeout=10).status_code == 204
        wait_until(lambda: not psutil.pid_exists(second.pid), 15, "the removed server's child stopped")
        # The server is back; the connector's shutdown must stop its child too.
        assert httpx2.post(f"{base}/api/servers", json=server, headers=headers, timeout=10).status_code == 201
        third = successor(tmp_path, second.pid)
        wait_until(lambda: "fixture_echo" in tool_names(mcp, session), 30, "the server added back")
    wait_until(lambda: not psutil.pid_exists(third.pid), 15, "the child stopped with the connector")
