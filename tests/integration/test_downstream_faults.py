"""Downstream faults through the whole gateway: a Streamable HTTP server that sends invalid JSON,
breaks its answer stream or never answers. Each call fails fast with a result naming the cause,
a resumable stream is resumed, and the next call to the same server works."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from services.connector.forwarding import RESUME_ATTEMPTS
from services.up.main import free_port
from tests.integration.test_gateway_http import call, initialize
from tests.processes import ROOT, port_open, python_script, running, service_tree, wait_until

FAULTY = ROOT / "tests" / "servers" / "faulty_http_server.py"
STALL_TIMEOUT_SECONDS = 2.0
# Every other tool may take 10 s: a fault must end its call long before that.
CALL_TIMEOUT_SECONDS = 10.0
MARGIN_SECONDS = 3.0


@dataclass(frozen=True)
class Faulty:
    mcp: str
    stats_url: str

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx2.get(self.stats_url, timeout=5).json()
        return stats


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    tmp = tmp_path_factory.mktemp("faults")
    port = free_port()
    with running(python_script(FAULTY, "--port", str(port)), log=tmp / "faulty.log") as process:
        wait_until(lambda: port_open(port), 15, "faulty server", process)
        server = {
            "name": "faulty",
            "connection_type": "http",
            "connection_string": f"http://127.0.0.1:{port}/mcp",
            "tools_to_execute": ["*"],
            "tool_execution_timeout": f"{CALL_TIMEOUT_SECONDS:g}s",
            "tool_timeouts": {"stalls": f"{STALL_TIMEOUT_SECONDS:g}s"},
        }
        with service_tree(tmp, [server]) as (base,):
            yield Faulty(f"{base}/mcp", f"http://127.0.0.1:{port}/stats")


def timed_call(
    faulty: Faulty, session: str, tool: str, arguments: dict[str, Any]
) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    answer = call(faulty.mcp, session, f"faulty_{tool}", arguments)
    return answer, time.monotonic() - started


def assert_ok_after(faulty: Faulty, session: str, fault: str) -> None:
    answer = call(faulty.mcp, session, "faulty_ok", {"text": f"after {fault}"}, id=2)
    assert answer["result"] == {"content": [{"type": "text", "text": f"after {fault}"}]}


# tool: (what the error text must say, how soon the call must end); "stalls" has its own test.
FAULTS = {
    "malformed": ("server 'faulty' sent invalid JSON", MARGIN_SECONDS),
    "malformed_sse": ("server 'faulty' sent invalid JSON", MARGIN_SECONDS),
    # Two resumptions after the server's 100 ms retry, both refused.
    "closes": ("server 'faulty' closed the event stream before answering", MARGIN_SECONDS),
}


@pytest.mark.parametrize(("tool", "cause", "within"), [(t, *f) for t, f in FAULTS.items()], ids=FAULTS.keys())
def test_a_fault_is_an_error_result_naming_its_cause_and_the_next_call_works(
    faulty: Faulty, tool: str, cause: str, within: float
) -> None:
    session = initialize(faulty.mcp)
    answer, elapsed = timed_call(faulty, session, tool, {})
    assert "error" not in answer, "a failed call is a tool error result, not a JSON-RPC error"
    assert answer["result"]["isError"] is True
    assert cause in answer["result"]["content"][0]["text"]
    assert elapsed < within, f"{tool} took {elapsed:.1f}s"
    assert_ok_after(faulty, session, tool)


def test_a_stream_closed_before_the_answer_is_resumed_then_given_up(faulty: Faulty) -> None:
    session = initialize(faulty.mcp)
    before = len(faulty.stats()["resumed"])
    answer, _ = timed_call(faulty, session, "closes", {})
    assert answer["result"]["isError"] is True
    # Resumed from the priming event's id, as often as the connector tries, each time refused (405).
    [primed, *again] = faulty.stats()["resumed"][before:]
    assert primed.startswith("closes-")
    assert again == [primed] * (RESUME_ATTEMPTS - 1)
    assert_ok_after(faulty, session, "closes")


def test_a_resumable_stream_delivers_the_answer_after_last_event_id(faulty: Faulty) -> None:
    session = initialize(faulty.mcp)
    before = len(faulty.stats()["resumed"])
    answer, elapsed = timed_call(faulty, session, "resumable", {"text": "resumed"})
    assert answer["result"] == {"content": [{"type": "text", "text": "resumed"}]}
    # One GET, after the priming event's id, brought the answer.
    [primed] = faulty.stats()["resumed"][before:]
    assert primed.startswith("resumable-")
    assert elapsed < MARGIN_SECONDS
    assert_ok_after(faulty, session, "resumable")


def test_a_stalled_call_times_out_at_its_tool_timeout_and_is_cancelled_downstream(faulty: Faulty) -> None:
    session = initialize(faulty.mcp)
    before = len(faulty.stats()["cancelled"])
    answer, elapsed = timed_call(faulty, session, "stalls", {})
    assert answer["result"]["isError"] is True
    assert "server 'faulty' did not answer within 2s" in answer["result"]["content"][0]["text"]
    # The per-tool timeout, not the server's 10 s.
    assert STALL_TIMEOUT_SECONDS <= elapsed < STALL_TIMEOUT_SECONDS + MARGIN_SECONDS, f"took {elapsed:.1f}s"
    # notifications/cancelled goes out in the background: it may land just after the answer.
    wait_until(lambda: len(faulty.stats()["cancelled"]) > before, 5, "notifications/cancelled")
    [cancelled] = faulty.stats()["cancelled"][before:]
    assert str(cancelled).startswith("mcpgw-"), "the request id the connector sent"
    assert_ok_after(faulty, session, "stalls")
