"""The edge's HTTP contract, request by request, over the real process tree."""

from __future__ import annotations

import concurrent.futures
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2

from tests.integration.conftest import MAX_BODY
from tests.processes import wait_until

ACCEPT = "application/json, text/event-stream"


def post(url: str, body: Any, session: str | None = None, **headers: str) -> httpx2.Response:
    sent = {"accept": ACCEPT, "content-type": "application/json", **headers}
    if session:
        sent["mcp-session-id"] = session
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx2.post(url, content=content, headers=sent, timeout=30)
    assert response.status_code != 500, response.text
    return response


def initialize(url: str, version: str = "2025-11-25") -> str:
    response = post(
        url,
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "1"},
            },
        },
    )
    assert response.status_code == 200
    assert response.json()["result"]["protocolVersion"] == version
    return response.headers["mcp-session-id"]


def call(url: str, session: str, name: str, arguments: dict[str, Any], id: int = 1) -> dict[str, Any]:
    response = post(
        url,
        {
            "jsonrpc": "2.0",
            "id": id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        },
        session,
    )
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def sse(lines: Iterator[str]) -> Iterator[tuple[str | None, str]]:
    """(id, data) of each SSE event, priming events (id, no data) included."""
    event_id, data = None, None
    for line in lines:
        if line.startswith("id: "):
            event_id = line[len("id: ") :]
        elif line.startswith("data: ") or line == "data:":
            data = line[len("data: ") :]
        elif line == "" and data is not None:
            yield event_id, data
            event_id, data = None, None


def error_of(response: httpx2.Response) -> dict[str, Any]:
    return response.json()["error"]  # type: ignore[no-any-return]


def test_lists_and_calls_tools_under_prefixed_names(gateway: str) -> None:
    session = initialize(gateway)
    listed = post(gateway, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session).json()["result"][
        "tools"
    ]
    names = {t["name"] for t in listed}
    assert {"fixture_echo", "fixture_sleep", "fixture_fail"} <= names
    echo = next(t for t in listed if t["name"] == "fixture_echo")
    assert echo["inputSchema"]["properties"]["text"]["type"] == "string"
    answer = call(gateway, session, "fixture_echo", {"text": "through the gateway"})
    assert answer["id"] == 1
    assert answer["result"]["content"] == [{"type": "text", "text": "through the gateway"}]


def test_an_unsupported_version_is_answered_with_the_newest(gateway: str) -> None:
    response = post(
        gateway,
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "1999-01-01",
                "capabilities": {},
                "clientInfo": {"name": "x", "version": "1"},
            },
        },
    )
    assert response.json()["result"]["protocolVersion"] == "2025-11-25"


def test_malformed_json_is_a_parse_error(gateway: str) -> None:
    response = post(gateway, b'{"jsonrpc": "2.0", "id": 1, "method": ', initialize(gateway))
    assert response.status_code == 400
    assert error_of(response)["code"] == -32700
    assert response.json()["id"] is None


def test_a_body_that_is_not_json_rpc_is_an_invalid_request(gateway: str) -> None:
    response = post(gateway, {"hello": "world"}, initialize(gateway))
    assert response.status_code == 400
    assert error_of(response)["code"] == -32600


def test_an_unknown_method_is_method_not_found(gateway: str) -> None:
    response = post(gateway, {"jsonrpc": "2.0", "id": 3, "method": "tools/frobnicate"}, initialize(gateway))
    assert response.status_code == 200
    assert error_of(response)["code"] == -32601
    assert response.json()["id"] == 3


def test_an_unknown_tool_is_invalid_params_naming_the_tool(gateway: str) -> None:
    answer = call(gateway, initialize(gateway), "fixture_nonexistent", {})
    assert answer["error"]["code"] == -32602
    assert "fixture_nonexistent" in answer["error"]["message"]


def test_bad_call_params_are_invalid_params(gateway: str) -> None:
    session = initialize(gateway)
    response = post(
        gateway, {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": 5}}, session
    )
    assert error_of(response)["code"] == -32602
    response = post(
        gateway,
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "tools/call",
            "params": {"name": "fixture_echo", "arguments": [1]},
        },
        session,
    )
    assert error_of(response)["code"] == -32602


def test_arguments_nested_too_deep_are_invalid_params_not_a_fault(gateway: str, gateway_dir: Path) -> None:
    log = gateway_dir / "services.log"
    logged = log.stat().st_size
    session = initialize(gateway)
    for depth in (150, 250, 1_000, 2_000):
        arguments = '{"a":' * depth + "1" + "}" * depth
        body = '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"fixture_echo","arguments":'
        response = post(gateway, (body + arguments + "}}").encode(), session)
        assert response.status_code == 400, depth
        assert error_of(response)["code"] == -32602 and "nests deeper" in error_of(response)["message"]
    with log.open("rb") as written:
        written.seek(logged)
        assert b"Traceback" not in written.read()


