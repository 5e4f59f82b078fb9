"""The legacy HTTP+SSE transport (2024-11-05) at the edge, rule by rule, with raw HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2

from tests.integration.test_gateway_http import sse

STREAM = {"accept": "text/event-stream"}


def base_of(gateway: str) -> str:
    return gateway.removesuffix("/mcp")


def messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    return (json.loads(data) for _, data in sse(lines) if data)


@contextmanager
def legacy_stream(url: str) -> Iterator[tuple[Iterator[str], str]]:
    """An open session stream: its lines, and the POST URL its endpoint event names."""
    with httpx2.stream("GET", url, headers=STREAM, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == "event: endpoint"
        yield lines, next(lines)[len("data: ") :]


def test_a_session_initializes_lists_and_calls_over_its_stream(gateway: str) -> None:
    base = base_of(gateway)
    with legacy_stream(f"{base}/sse") as (lines, endpoint):
        assert endpoint.startswith("/messages?session_id=")
        hello = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "old"}},
        }
        accepted = httpx2.post(f"{base}{endpoint}", json=hello, timeout=10)
        assert (accepted.status_code, accepted.text) == (202, "Accepted")
        received = messages(lines)
        assert next(received)["result"]["serverInfo"]["name"] == "mcpgw"
        echo = {"name": "fixture_echo", "arguments": {"text": "old school"}}
        batch = [
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": echo},
        ]
        assert httpx2.post(f"{base}{endpoint}", json=batch, timeout=10).status_code == 202
        answer = next(received)
        assert (answer["id"], answer["result"]["content"][0]["text"]) == (2, "old school")


def test_requests_before_initialize_are_refused_on_the_stream(gateway: str) -> None:
    base = base_of(gateway)
    with legacy_stream(f"{base}/sse/fixture") as (lines, endpoint):
        ping = {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}
        assert httpx2.post(f"{base}{endpoint}", json=ping, timeout=10).status_code == 202
        error = next(messages(lines))
        assert (error["id"], error["error"]["code"]) == (5, -32600)


def test_transport_errors(gateway: str) -> None:
    base = base_of(gateway)
    assert httpx2.get(f"{base}/sse", headers={"accept": "application/json"}, timeout=10).status_code == 406
    assert httpx2.get(f"{base}/sse/nowhere", headers=STREAM, timeout=10).status_code == 404
    assert httpx2.post(f"{base}/sse", timeout=10).status_code == 405
    assert httpx2.get(f"{base}/messages", timeout=10).status_code == 405
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert httpx2.post(f"{base}/messages?session_id=nope", json=ping, timeout=10).status_code == 404
    evil = httpx2.get(f"{base}/sse", headers={**STREAM, "origin": "https://evil.example"}, timeout=10)
    assert evil.status_code == 403
    with legacy_stream(f"{base}/sse") as (_, endpoint):
        wrong_type = httpx2.post(
            f"{base}{endpoint}", content=b"{}", headers={"content-type": "text/plain"}, timeout=10
        )
        assert wrong_type.status_code == 415
        garbage = httpx2.post(
            f"{base}{endpoint}", content=b"{", headers={"content-type": "application/json"}, timeout=10
        )
        assert (garbage.status_code, garbage.json()["error"]["code"]) == (400, -32700)
