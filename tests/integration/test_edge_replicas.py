"""Two edge replicas serving one client interchangeably, with no sticky sessions."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.integration.test_gateway_http import ACCEPT, call, error_of, post, sse
from tests.integration.test_gateway_modern import MODERN, envelope
from tests.processes import ROOT, service_tree, stdio_server, wait_until

SERVERS = [
    stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py"),
    stdio_server("conf", ROOT / "tests" / "servers" / "conformance_server.py"),
]
ADMIN = "replicas-admin-token-0123456789"
SAMPLED = {
    "role": "assistant",
    "content": {"type": "text", "text": "sampled on the other edge"},
    "model": "m",
}


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    env = {"MCPGW_ADMIN_TOKEN": ADMIN}
    with service_tree(tmp_path_factory.mktemp("replicas"), SERVERS, edges=2, env=env) as (one, two):
        yield one, two


def initialize(url: str, capabilities: dict[str, Any] | None = None) -> str:
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": capabilities or {},
        "clientInfo": {"name": "replica-test", "version": "1"},
    }
    response = post(url, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
    assert response.status_code == 200
    return response.headers["mcp-session-id"]


def events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    return (json.loads(data) for _, data in sse(lines) if data)


def test_one_session_alternates_between_edges_and_hears_changes_made_through_the_other(
    edges: tuple[str, str],
) -> None:
    one, two = (f"{base}/mcp" for base in edges)
    session = initialize(one)
    for turn in range(6):
        url = (one, two)[turn % 2]
        answer = call(url, session, "fixture_echo", {"text": f"turn {turn}"}, id=turn + 1)
        assert answer["result"]["content"][0]["text"] == f"turn {turn}", url
    headers = {"accept": "text/event-stream", "mcp-session-id": session}
    with httpx2.stream("GET", one, headers=headers, timeout=30) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(lines).startswith(": stream open")
        added = call(two, session, "fixture_add_tool", {"name": "replicated"})
        assert added["result"]["content"][0]["text"] == "added replicated"
        assert next(events(lines)) == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    listed = post(two, {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, session).json()["result"]["tools"]
    assert "fixture_replicated" in {t["name"] for t in listed}


def test_a_session_ended_on_one_edge_is_ended_on_the_other(edges: tuple[str, str]) -> None:
    one, two = (f"{base}/mcp" for base in edges)
    session = initialize(one)
    assert httpx2.delete(two, headers={"mcp-session-id": session}, timeout=10).status_code == 200
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for url in (one, two):
        gone = post(url, ping, session)
        assert (gone.status_code, error_of(gone)["code"]) == (404, -32001), url


def sampling_call(url: str, session: str, id: int) -> Any:
    """A streamed tools/call of the fixture's sampling tool (a context manager)."""
    body = {
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": "conf_test_sampling", "arguments": {"prompt": "hi"}},
    }
    headers = {"accept": ACCEPT, "content-type": "application/json", "mcp-session-id": session}
    return httpx2.stream("POST", url, content=json.dumps(body), headers=headers, timeout=30)


def test_a_sampling_answer_posted_to_the_other_edge_reaches_the_call(edges: tuple[str, str]) -> None:
    one, two = (f"{base}/mcp" for base in edges)
    session = initialize(one, {"sampling": {}})
    with sampling_call(one, session, 1) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        received = events(stream.iter_lines())
        asked = next(received)
        assert asked["method"] == "sampling/createMessage" and asked["id"].startswith("edge-1-")
        reply = post(two, {"jsonrpc": "2.0", "id": asked["id"], "result": SAMPLED}, session)
        assert reply.status_code == 202
        result = next(received)
    assert result["id"] == 1
    assert result["result"]["content"][0]["text"] == "LLM response: sampled on the other edge"


def test_a_broken_answer_stream_resumes_on_the_other_edge(edges: tuple[str, str]) -> None:
    one, two = (f"{base}/mcp" for base in edges)
    session = initialize(one, {"sampling": {}})
    with sampling_call(one, session, 2) as stream:
        received = sse(stream.iter_lines())
        priming_id, priming_data = next(received)
        assert priming_id is not None and priming_data == ""
        asked_id, asked = next(received)
        asked_message = json.loads(asked)
        assert asked_message["method"] == "sampling/createMessage"
    # The client lost the stream after the sampling request; the call carries on without it.
    reply = post(two, {"jsonrpc": "2.0", "id": asked_message["id"], "result": SAMPLED}, session)
    assert reply.status_code == 202
    resume = {"accept": "text/event-stream", "mcp-session-id": session, "last-event-id": str(asked_id)}
    with httpx2.stream("GET", two, headers=resume, timeout=30) as stream:
        assert stream.status_code == 200
        replayed = list(sse(stream.iter_lines()))
    assert len(replayed) == 1, "only the events after the one named, and only of that stream"
    result_id, result = replayed[0]
    assert result_id is not None and result_id.split(".")[0] == priming_id.split(".")[0]
    assert json.loads(result)["result"]["content"][0]["text"] == "LLM response: sampled on the other edge"
    # Another session cannot resume this stream.
    stranger = {**resume, "mcp-session-id": initialize(two)}
    assert httpx2.get(two, headers=stranger, timeout=10).status_code == 404


