"""The hostile-input drill's generator (bench/hostile.py), without a gateway: the same cases
for a seed, every category, the deep and invalid-UTF-8 cases, schema-true MCP params, and
the wire and classification of what it sends and reads."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from typing import Any

import mcp.types as mcp_types
import pytest
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from bench import hostile
from bench.hostile import Bulk, Case, Live, Surface
from services.edge.admin import GroupIn, KeyIn

ECHO = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
OPENAPI: dict[str, Any] = {
    "paths": {
        "/api/keys": {
            "get": {},
            "post": {
                "requestBody": {
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyIn"}}}
                }
            },
        },
        "/api/keys/{key_id}": {"get": {}, "delete": {}},
        "/api/servers": {
            "post": {"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}}
        },
    },
    "components": {
        "schemas": {"KeyIn": KeyIn.model_json_schema(ref_template="#/components/schemas/{model}")}
    },
}
OPENAPI["components"]["schemas"].update(
    KeyIn.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs", {})
)
SURFACE = Surface("echo", ECHO, hostile.operations(OPENAPI), OPENAPI)
REQUESTS = 1200
LIVE = Live(
    {name: f"live-{name}" for name in hostile.LIVE_NAMES}
    | {"session": "k1.claims.signature", "host": "127.0.0.1:9", "admin": "admin-token"}
)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return hostile.generate(SURFACE, REQUESTS, seed=1)


def messages(cases: list[Case]) -> Iterator[tuple[Case, Any]]:
    """Each case whose body is JSON, with that JSON."""
    for case in cases:
        if isinstance(case.body, bytes):
            try:
                yield case, json.loads(case.body)
            except (ValueError, RecursionError):
                continue


def test_a_seed_gives_the_same_cases_and_another_seed_others(cases: list[Case]) -> None:
    assert hostile.generate(SURFACE, REQUESTS, seed=1) == cases
    other = hostile.generate(SURFACE, 200, seed=2)
    assert other != hostile.generate(SURFACE, 200, seed=1)
    assert len(cases) == REQUESTS


def test_every_category_is_generated_in_its_share(cases: list[Case]) -> None:
    counts = {name: sum(c.category == name for c in cases) for name in hostile.CATEGORIES}
    assert counts == hostile.quotas(REQUESTS)
    assert all(counts.values())
    assert sum(hostile.quotas(10_000).values()) == 10_000


def test_deep_nesting_goes_past_a_thousand_levels_and_near_the_limits(cases: list[Case]) -> None:
    deep = [c for c in cases if c.category == "deep nesting"]
    depths = [c.body.count for c in deep if isinstance(c.body, Bulk)]
    assert len(depths) == len(deep)
    assert max(depths) >= 10_000
    assert any(d >= 1000 for d in depths) and any(200 <= d <= 300 for d in depths)
    balanced = next(c for c in deep if isinstance(c.body, Bulk) and c.body.close_count == c.body.count)
    assert isinstance(balanced.body, Bulk)
    body = hostile.wire(balanced, LIVE).partition(b"\r\n\r\n")[2]
    assert body.count(b"[") + body.count(b"{") >= balanced.body.count


def test_invalid_utf8_reaches_bodies_headers_and_paths(cases: list[Case]) -> None:
    invalid = [hostile.wire(c, LIVE) for c in cases if c.category == "invalid utf-8"]
    broken = [data for data in invalid if hostile.is_invalid_utf8(data)]
    assert len(broken) >= len(invalid) // 2
    heads = [data.partition(b"\r\n\r\n")[0] for data in broken]
    assert any(hostile.is_invalid_utf8(head.partition(b" HTTP/")[0]) for head in heads), "none in a path"
    assert any(hostile.is_invalid_utf8(head.partition(b"\r\n")[2]) for head in heads), "none in a header"
    assert any(rb"\ud800" in data for data in invalid), "no escaped lone surrogate"


def test_every_mcp_method_is_sent_valid_and_type_violating(cases: list[Case]) -> None:
    sent = [m for c, m in messages(cases) if c.category == "mcp params"]
    assert {m["method"] for m in sent} == set(hostile.METHODS)
    assert {"initialize", "tools/call", "resources/read", "prompts/get", "logging/setLevel"} <= set(
        hostile.METHODS
    )
    assert {"completion/complete", "tasks/get", "tasks/result", "tasks/cancel", "tasks/list"} <= set(
        hostile.METHODS
    )
    calls = [m for m in sent if m["method"] == "tools/call" and isinstance(m["params"], dict)]
    assert any(m["params"].get("name") == hostile.mark("tool") for m in calls), (
        "the real tool is never called"
    )


def test_both_protocol_generations_and_every_endpoint_are_used(cases: list[Case]) -> None:
    heads = [hostile.wire(c, LIVE).partition(b"\r\n\r\n")[0] for c in cases]
    assert any(b"mcp-protocol-version: 2025-11-25" in h and b"mcp-session-id: k1.claims" in h for h in heads)
    assert any(b"mcp-protocol-version: 2026-07-28" in h and b"mcp-session-id" not in h for h in heads)
    for target in (
        b"POST /mcp ",
        b"POST /mcp/live-server ",
        b"POST /messages?session_id=live-legacy ",
        b"GET /sse",
        b"/api/",
    ):
        assert any(target in h for h in heads), target


def test_forged_tokens_are_never_the_live_ones() -> None:
    for value in ("k1.abc.def", "AAAA", "1234", "", "a.b"):
        for op in hostile.OPS:
            for arg in (0, 1, 3, 77):
                assert hostile.forge(value, op, arg) != value
    # The real token goes with reads only, or with bodies that cannot be valid.
    admin = hostile.CATEGORIES["admin api"][1](SURFACE)
    for case in hostile.draw_many(admin, 300, seed=5):
        if (
            b"Bearer " + hostile.bmark("admin") in dict(case.headers).get(b"authorization", b"")
            and case.method != b"GET"
        ):
            assert case.target.startswith(b"/api/keys") and case.method == b"POST"
            assert isinstance(case.body, bytes)
            with pytest.raises(ValidationError):
                KeyIn.model_validate_json(case.body)


@pytest.mark.parametrize("method", hostile.METHODS)
def test_violating_params_break_the_protocols_own_model(method: str) -> None:
    schema = hostile.METHOD_SCHEMAS[method]
    model = adapter_for(method)
    for value in hostile.draw_many(hostile.violating(schema, schema), 25, seed=3):
        with pytest.raises(ValidationError):
            model.model_validate_json(json.dumps(value), strict=True)


@pytest.mark.parametrize("model", [KeyIn, GroupIn])
def test_refused_bodies_fail_even_lax_validation(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    for value in hostile.draw_many(hostile.violating(schema, schema, coercible=False), 50, seed=4):
        with pytest.raises(ValidationError):
            model.model_validate_json(json.dumps(value))


def adapter_for(method: str) -> type[BaseModel]:
    """The pydantic model of `method`'s params."""
    tasks = [mcp_types.GetTaskRequest, mcp_types.GetTaskPayloadRequest, mcp_types.CancelTaskRequest]
    for request in [*typing.get_args(mcp_types.ClientRequest), *tasks, mcp_types.ListTasksRequest]:
        if typing.get_args(request.model_fields["method"].annotation)[0] == method:
            params = request.model_fields["params"].annotation
            return next(
                a
                for a in (*typing.get_args(params), params)
                if isinstance(a, type) and issubclass(a, BaseModel)
            )
    raise AssertionError(method)


