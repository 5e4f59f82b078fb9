"""Revision 2026-07-28 at the edge, rule by rule, with raw HTTP requests."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from tests.integration.test_gateway_http import initialize

MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def envelope(**extra: Any) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-modern", "version": "1"},
        **extra,
    }


def send(
    url: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    id: int | None = 1,
    headers: dict[str, str] | None = None,
    meta: dict[str, Any] | None = None,
) -> httpx2.Response:
    """A 2026-07-28 request with the envelope and routing headers a conforming client sends."""
    params = {**(params or {}), "_meta": envelope() if meta is None else meta}
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if id is not None:
        body["id"] = id
    sent = {
        "accept": ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": method,
    }
    if method in NAMED:
        sent["mcp-name"] = str(params.get(NAMED[method]))
    sent.update(headers or {})
    response = httpx2.post(url, content=json.dumps(body), headers=sent, timeout=30)
    assert response.status_code != 500, response.text
    return response


def test_discover_describes_the_gateway_without_a_session(gateway: str) -> None:
    response = send(gateway, "server/discover")
    assert response.status_code == 200 and "mcp-session-id" not in response.headers
    result = response.json()["result"]
    assert MODERN in result["supportedVersions"] and "2025-11-25" in result["supportedVersions"]
    assert result["capabilities"]["tools"] == {"listChanged": True}
    assert (result["resultType"], result["ttlMs"], result["cacheScope"]) == ("complete", 0, "private")


def test_lists_and_calls_need_no_handshake(gateway: str) -> None:
    listed = send(gateway, "tools/list").json()["result"]
    assert "fixture_echo" in {t["name"] for t in listed["tools"]}
    assert listed["resultType"] == "complete" and "ttlMs" in listed
    answer = send(gateway, "tools/call", {"name": "fixture_echo", "arguments": {"text": "stateless"}})
    assert answer.status_code == 200
    result = answer.json()["result"]
    assert result["content"][0]["text"] == "stateless" and result["resultType"] == "complete"


def test_the_version_header_must_match_the_envelope(gateway: str) -> None:
    response = send(
        gateway, "tools/list", meta=envelope(**{"io.modelcontextprotocol/protocolVersion": "2099-01-01"})
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32020


def test_routing_headers_must_match_the_body(gateway: str) -> None:
    wrong_method = send(gateway, "tools/list", headers={"mcp-method": "prompts/list"})
    assert (wrong_method.status_code, wrong_method.json()["error"]["code"]) == (400, -32020)
    wrong_name = send(gateway, "tools/call", {"name": "fixture_echo"}, headers={"mcp-name": "fixture_fail"})
    assert (wrong_name.status_code, wrong_name.json()["error"]["code"]) == (400, -32020)


def test_a_request_without_the_envelope_is_invalid_params(gateway: str) -> None:
    response = send(gateway, "tools/list", meta={})
    assert (response.status_code, response.json()["error"]["code"]) == (400, -32602)
    assert "_meta" in response.json()["error"]["message"]


def test_an_unsupported_version_names_the_supported_ones(gateway: str) -> None:
    version = "2099-01-01"
    response = send(
        gateway,
        "tools/list",
        headers={"mcp-protocol-version": version},
        meta=envelope(**{"io.modelcontextprotocol/protocolVersion": version}),
    )
    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, -32022)
    assert error["data"] == {"supported": [MODERN], "requested": version}


def test_unknown_and_removed_methods_are_404_method_not_found(gateway: str) -> None:
    for method in ("no/such/method", "ping", "initialize", "logging/setLevel", "resources/subscribe"):
        response = send(gateway, method)
        assert (response.status_code, response.json()["error"]["code"]) == (404, -32601), method
        assert response.json()["id"] == 1


def test_an_unknown_tool_is_400_invalid_params(gateway: str) -> None:
    response = send(gateway, "tools/call", {"name": "fixture_nothing", "arguments": {}})
    assert (response.status_code, response.json()["error"]["code"]) == (400, -32602)
    assert "fixture_nothing" in response.json()["error"]["message"]


def test_a_forged_request_state_is_refused(gateway: str) -> None:
    params = {"name": "fixture_echo", "arguments": {"text": "x"}, "requestState": "edge-1.abc.forged"}
    response = send(gateway, "tools/call", params)
    assert (response.status_code, response.json()["error"]["code"]) == (400, -32602)
    assert "requestState" in response.json()["error"]["message"]


def test_a_session_id_is_not_taken_for_a_request_state(gateway: str) -> None:
    # Both are tokens the edge signs with one secret; each says what it is.
    session_id = initialize(gateway)
    params = {"name": "fixture_echo", "arguments": {"text": "x"}, "requestState": session_id}
    response = send(gateway, "tools/call", params)
    assert (response.status_code, response.json()["error"]["code"]) == (400, -32602)
    assert "requestState" in response.json()["error"]["message"]


def test_get_and_delete_are_not_allowed(gateway: str) -> None:
    for method in ("GET", "DELETE"):
        response = httpx2.request(
            method, gateway, headers={"accept": ACCEPT, "mcp-protocol-version": MODERN}, timeout=10
        )
        assert (response.status_code, response.headers["allow"]) == (405, "POST")


def test_bodies_that_are_not_one_request_are_refused(gateway: str) -> None:
    headers = {"accept": ACCEPT, "content-type": "application/json", "mcp-protocol-version": MODERN}
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": envelope()}}]
    for body in (batch, {"jsonrpc": "2.0", "id": 1, "result": {}}):
        response = httpx2.post(gateway, content=json.dumps(body), headers=headers, timeout=10)
        assert (response.status_code, response.json()["error"]["code"]) == (400, -32600)
    parse = httpx2.post(gateway, content=b"{", headers=headers, timeout=10)
    assert (parse.status_code, parse.json()["error"]["code"]) == (400, -32700)


def test_a_notification_is_accepted(gateway: str) -> None:
    response = send(gateway, "notifications/cancelled", {"requestId": 7}, id=None)
    assert response.status_code == 202 and response.content == b""


def test_a_duplicated_routing_header_is_refused(gateway: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": envelope()}}
    headers = [
        ("accept", ACCEPT),
        ("content-type", "application/json"),
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/list"),
        ("mcp-method", "tools/list"),
    ]
    response = httpx2.post(gateway, content=json.dumps(body), headers=headers, timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (400, -32020)


def test_listen_acknowledges_then_streams_the_changes_asked_for(gateway: str) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": "listen-1",
        "method": "subscriptions/listen",
        "params": {"notifications": {"toolsListChanged": True, "bogus": True}, "_meta": envelope()},
    }
    headers = {
        "accept": ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": "subscriptions/listen",
    }
    subscription = {"io.modelcontextprotocol/subscriptionId": "listen-1"}
    with httpx2.stream("POST", gateway, content=json.dumps(body), headers=headers, timeout=30) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = (json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: "))
        ack = next(events)
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"] == {"notifications": {"toolsListChanged": True}, "_meta": subscription}
        added = send(gateway, "tools/call", {"name": "fixture_add_tool", "arguments": {"name": "modern"}})
        assert added.json()["result"]["content"][0]["text"] == "added modern"
        change = next(events)
        assert change == {
            "jsonrpc": "2.0",
            "method": "notifications/tools/list_changed",
            "params": {"_meta": subscription},
        }
    assert "fixture_modern" in {t["name"] for t in send(gateway, "tools/list").json()["result"]["tools"]}


def test_mcp_param_headers_must_agree_with_the_arguments_they_mirror(gateway: str) -> None:
    listed = send(gateway, "tools/list").json()["result"]["tools"]
    schema = next(t for t in listed if t["name"] == "fixture_weather")["inputSchema"]
    assert schema["properties"]["region"]["x-mcp-header"] == "Region"
    params = {"name": "fixture_weather", "arguments": {"region": "eu-west"}}
    agreed = send(gateway, "tools/call", params, headers={"mcp-param-region": "eu-west"})
    assert agreed.json()["result"]["content"][0]["text"] == "sunny in eu-west"
    for headers in ({}, {"mcp-param-region": "us-east"}):
        refused = send(gateway, "tools/call", params, headers=headers)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, -32020), headers
        assert "Mcp-Param-Region" in refused.json()["error"]["message"]