def test_requests_without_a_session_are_bad_requests(gateway: str) -> None:
    response = post(gateway, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 400
    assert "Mcp-Session-Id" in error_of(response)["message"]


def test_unknown_and_ended_sessions_are_not_found(gateway: str) -> None:
    forged = post(gateway, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "k1.eyJ2IjoxfQ.forged")
    assert forged.status_code == 404
    session = initialize(gateway)
    ended = httpx2.delete(gateway, headers={"mcp-session-id": session})
    assert ended.status_code == 200
    after = post(gateway, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session)
    assert after.status_code == 404


def test_an_oversized_body_is_refused(gateway: str) -> None:
    big = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "fixture_echo", "arguments": {"text": "x" * MAX_BODY}},
    }
    response = post(gateway, big, initialize(gateway))
    assert response.status_code == 413


def test_http_rules(gateway: str) -> None:
    session = initialize(gateway)
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert post(gateway, ping, session, accept="application/json").status_code == 406
    assert post(gateway, ping, session, **{"content-type": "text/plain"}).status_code == 415
    assert post(gateway, ping, session, origin="https://evil.example").status_code == 403
    assert post(gateway, ping, session, origin="http://localhost:3000").status_code == 200
    # DNS rebinding: a loopback edge answers only requests addressed to a loopback name.
    rebound = post(gateway, ping, session, host="evil.example:8080")
    assert rebound.status_code == 403 and "evil.example" in error_of(rebound)["message"]
    assert post(gateway, ping, session, host="localhost:8080").status_code == 200
    assert post(gateway, ping, session, **{"mcp-protocol-version": "2099-01-01"}).status_code == 400
    assert post(gateway, ping, session, **{"mcp-protocol-version": "2025-06-18"}).json()["result"] == {}
    notification = post(gateway, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    assert (notification.status_code, notification.content) == (202, b"")
    assert httpx2.put(gateway).status_code == 405


def _raw(url: str, request: bytes, *, leave: bool = False) -> bytes:
    """What the edge answers bytes sent as they are (httpx2 refuses to send these); with
    `leave`, the client goes away right after sending them."""
    parsed = httpx2.URL(url)
    with socket.create_connection((parsed.host, parsed.port or 80), timeout=10) as sock:
        sock.sendall(request)
        if leave:
            return b""
        return b"".join(iter(lambda: sock.recv(65536), b""))


def test_two_host_headers_are_a_bad_request(gateway: str) -> None:
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    for path in (b"/mcp", b"/api/servers"):
        answer = _raw(
            gateway,
            b"POST " + path + b" HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n"
            b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            b"Content-Length: " + str(len(ping)).encode() + b"\r\nConnection: close\r\n\r\n" + ping,
        )
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_the_admin_api_checks_host_and_origin_as_mcp_does(gateway: str) -> None:
    api = gateway.replace("/mcp", "/api/servers")
    assert httpx2.get(api, headers={"host": "evil.example"}, timeout=10).status_code == 403
    assert httpx2.get(api, headers={"origin": "https://evil.example"}, timeout=10).status_code == 403
    # Past those checks: the admin API is off in this gateway (no admin token).
    assert httpx2.get(api, headers={"origin": "http://localhost:3000"}, timeout=10).status_code == 401


def test_a_client_that_leaves_mid_body_is_no_error(gateway: str, gateway_dir: Path) -> None:
    log = gateway_dir / "services.log"
    logged = log.stat().st_size
    short = (
        b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b'Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{"jsonrpc"'
    )
    _raw(gateway, short, leave=True)

    def noticed() -> bool:
        with log.open("rb") as written:
            written.seek(logged)
            return b"before sending its whole body" in written.read()

    wait_until(noticed, 10, "the edge noticing the client left")
    with log.open("rb") as written:
        written.seek(logged)
        tail = written.read()
    assert b"Traceback" not in tail and b"ERROR" not in tail, tail[-2000:]


def test_an_idle_get_stream_sends_keepalive_comments(gateway: str) -> None:
    headers = {"accept": "text/event-stream", "mcp-session-id": initialize(gateway)}
    with httpx2.stream("GET", gateway, headers=headers, timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == ": stream open"
        assert next(line for line in lines if line) == ": keepalive"


def test_a_request_without_a_version_header_is_taken_as_2025_03_26(gateway: str) -> None:
    session = initialize(gateway, "2025-03-26")
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert "mcp-protocol-version" not in post(gateway, ping, session).request.headers
    assert post(gateway, ping, session).json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


def test_batches_only_where_the_revision_allows_them(gateway: str) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    refused = post(gateway, batch, initialize(gateway, "2025-06-18"))
    assert refused.status_code == 400
    assert error_of(refused)["code"] == -32600
    answered = post(gateway, batch, initialize(gateway, "2025-03-26")).json()
    assert [a["id"] for a in answered] == [1, 2]
    assert "tools" in answered[1]["result"]


def test_a_downstream_tool_error_comes_back_as_a_result(gateway: str) -> None:
    answer = call(gateway, initialize(gateway), "fixture_fail", {"reason": "quota exceeded"})
    assert answer["result"]["isError"] is True
    assert "quota exceeded" in answer["result"]["content"][0]["text"]


def test_a_call_that_sends_nothing_first_answers_with_json(gateway: str) -> None:
    session = initialize(gateway)
    body = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "fixture_sleep", "arguments": {"seconds": 0.01}, "_meta": {"progressToken": "p1"}},
    }
    response = post(gateway, body, session)
    # The fixture's sleep sends no progress, so the answer stays plain JSON.
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["result"]["content"][0]["text"] == "slept 0.01"