def modern_call(url: str, params: dict[str, Any]) -> httpx2.Response:
    meta = envelope(**{"io.modelcontextprotocol/clientCapabilities": {"sampling": {}}})
    body = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {**params, "_meta": meta}}
    headers = {
        "accept": ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": params["name"],
    }
    return httpx2.post(url, content=json.dumps(body), headers=headers, timeout=30)


def test_a_2026_retry_landing_on_the_other_edge_resumes_the_call(edges: tuple[str, str]) -> None:
    one, two = (f"{base}/mcp" for base in edges)
    params = {"name": "conf_test_sampling", "arguments": {"prompt": "hi"}}
    first = modern_call(one, params).json()["result"]
    assert first["resultType"] == "input_required"
    [(key, request)] = first["inputRequests"].items()
    assert request["method"] == "sampling/createMessage"
    retry = {**params, "inputResponses": {key: SAMPLED}, "requestState": first["requestState"]}
    result = modern_call(two, retry).json()["result"]
    assert result["resultType"] == "complete"
    assert result["content"][0]["text"] == "LLM response: sampled on the other edge"
    # The call is over: its state cannot be replayed on either edge.
    for url in (one, two):
        replayed = modern_call(url, retry)
        assert (replayed.status_code, error_of(replayed)["code"]) == (400, -32602)


def test_a_legacy_sse_post_to_the_other_edge_reaches_the_stream(edges: tuple[str, str]) -> None:
    one, two = edges
    with httpx2.stream(
        "GET", f"{one}/sse/fixture", headers={"accept": "text/event-stream"}, timeout=30
    ) as stream:
        lines = stream.iter_lines()
        assert next(lines) == "event: endpoint"
        endpoint = next(lines)[len("data: ") :]
        assert endpoint.startswith("/messages?session_id=edge-1-")
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "sse"}},
        }
        posted = httpx2.post(f"{two}{endpoint}", json=initialize, timeout=10)
        assert posted.status_code == 202
        answer = next(events(lines))
    assert answer["id"] == 1 and answer["result"]["protocolVersion"] == "2024-11-05"
    gone = httpx2.post(f"{two}{endpoint}", json=initialize, timeout=10)
    assert gone.status_code == 404


def test_an_unknown_legacy_sse_session_is_not_found(edges: tuple[str, str]) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for session in ("nonsense", "edge-1-00", "edge-9-00"):
        response = httpx2.post(f"{edges[1]}/messages?session_id={session}", json=ping, timeout=10)
        assert response.status_code == 404, session


WATCHED = "test://watched-resource"


def rpc(url: str, session: str, method: str, params: dict[str, Any], id: int = 1) -> dict[str, Any]:
    response = post(url, {"jsonrpc": "2.0", "id": id, "method": method, "params": params}, session)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def touch(url: str, session: str) -> str:
    return str(call(url, session, "conf_touch_resource", {"uri": WATCHED})["result"]["content"][0]["text"])


def get_stream(url: str, session: str) -> Any:
    return httpx2.stream(
        "GET", url, headers={"accept": "text/event-stream", "mcp-session-id": session}, timeout=30
    )