def test_wire_frames_bodies_as_the_case_says() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    case = Case(
        "t",
        b"POST",
        b"/mcp/" + hostile.bmark("server"),
        ((b"mcp-session-id", hostile.bmark("session")),),
        body,
    )
    head, _, sent = hostile.wire(case, LIVE).partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[:3] == [
        b"POST /mcp/live-server HTTP/1.1",
        b"host: 127.0.0.1:9",
        b"mcp-session-id: k1.claims.signature",
    ]
    assert b"content-length: %d" % len(body) in head and sent == body
    chunked = hostile.wire(Case("t", b"POST", b"/mcp", body=body, framing="chunked", chunk=7), LIVE)
    chunks = chunked.partition(b"\r\n\r\n")[2]
    assert (
        chunks.endswith(b"0\r\n\r\n")
        and b"".join(re.findall(rb"[0-9a-f]+\r\n(.*?)\r\n", chunks, re.S)) == body
    )
    short = hostile.wire(Case("t", b"POST", b"/mcp", body=body, framing="short", chunk=10), LIVE)
    assert b"content-length: %d" % (len(body) + 10) in short
    forged = hostile.wire(Case("t", b"GET", b"/" + hostile.bmark("session", "flip", 0)), LIVE)
    assert forged.startswith(b"GET /A1.claims.signature ")


def test_classify_finds_leaks_that_are_not_echoes() -> None:
    def answer(body: bytes, media: bytes = b"application/json") -> hostile.Answer:
        return hostile.Answer(status=200, headers=[(b"content-type", media)], body=bytearray(body))

    trace = b'Traceback (most recent call last):\n  File "/x/site-packages/a.py", line 3'
    assert hostile.classify(answer(trace), b"").leak.startswith("Traceback")
    assert hostile.classify(answer(b'{"m": "KeyError: 1"}'), b"").leak == "KeyError"
    assert hostile.classify(answer(b'{"m": "orjson.JSONDecodeError"}'), b"").leak == "JSONDecodeError"
    assert hostile.classify(answer(b"services/edge/app.py"), b"").leak == "services/edge/app.py"
    assert hostile.classify(answer(b'{"text": "FooError"}'), b'{"text": "FooError"}').leak == ""
    assert hostile.classify(answer(b'{"error": "Internal error"}'), b"").leak == ""
    error = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}'
    assert hostile.classify(answer(error), b"").codes == (-32602,)
    assert hostile.classify(answer(b"data: " + error + b"\n\n", b"text/event-stream"), b"").codes == (-32602,)
    assert hostile.classify(answer(b"[" + error + b"," + error + b"]"), b"").codes == (-32602, -32602)
    assert hostile.classify(hostile.Answer(timed_out=True), b"").status == "timeout"


def test_a_tally_counts_and_keeps_the_worst_findings() -> None:
    tally = hostile.Tally()
    case = Case("framing", b"POST", b"/mcp", body=b"{}")
    for status in (200, 500, 400):
        answer = hostile.Answer(
            status=status, body=bytearray(b"Traceback (most recent call last)" if status == 400 else b"x")
        )
        tally.add(7, case, b"POST /mcp", answer, hostile.classify(answer, b""))
    result = tally.result()
    assert result["by_status"] == {"200": 1, "400": 1, "500": 1}
    assert (result["5xx"], result["leaks"]) == (1, 1)
    assert result["examples"][0].startswith("5xx (framing, case 7)")
    assert json.loads(json.dumps(result)) == result


def test_draw_many_tops_up_a_small_space() -> None:
    assert sorted(set(hostile.draw_many(st.sampled_from([1, 2, 3]), 10, seed=0))) == [1, 2, 3]