def counting(session: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 10,
        "method": "tools/call",
        "params": {"name": "fixture_count", "arguments": {"to": 3}, "_meta": {"progressToken": "c1"}},
    }


def test_progress_streams_as_resumable_sse_before_the_result(gateway: str) -> None:
    session = initialize(gateway, "2025-11-25")
    response = post(gateway, counting(session), session)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = list(sse(iter(response.text.splitlines())))
    # A priming event first: an id and no data, with the retry interval to resume after.
    priming_id, priming = events[0]
    assert priming == "" and priming_id is not None and priming_id.endswith(".0")
    assert "retry: 1000" in response.text.split("\n\n")[0]
    stream = priming_id.split(".")[0]
    assert [event_id for event_id, _ in events[1:]] == [f"{stream}.{n}" for n in range(1, 5)]
    messages = [json.loads(data) for _, data in events[1:]]
    assert [m["params"]["progress"] for m in messages[:3]] == [1, 2, 3]
    assert messages[3]["result"]["content"][0]["text"] == "counted to 3"
    # Resuming after the second progress event replays the rest of that stream.
    headers = {"accept": "text/event-stream", "mcp-session-id": session, "last-event-id": f"{stream}.2"}
    with httpx2.stream("GET", gateway, headers=headers, timeout=30) as resumed:
        replayed = list(sse(resumed.iter_lines()))
    assert [event_id for event_id, _ in replayed] == [f"{stream}.3", f"{stream}.4"]


def test_older_revisions_get_sse_without_event_ids(gateway: str) -> None:
    session = initialize(gateway, "2025-06-18")
    response = post(gateway, counting(session), session)
    events = list(sse(iter(response.text.splitlines())))
    assert [event_id for event_id, _ in events] == [None] * 4
    assert json.loads(events[-1][1])["result"]["content"][0]["text"] == "counted to 3"


def test_an_unknown_last_event_id_is_not_found(gateway: str) -> None:
    session = initialize(gateway)
    for last in ("garbage", "0123456789abcdef.1"):
        headers = {"accept": "text/event-stream", "mcp-session-id": session, "last-event-id": last}
        assert httpx2.get(gateway, headers=headers, timeout=10).status_code == 404, last


def test_a_list_change_reaches_the_get_stream(gateway: str) -> None:
    session = initialize(gateway)
    headers = {"accept": "text/event-stream", "mcp-session-id": session}
    with httpx2.stream("GET", gateway, headers=headers, timeout=30) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(lines).startswith(": stream open")
        added = call(gateway, session, "fixture_add_tool", {"name": "shout"})
        assert added["result"]["content"][0]["text"] == "added shout"
        data = next(line for line in lines if line.startswith("data: "))
        assert json.loads(data[len("data: ") :]) == {
            "jsonrpc": "2.0",
            "method": "notifications/tools/list_changed",
        }
    listed = post(gateway, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session).json()["result"][
        "tools"
    ]
    assert "fixture_shout" in {t["name"] for t in listed}
    assert (
        call(gateway, session, "fixture_shout", {"text": "hi"})["result"]["content"][0]["text"] == "shout: hi"
    )


def test_a_downstream_crash_is_an_error_result_and_the_server_comes_back(gateway: str) -> None:
    session = initialize(gateway)
    crashed = call(gateway, session, "fixture_crash", {})
    assert crashed["result"]["isError"] is True
    assert "fixture" in crashed["result"]["content"][0]["text"]

    def echo_works() -> bool:
        # While the server reconnects its tools are withdrawn, so "Unknown tool" is expected too.
        answer = call(gateway, session, "fixture_echo", {"text": "again"})
        return "result" in answer and not answer["result"].get("isError")

    wait_until(echo_works, 20, "fixture server reconnected")