def test_resource_updates_reach_subscribed_sessions_wherever_their_stream_is(edges: tuple[str, str]) -> None:
    one, two = (f"{base}/mcp" for base in edges)
    aggregate, direct, idle = initialize(one), initialize(f"{one}/conf"), initialize(one)
    # Subscribed through one edge; their streams held by the other.
    assert rpc(two, aggregate, "resources/subscribe", {"uri": f"mcpgw://conf/{WATCHED}"})["result"] == {}
    assert rpc(f"{one}/conf", direct, "resources/subscribe", {"uri": WATCHED})["result"] == {}
    with (
        get_stream(one, aggregate) as first,
        get_stream(f"{two}/conf", direct) as second,
        get_stream(one, idle) as third,
    ):
        streams = [events(s.iter_lines()) for s in (first, second, third)]
        assert touch(two, aggregate) == f"notified {WATCHED}"
        updated = "notifications/resources/updated"
        assert next(streams[0]) == {
            "jsonrpc": "2.0",
            "method": updated,
            "params": {"uri": f"mcpgw://conf/{WATCHED}"},
        }
        assert next(streams[1]) == {"jsonrpc": "2.0", "method": updated, "params": {"uri": WATCHED}}
        # The unsubscribed session heard nothing of it: its next message is a list change.
        call(one, idle, "fixture_add_tool", {"name": "after_update"})
        assert next(streams[2])["method"] == "notifications/tools/list_changed"
    # The downstream stays subscribed while any session is, and not after the last one ends.
    assert rpc(one, aggregate, "resources/unsubscribe", {"uri": f"mcpgw://conf/{WATCHED}"})["result"] == {}
    assert touch(one, aggregate) == f"notified {WATCHED}"
    ended = httpx2.delete(f"{two}/conf", headers={"mcp-session-id": direct}, timeout=10)
    assert ended.status_code == 200
    assert touch(one, aggregate) == f"nobody subscribed to {WATCHED}"


def test_a_listen_stream_hears_of_the_resources_it_named(edges: tuple[str, str]) -> None:
    one, two = (f"{base}/mcp" for base in edges)
    wanted = [f"mcpgw://conf/{WATCHED}", "mcpgw://nowhere/x"]
    body = {
        "jsonrpc": "2.0",
        "id": 77,
        "method": "subscriptions/listen",
        "params": {"notifications": {"resourceSubscriptions": wanted}, "_meta": envelope()},
    }
    headers = {
        "accept": ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": "subscriptions/listen",
    }
    session = initialize(two)
    with httpx2.stream("POST", one, content=json.dumps(body), headers=headers, timeout=30) as stream:
        received = events(stream.iter_lines())
        ack = next(received)
        assert ack["params"]["notifications"] == {"resourceSubscriptions": [wanted[0]]}
        assert touch(two, session) == f"notified {WATCHED}"
        assert next(received) == {
            "jsonrpc": "2.0",
            "method": "notifications/resources/updated",
            "params": {"uri": wanted[0], "_meta": {"io.modelcontextprotocol/subscriptionId": 77}},
        }


def test_a_log_level_set_through_one_edge_filters_calls_on_the_other(edges: tuple[str, str]) -> None:
    one, two = (f"{base}/mcp" for base in edges)
    session = initialize(one)
    logging_call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "conf_test_tool_with_logging"},
    }
    # Without a level the client asked for no log messages, and the answer is plain JSON.
    assert post(two, logging_call, session).headers["content-type"].startswith("application/json")
    assert rpc(two, session, "logging/setLevel", {"level": "info"})["result"] == {}
    streamed = [json.loads(d) for _, d in sse(iter(post(one, logging_call, session).text.splitlines())) if d]
    assert [m["params"]["data"] for m in streamed if m.get("method") == "notifications/message"] == [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ]
    assert rpc(one, session, "logging/setLevel", {"level": "error"})["result"] == {}
    # Every message below the level is held back, so nothing precedes the result: plain JSON.
    quiet = post(two, logging_call, session)
    assert quiet.headers["content-type"].startswith("application/json")
    assert quiet.json()["result"]["content"][0]["text"] == "Tool with logging executed successfully"


def test_a_console_sign_out_on_one_edge_signs_out_on_the_other(edges: tuple[str, str]) -> None:
    one, two = edges
    with httpx2.Client(timeout=10) as browser:
        signed_in = browser.post(
            f"{one}/ui/login", data={"token": ADMIN, "next": "/ui"}, headers={"origin": one}
        )
        assert signed_in.status_code == 303, signed_in.text
        # One cookie for both edges (127.0.0.1, whatever the port): each accepts it.
        page = browser.get(f"{two}/ui")
        assert page.status_code == 200, page.text
        csrf = re.search(r'data-csrf="([^"]+)"', page.text)
        assert csrf is not None
        cookie = browser.cookies["mcpgw_console"]
        signed_out = browser.post(f"{one}/ui/logout", data={"csrf": csrf.group(1)}, headers={"origin": one})
        assert signed_out.status_code == 303
    # A copy of the cookie, as someone who took it would keep it.
    copied = {"cookie": f"mcpgw_console={cookie}"}
    wait_until(
        lambda: httpx2.get(f"{two}/ui", headers=copied, timeout=10).status_code != 200,
        5,
        "the other edge refusing the signed-out cookie",
    )
