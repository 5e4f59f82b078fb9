"""The hostile-input drill (bench/hostile.py) against the real process tree: about 1,000
generated requests over every endpoint; no answer is a 5xx or leaks a traceback, a path or
an exception name, and the gateway is whole afterwards. Then each defect the drill found,
reproduced alone (all fixed: an unclosed IPv6 Host, a `_meta` that is no object, a legacy
session id long enough to break NATS, a JSON-RPC id over NATS's payload limit in the
audit, and arguments nested deeper than SDK servers read)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from bench import hostile
from tests.processes import ROOT, service_tree, stdio_server, wait_until

ADMIN = "hostile-admin-token"
REQUESTS = 1000
# Calls that get no answer are cut here, not at the tool timeout (60 s).
ANSWER_SECONDS = 5.0
CATEGORIES = [*hostile.CATEGORIES, "legacy stream"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("hostile")
    servers = [stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py")]
    with service_tree(tmp, servers, env={"MCPGW_ADMIN_TOKEN": ADMIN}) as (base,):
        yield base, tmp


@pytest.fixture(scope="module")
def drill(gateway: tuple[str, Path]) -> dict[str, Any]:
    base, tmp = gateway
    return hostile.run(
        base,
        admin_token=ADMIN,
        server="fixture",
        requests=REQUESTS,
        seed=1,
        log=tmp / "services.log",
        max_seconds=120,
        answer_seconds=ANSWER_SECONDS,
    )


def test_every_category_was_sent_and_answered(drill: dict[str, Any]) -> None:
    assert drill["requests"] == REQUESTS and drill["skipped"] == 0
    assert set(drill["by_category"]) == set(hostile.CATEGORIES)
    assert drill["legacy_stream_events"] > 0, "no answer came back on the legacy streams"
    assert drill["no_answer"] == 0, drill["examples"]


@pytest.mark.parametrize("category", CATEGORIES)
def test_no_answer_is_a_server_error_or_leaks(drill: dict[str, Any], category: str) -> None:
    found = drill["findings_by_category"].get(category, {})
    assert (found.get("5xx", 0), found.get("leak", 0)) == (0, 0), drill["examples"]


def test_no_answer_is_an_internal_error(drill: dict[str, Any]) -> None:
    assert drill["internal_errors"] == 0, drill["examples"]


def test_every_request_is_answered_in_time(drill: dict[str, Any]) -> None:
    assert drill["hangs"] == 0, drill["examples"]


def test_foreign_hosts_and_origins_are_never_served(drill: dict[str, Any]) -> None:
    assert drill["foreign_served"] == 0, drill["examples"]


def test_nothing_is_logged_with_a_traceback(drill: dict[str, Any]) -> None:
    assert drill["logged_tracebacks"] == 0, drill["logged_exceptions"]


def test_the_gateway_is_whole_after_the_drill(gateway: tuple[str, Path], drill: dict[str, Any]) -> None:
    base, tmp = gateway
    # Every audit record goes out, and a call answers as fast as before.
    wait_until(
        lambda: httpx2.get(f"{base}/readyz", timeout=5).json()["audit_backlog"] == 0, 10, "audit backlog"
    )
    assert "[ERR]" not in (tmp / "nats.log").read_text(errors="replace")
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    hello = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "after", "version": "1"},
    }
    opened = httpx2.post(
        f"{base}/mcp",
        headers=headers,
        json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello},
    )
    headers["mcp-session-id"] = opened.headers["mcp-session-id"]
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "fixture_echo", "arguments": {"text": "x"}},
    }
    started = time.monotonic()
    answer = httpx2.post(f"{base}/mcp", headers=headers, json=call, timeout=30)
    assert answer.json()["result"]["content"][0]["text"] == "x"
    assert time.monotonic() - started < 1.0


# Each defect the drill found, reproduced alone on a gateway of its own (in this order: the
# last two break audit and NATS for whatever runs after them).


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("defects")
    servers = [stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py")]
    with service_tree(tmp, servers, env={"MCPGW_ADMIN_TOKEN": ADMIN}) as (base,):
        yield base, tmp


def raw(base: str, request: bytes) -> bytes:
    """The answer to `request` written as is (an HTTP library would not send its Host)."""
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


def session(base: str, path: str = "/mcp/fixture") -> dict[str, str]:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    hello = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "defect", "version": "1"},
    }
    opened = httpx2.post(
        base + path,
        headers=headers,
        json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello},
    )
    return {
        **headers,
        "mcp-session-id": opened.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }


def test_an_unclosed_ipv6_host_is_refused(fresh: tuple[str, Path]) -> None:
    base, _ = fresh
    head = b"Host: [::1\r\nConnection: close\r\nAuthorization: Bearer %s\r\n" % ADMIN.encode()
    api = raw(base, b"GET /api/keys HTTP/1.1\r\n" + head + b"\r\n")
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    media = b"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
    mcp = raw(
        base, b"POST /mcp HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s" % (head, media, len(body), body)
    )
    assert api.split(b" ")[1] in (b"400", b"403") and mcp.split(b" ")[1] in (b"400", b"403")


def test_a_meta_that_is_no_object_is_invalid_params(fresh: tuple[str, Path]) -> None:
    base, _ = fresh
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "resources/read",
        "params": {"uri": "fixture://x", "_meta": 5},
    }
    error = httpx2.post(f"{base}/mcp/fixture", headers=session(base), json=call, timeout=10).json()["error"]
    assert error["code"] == -32602 and "Error" not in error["message"]


def test_arguments_nested_200_deep_are_answered_at_once(fresh: tuple[str, Path]) -> None:
    base, _ = fresh
    depth = 200
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":%s0%s}}' % (
        b'{"a":' * depth, b"}" * depth)  # fmt: skip
    answer = httpx2.post(f"{base}/mcp/fixture", headers=session(base), content=body, timeout=ANSWER_SECONDS)
    assert answer.status_code in (200, 400)


def test_a_megabyte_request_id_does_not_stop_the_audit(fresh: tuple[str, Path]) -> None:
    base, _ = fresh
    headers = session(base)
    call = {
        "jsonrpc": "2.0",
        "id": "7" * 1_100_000,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}},
    }
    httpx2.post(f"{base}/mcp/fixture", headers=headers, json=call, timeout=30)
    wait_until(
        lambda: httpx2.get(f"{base}/readyz", timeout=5).json()["audit_backlog"] == 0, 10, "audit backlog"
    )


def test_a_long_legacy_session_id_leaves_the_edge_connected_to_nats(fresh: tuple[str, Path]) -> None:
    base, tmp = fresh
    with httpx2.stream("GET", f"{base}/sse", headers={"accept": "text/event-stream"}, timeout=10) as stream:
        endpoint = next(line for line in stream.iter_lines() if line.startswith("data:"))
    edge = endpoint.partition("session_id=")[2].rsplit("-", 1)[0]
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    httpx2.post(f"{base}/messages?session_id={edge}{'x' * 5000}-0", json=ping, timeout=10)
    level = {"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": "info"}}
    answer = httpx2.post(f"{base}/mcp", headers=session(base, "/mcp"), json=level, timeout=10).json()
    assert "result" in answer and "[ERR]" not in (tmp / "nats.log").read_text(errors="replace")