def test_calls_are_audited(gateway: str, gateway_dir: Path) -> None:
    session = initialize(gateway)
    call(gateway, session, "fixture_echo", {"text": "audit me"}, id=4242)
    spans = gateway_dir / "spans.jsonl"

    def audited() -> bool:
        if not spans.exists():
            return False
        records = [json.loads(line) for line in spans.read_text().splitlines()]
        return any(r["attributes"].get("jsonrpc.request.id") == "4242" for r in records)

    wait_until(audited, 15, "audit record of request 4242")


def rpc(url: str, session: str, method: str, params: dict[str, Any] | None = None) -> httpx2.Response:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method}
    if params is not None:
        body["params"] = params
    return post(url, body, session)


def test_a_server_endpoint_serves_that_server_unprefixed(gateway: str) -> None:
    url = f"{gateway}/fixture"
    session = initialize(url)
    names = {t["name"] for t in rpc(url, session, "tools/list").json()["result"]["tools"]}
    assert {"echo", "sleep", "fail"} <= names and not any(n.startswith("fixture_") for n in names)
    answer = call(url, session, "echo", {"text": "one server"})
    assert answer["result"]["content"] == [{"type": "text", "text": "one server"}]
    # Prefixed names belong to /mcp only.
    assert error_of(rpc(url, session, "tools/call", {"name": "fixture_echo"}))["code"] == -32602


def test_an_unknown_endpoint_is_not_found(gateway: str) -> None:
    response = post(f"{gateway}/ghost", {"jsonrpc": "2.0", "id": 0, "method": "ping"})
    assert response.status_code == 404
    assert "ghost" in error_of(response)["message"]


def test_a_session_belongs_to_the_endpoint_it_was_opened_on(gateway: str) -> None:
    session = initialize(gateway)
    response = rpc(f"{gateway}/fixture", session, "tools/list")
    assert response.status_code == 404
    assert error_of(response)["code"] == -32001


def test_unknown_prompts_resources_and_cursors_are_clear_errors(gateway: str) -> None:
    session = initialize(gateway)
    prompt = error_of(rpc(gateway, session, "prompts/get", {"name": "fixture_nothing"}))
    assert prompt["code"] == -32602 and "fixture_nothing" in prompt["message"]
    resource = error_of(rpc(gateway, session, "resources/read", {"uri": "mcpgw://ghost/test://none"}))
    assert resource["code"] == -32002 and resource["data"] == {"uri": "mcpgw://ghost/test://none"}
    assert error_of(rpc(gateway, session, "resources/read", {"uri": "test://none"}))["code"] == -32002
    # A URI that names a visible server goes to it; its own error comes back as it answered.
    downstream = error_of(rpc(gateway, session, "resources/read", {"uri": "mcpgw://fixture/test://none"}))
    assert "test://none" in downstream["message"]
    assert error_of(rpc(gateway, session, "resources/read", {"uri": 5}))["code"] == -32602
    assert error_of(rpc(gateway, session, "tools/list", {"cursor": "not-ours"}))["code"] == -32602
    assert error_of(rpc(gateway, session, "logging/setLevel", {"level": "loud"}))["code"] == -32602
    assert rpc(gateway, session, "logging/setLevel", {"level": "debug"}).json()["result"] == {}
    ref = {"ref": {"type": "ref/nothing"}, "argument": {"name": "a", "value": ""}}
    assert error_of(rpc(gateway, session, "completion/complete", ref))["code"] == -32602


def test_a_client_cancellation_reaches_the_downstream(gateway: str, tmp_path: Path) -> None:
    session = initialize(gateway)
    marker = tmp_path / "cancelled"
    body = {
        "jsonrpc": "2.0",
        "id": "long-1",
        "method": "tools/call",
        "params": {"name": "fixture_wait_for_cancel", "arguments": {"marker": str(marker)}},
    }
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, gateway, body, session)
        # Cancelled once the downstream is waiting in it (a request cancelled before its handler
        # starts never runs it, and so never writes the marker).
        wait_until(lambda: Path(f"{marker}.started").exists(), 20, "the downstream waiting in the call")
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "long-1"}}
        assert post(gateway, cancel, session).status_code == 202
        wait_until(answer.done, 20, "the call cancelled")
        result = answer.result().json()
    assert result["id"] == "long-1"
    assert result["result"]["isError"] is True and "cancelled" in result["result"]["content"][0]["text"]
    wait_until(lambda: marker.exists(), 10, "the downstream's request cancelled")


def test_a_server_endpoint_passes_the_server_instructions_and_the_aggregate_merges_them(gateway: str) -> None:
    response = post(
        f"{gateway}/fixture",
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}},
        },
    )
    result = response.json()["result"]
    assert result["instructions"] == "Echo things back; count with progress."
    aggregate = post(
        gateway,
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}},
        },
    ).json()["result"]
    assert "## fixture\nEcho things back; count with progress." in aggregate["instructions"]
