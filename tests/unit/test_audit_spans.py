"""The edge's SERVER spans as audit builds them from records: ids, names, attributes."""

from __future__ import annotations

from opentelemetry.trace import SpanKind, StatusCode

from services.audit.exporters import SpanBuilder, span_attributes
from services.contracts import events_pb2
from services.operations import method_of, span_name


def record(**fields: object) -> events_pb2.OperationEvent:
    base: dict[str, object] = {
        "event_id": "e1",
        "method": "tools/call",
        "exposed_name": "srv_t",
        "server": "srv",
        "tool": "t",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "1111111111111111",
        "parent_span_id": "00f067aa0ba902b7",
        "sampled": True,
        "start_unix_nano": 1_000,
        "end_unix_nano": 2_000,
        "outcome": events_pb2.OUTCOME_OK,
    }
    return events_pb2.OperationEvent(**{**base, **fields})  # type: ignore[arg-type]


def test_the_span_keeps_the_edge_ids_and_the_clients_parent() -> None:
    (span,) = SpanBuilder().build([record()])
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert span.context.span_id == 0x1111111111111111
    assert span.parent.span_id == 0x00F067AA0BA902B7 and span.parent.is_remote
    assert span.kind is SpanKind.SERVER and span.name == "tools/call srv_t"
    assert (span.start_time, span.end_time) == (1_000, 2_000)
    assert span.resource.attributes["service.name"] == "mcpgw-edge"
    assert span.status.status_code is StatusCode.UNSET


def test_a_trace_the_edge_started_has_no_parent() -> None:
    (span,) = SpanBuilder().build([record(parent_span_id="")])
    assert span.parent is None


def test_errors_are_typed_by_their_json_rpc_code_and_tool_errors_as_tool_error() -> None:
    failed = record(outcome=events_pb2.OUTCOME_ERROR, error_code=-32602, error_message="Unknown tool: x")
    tool_error = record(outcome=events_pb2.OUTCOME_TOOL_ERROR)
    spans = SpanBuilder().build([failed, tool_error])
    assert spans[0].attributes is not None and spans[1].attributes is not None
    assert spans[0].attributes["error.type"] == "-32602"
    assert spans[0].attributes["rpc.response.status_code"] == "-32602"
    assert spans[0].status.status_code is StatusCode.ERROR
    assert spans[0].status.description == "Unknown tool: x"
    assert (
        spans[1].attributes["error.type"] == "tool_error"
        and "rpc.response.status_code" not in spans[1].attributes
    )


def test_names_and_attributes_follow_the_method() -> None:
    prompt = record(method="prompts/get", exposed_name="greet")
    resource = record(method="resources/read", exposed_name="file:///etc/motd")
    listing = record(method="tools/list", exposed_name="")
    assert [span_name(method_of(r), r.exposed_name) for r in (prompt, resource, listing)] == [
        "prompts/get greet",
        "resources/read",
        "tools/list",
    ]
    assert span_attributes(prompt)["gen_ai.prompt.name"] == "greet"
    assert span_attributes(resource)["mcp.resource.uri"] == "file:///etc/motd"
    assert "gen_ai.tool.name" not in span_attributes(listing)
    # Events of edges older than `method` were tool calls.
    assert span_attributes(record(method=""))["mcp.method.name"] == "tools/call"


def test_ids_that_are_not_w3c_hex_do_not_break_the_export() -> None:
    (span,) = SpanBuilder().build([record(trace_id="zz", span_id="", parent_span_id="short")])
    assert span.context is not None and span.context.is_valid and span.parent is None


def test_the_audit_files_line_is_the_sdks_json_of_the_span() -> None:
    import json

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, SpanContext, Status

    from services.audit.exporters import _one_line

    built = SpanBuilder().build(
        [
            record(),
            record(event_id="e2", parent_span_id="", outcome=events_pb2.OUTCOME_ERROR, error_message="ü"),
        ]
    )
    other = SpanContext(0xABC, 0xDEF, False)
    by_hand = ReadableSpan(
        "x",
        context=SpanContext(0x1, 0x2, False),
        resource=Resource.create({"service.name": "s", "n": 3}),
        attributes={"a": "é", "b": 2, "c": (1, 2), "d": True, "f": 0.5},
        events=(Event("ev", {"k": "v"}, 5_000_000_123),),
        links=(Link(other, {"l": 1}),),
        status=Status(StatusCode.ERROR, "broke"),
        start_time=1_700_000_000_123_456_789,
        end_time=1_700_000_001_000_000_000,
    )
    for span in [*built, by_hand]:
        line = _one_line(span)
        assert line.endswith("\n") and "\n" not in line[:-1]
        assert json.loads(line) == json.loads(span.to_json(indent=None))
