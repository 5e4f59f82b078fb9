"""What an operation's record says: its trace, its target, its payloads."""

from __future__ import annotations

import orjson
import pytest

from services.edge.records import MAX_PAYLOAD_BYTES, Payloads, Sender, target_of, trace_of
from services.telemetry import continue_trace

CLIENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_meta_trace_context_comes_before_the_headers() -> None:
    headers = Sender(traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    trace = trace_of(headers, {"_meta": {"traceparent": CLIENT, "tracestate": "rojo=1"}})
    assert (trace.trace_id, trace.parent_span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert trace.tracestate == "rojo=1" and trace.sampled
    assert trace.span_id not in ("", trace.parent_span_id) and len(trace.span_id) == 16
    from_headers = trace_of(headers, {"name": "x"})
    assert (from_headers.trace_id, from_headers.parent_span_id) == ("ab" * 16, "cd" * 8)


@pytest.mark.parametrize(
    "traceparent",
    [
        None,
        7,
        "",
        "00-not-a-trace-01",
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace id: invalid
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff is forbidden
    ],
)
def test_anything_but_valid_trace_context_starts_a_new_trace(traceparent: object) -> None:
    trace = continue_trace(traceparent)
    assert trace.parent_span_id == "" and len(trace.trace_id) == 32 and trace.trace_id != "0" * 32


def test_a_new_trace_follows_the_configured_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    from services import telemetry

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    telemetry._sampler.cache_clear()
    try:
        assert not continue_trace().sampled
        assert continue_trace().traceparent.endswith("-00")
        # A caller's decision is kept whatever the sampler says.
        assert continue_trace(CLIENT).sampled
    finally:
        telemetry._sampler.cache_clear()


def test_a_client_that_did_not_sample_is_not_sampled_below() -> None:
    trace = continue_trace(CLIENT[:-2] + "00")
    assert not trace.sampled and trace.traceparent == f"00-{trace.trace_id}-{trace.span_id}-00"


@pytest.mark.parametrize(
    ("method", "params", "target"),
    [
        ("prompts/get", {"name": "greet"}, "greet"),
        ("resources/read", {"uri": "file:///a"}, "file:///a"),
        ("resources/subscribe", {"uri": "file:///b"}, "file:///b"),
        ("completion/complete", {"ref": {"type": "ref/prompt", "name": "greet"}}, "greet"),
        ("completion/complete", {"ref": "nonsense"}, ""),
        ("prompts/get", {"name": ["not", "a", "name"]}, ""),
        ("tools/list", {}, ""),
    ],
)
def test_the_target_is_the_name_the_client_gave(method: str, params: dict[str, object], target: str) -> None:
    assert target_of(method, params) == target


def test_payloads_are_off_by_default_and_bounded_when_on() -> None:
    assert Payloads().of(b'{"a":1}') == b""
    on = Payloads(True, frozenset({"secret"}))
    assert orjson.loads(on.of(b"not json")) == {"truncated": True, "bytes": 8}
    # Nested past what orjson writes back: marked, never an exception that costs the record.
    deep = b"[" * 300 + b"]" * 300
    assert orjson.loads(on.of(deep)) == {"truncated": True, "bytes": 600}
    assert orjson.loads(on.of(b'{"Secret":{"deep":1},"list":[{"secret":2}],"ok":3}')) == {
        "Secret": "<redacted>",
        "list": [{"secret": "<redacted>"}],
        "ok": 3,
    }
    huge = orjson.dumps({"text": "x" * (MAX_PAYLOAD_BYTES + 1)})
    assert orjson.loads(on.of(huge)) == {"truncated": True, "bytes": len(huge)}
