"""One trace end to end, over real OTLP: the client's span, the edge's SERVER span, the
connector's CLIENT span, and the downstream receiving the context; every MCP operation
recorded with the semantic conventions' attributes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE

from services.metrics import DURATION_BUCKETS
from services.up.main import free_port
from tests.integration.conftest import FIXTURE
from tests.integration.test_gateway_http import initialize, post
from tests.otlp import OtlpReceiver, ReceivedHistogram, ReceivedSpan, otlp_receiver
from tests.processes import ROOT, port_open, python_script, running, service_tree, stdio_server, wait_until

CONFORMANCE = ROOT / "tests" / "servers" / "conformance_server.py"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # OTLP span kinds
ERROR = 2  # OTLP status code
VERSION = "2025-11-25"


class Traced:
    def __init__(self, mcp: str, receiver: OtlpReceiver, http_port: int, log: Path) -> None:
        self.mcp = mcp
        self.log = log
        self.receiver = receiver
        self.http_port = http_port
        self.session = initialize(mcp, VERSION)
        self._ids = iter(range(100, 10_000))

    def send(self, method: str, params: dict[str, Any], **headers: str) -> tuple[str, dict[str, Any]]:
        """The request's id and its answer."""
        request_id = str(next(self._ids))
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        answer = post(self.mcp, body, self.session, **headers)
        assert answer.status_code == 200, answer.text
        return request_id, answer.json()

    def server_span(self, request_id: str) -> ReceivedSpan:
        """The edge's span of the request sent with `request_id`."""

        def of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [
                s for s in spans if s.kind == SERVER and s.attributes.get("jsonrpc.request.id") == request_id
            ]

        return of(self.receiver.wait_for(lambda spans: bool(of(spans))))[0]

    def children(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        def of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [s for s in spans if s.parent_span_id == parent.span_id]

        return of(self.receiver.wait_for(lambda spans: bool(of(spans))))


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    tmp: Path = tmp_path_factory.mktemp("traced")
    port = free_port()
    servers = [
        stdio_server("local", FIXTURE),
        stdio_server("conf", CONFORMANCE),
        {
            "name": "remote",
            "connection_type": "http",
            "connection_string": f"http://127.0.0.1:{port}/mcp",
            "tools_to_execute": ["*"],
        },
    ]
    with otlp_receiver() as (endpoint, receiver), running(python_script(FIXTURE, "--http", str(port))) as fx:
        wait_until(lambda: port_open(port), 15, "the HTTP fixture", fx)
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
            "MCPGW_LOG_FORMAT": "json",
        }
        with service_tree(tmp, servers, env=env) as (base,):
            yield Traced(f"{base}/mcp", receiver, port, tmp / "services.log")


def semantic(span: ReceivedSpan) -> dict[str, Any]:
    """A span's attributes from the conventions (mcpgw's own, under `mcpgw.`, set apart)."""
    return {k: v for k, v in span.attributes.items() if not k.startswith("mcpgw.")}


def received_context(answer: dict[str, Any]) -> dict[str, str | None]:
    return json.loads(answer["result"]["content"][0]["text"])  # type: ignore[no-any-return]


def server_attributes(traced: Traced, span: ReceivedSpan, method: str, request_id: str) -> dict[str, Any]:
    """What every SERVER span of a request over this session carries."""
    assert isinstance(span.attributes.get("client.port"), int) and span.attributes["client.port"] > 0
    session = span.attributes.get("mcp.session.id")
    # A fingerprint of the session, never the token a client could replay.
    assert isinstance(session, str) and session and session != traced.session
    return {
        "mcp.method.name": method,
        "jsonrpc.request.id": request_id,
        "mcp.protocol.version": VERSION,
        "mcp.session.id": session,
        "network.transport": "tcp",
        "network.protocol.name": "http",
        "network.protocol.version": "1.1",
        "client.address": "127.0.0.1",
        "client.port": span.attributes["client.port"],
    }


def test_a_call_continues_the_clients_trace_from_meta_through_the_connector_to_the_downstream(
    traced: Traced,
) -> None:
    meta = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "rojo=00f067aa0ba902b7"}
    request_id, answer = traced.send("tools/call", {"name": "remote_trace_context", "_meta": meta})

    edge = traced.server_span(request_id)
    assert (edge.trace_id, edge.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert edge.name == "tools/call remote_trace_context" and edge.service == "mcpgw-edge"
    assert semantic(edge) == {
        **server_attributes(traced, edge, "tools/call", request_id),
        "gen_ai.tool.name": "remote_trace_context",
        "gen_ai.operation.name": "execute_tool",
    }
    assert edge.attributes["mcpgw.server"] == "remote" and edge.attributes["mcpgw.tool"] == "trace_context"

    (connector,) = traced.children(edge)
    assert connector.trace_id == CLIENT_TRACE and connector.kind == CLIENT
    assert connector.name == "tools/call trace_context" and connector.service == "mcpgw-connector"
    assert semantic(connector) == {
        "mcp.method.name": "tools/call",
        "gen_ai.tool.name": "trace_context",
        "gen_ai.operation.name": "execute_tool",
        "network.transport": "tcp",
        "network.protocol.name": "http",
        "server.address": "127.0.0.1",
        "server.port": traced.http_port,
    }
    # The downstream continues the connector's span, in _meta and in the HTTP header.
    forwarded = f"00-{CLIENT_TRACE}-{connector.span_id}-01"
    assert received_context(answer) == {
        "meta_traceparent": forwarded,
        "meta_tracestate": "rojo=00f067aa0ba902b7",
        "header_traceparent": forwarded,
    }


def test_a_call_continues_the_trace_of_its_http_headers_down_a_stdio_server(traced: Traced) -> None:
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{'ab' * 8}-01"}
    request_id, answer = traced.send("tools/call", {"name": "local_trace_context"}, **headers)

    edge = traced.server_span(request_id)
    assert (edge.trace_id, edge.parent_span_id) == (CLIENT_TRACE, "ab" * 8)
    (connector,) = traced.children(edge)
    assert connector.kind == CLIENT and connector.attributes["network.transport"] == "pipe"
    assert "server.address" not in connector.attributes
    assert received_context(answer)["meta_traceparent"] == f"00-{CLIENT_TRACE}-{connector.span_id}-01"


def test_a_call_without_a_trace_starts_one_with_the_edge_span_at_its_root(traced: Traced) -> None:
    request_id, answer = traced.send("tools/call", {"name": "local_trace_context"})
    edge = traced.server_span(request_id)
    assert edge.parent_span_id == "" and edge.trace_id not in ("", CLIENT_TRACE)
    (connector,) = traced.children(edge)
    assert received_context(answer)["meta_traceparent"] == f"00-{edge.trace_id}-{connector.span_id}-01"


def test_a_malformed_traceparent_is_ignored_not_fatal(traced: Traced) -> None:
    meta = {"traceparent": "00-not-a-trace-01"}
    request_id, answer = traced.send(
        "tools/call", {"name": "local_echo", "arguments": {"text": "x"}, "_meta": meta}
    )
    assert answer["result"]["content"][0]["text"] == "x"
    assert traced.server_span(request_id).parent_span_id == ""


def test_tool_errors_and_refusals_are_recorded_as_errors(traced: Traced) -> None:
    failed_id, failed = traced.send("tools/call", {"name": "local_fail", "arguments": {"reason": "no"}})
    assert failed["result"]["isError"] is True
    span = traced.server_span(failed_id)
    assert span.attributes["error.type"] == "tool_error" and span.status_code == ERROR

    unknown_id, unknown = traced.send("tools/call", {"name": "nobody_nothing"})
    assert unknown["error"]["code"] == -32602
    span = traced.server_span(unknown_id)
    assert semantic(span) == {
        **server_attributes(traced, span, "tools/call", unknown_id),
        "gen_ai.tool.name": "nobody_nothing",
        "gen_ai.operation.name": "execute_tool",
        "error.type": "-32602",
        "rpc.response.status_code": "-32602",
    }
    assert span.status_code == ERROR and span.status_message == unknown["error"]["message"]


def test_every_mcp_operation_is_recorded_not_only_tool_calls(traced: Traced) -> None:
    listed_id, _ = traced.send("tools/list", {})
    listed = traced.server_span(listed_id)
    assert listed.name == "tools/list"
    assert semantic(listed) == server_attributes(traced, listed, "tools/list", listed_id)

    prompt_id, prompt = traced.send("prompts/get", {"name": "conf_test_simple_prompt"})
    assert "result" in prompt, prompt
    span = traced.server_span(prompt_id)
    assert span.name == "prompts/get conf_test_simple_prompt"
    assert semantic(span) == {
        **server_attributes(traced, span, "prompts/get", prompt_id),
        "gen_ai.prompt.name": "conf_test_simple_prompt",
    }
    # Forwarded operations reach the downstream in the same trace, through the connector.
    (connector,) = traced.children(span)
    assert connector.name == "prompts/get test_simple_prompt" and connector.kind == CLIENT

    _, resources = traced.send("resources/list", {})
    uri = next(r["uri"] for r in resources["result"]["resources"] if r["uri"].endswith("static-text"))
    read_id, read = traced.send("resources/read", {"uri": uri})
    assert "result" in read, read
    span = traced.server_span(read_id)
    # A URI is no span name (unbounded), but it is an attribute.
    assert span.name == "resources/read"
    assert semantic(span) == {
        **server_attributes(traced, span, "resources/read", read_id),
        "mcp.resource.uri": uri,
    }

    missing_id, missing = traced.send("prompts/get", {"name": "conf_no_such_prompt"})
    assert missing["error"]["code"] == -32602
    span = traced.server_span(missing_id)
    assert span.attributes["error.type"] == "-32602" and span.status_code == ERROR

    unknown_id, unknown = traced.send("no/such/method", {})
    assert unknown["error"]["code"] == -32601
    span = traced.server_span(unknown_id)
    assert (
        span.attributes["mcp.method.name"] == "no/such/method" and span.attributes["error.type"] == "-32601"
    )


def test_durations_reach_otlp_as_the_conventions_histograms(traced: Traced) -> None:
    # remote_echo is called by no other test here: its points count these calls alone.
    for n in range(3):
        assert (
            "result" in traced.send("tools/call", {"name": "remote_echo", "arguments": {"text": str(n)}})[1]
        )

    def latest(
        points: list[ReceivedHistogram], service: str, name: str, **labels: Any
    ) -> ReceivedHistogram | None:
        found = [
            p
            for p in points
            if (p.service, p.name) == (service, name) and labels.items() <= p.attributes.items()
        ]
        return found[-1] if found else None

    def edge(points: list[ReceivedHistogram]) -> ReceivedHistogram | None:
        return latest(
            points, "mcpgw-edge", "mcp.server.operation.duration", **{"gen_ai.tool.name": "remote_echo"}
        )

    def connector(points: list[ReceivedHistogram]) -> ReceivedHistogram | None:
        labels = {"gen_ai.tool.name": "echo", "mcpgw.server": "remote"}
        return latest(points, "mcpgw-connector", "mcp.client.operation.duration", **labels)

    def counted(point: ReceivedHistogram | None) -> bool:
        return point is not None and point.count == 3

    points = traced.receiver.metrics.wait_for(
        lambda points: counted(edge(points)) and counted(connector(points))
    )
    served, sent = edge(points), connector(points)
    assert served is not None and sent is not None
    assert served.attributes == {
        "mcp.method.name": "tools/call",
        "gen_ai.tool.name": "remote_echo",
        "gen_ai.operation.name": "execute_tool",
        "network.transport": "tcp",
        "network.protocol.name": "http",
        "mcp.protocol.version": VERSION,
    }
    assert sent.attributes["network.transport"] == "tcp" and "error.type" not in sent.attributes
    for point in (served, sent):
        assert point.temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
        assert point.explicit_bounds == list(DURATION_BUCKETS)
        assert sum(point.bucket_counts) == 3 and len(point.bucket_counts) == len(DURATION_BUCKETS) + 1
        assert 0 < point.sum < 3 * DURATION_BUCKETS[-1]
    # The audit's export lag, one point per record it exported.
    lag = "mcpgw-audit", "mcpgw.audit.export.lag"
    exported = traced.receiver.metrics.wait_for(lambda points: latest(points, *lag) is not None)
    lagged = latest(exported, *lag)
    assert lagged is not None and lagged.count >= 3 and sum(lagged.bucket_counts) == lagged.count


def test_with_json_logs_every_line_every_service_writes_is_a_json_object(traced: Traced) -> None:
    traced.send("tools/call", {"name": "local_to_stderr", "arguments": {"text": "a line of the server"}})
    wait_until(lambda: "a line of the server" in traced.log.read_text(), 10, "the server's line in the log")
    lines = traced.log.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["service"] for r in records} >= {"registry", "connector", "audit", "edge"}
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)


@pytest.fixture(scope="module")
def trailed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Traced, Path]]:
    """The audit trail in a file and traces to OTLP, sampled as an operator sets it: traces the
    edge starts are never sampled here (ratio 0), a client's sampled flag is kept."""
    tmp: Path = tmp_path_factory.mktemp("trailed")
    port = free_port()
    servers = [
        {
            "name": "remote",
            "connection_type": "http",
            "connection_string": f"http://127.0.0.1:{port}/mcp",
            "tools_to_execute": ["*"],
        }
    ]
    with otlp_receiver() as (endpoint, receiver), running(python_script(FIXTURE, "--http", str(port))) as fx:
        wait_until(lambda: port_open(port), 15, "the HTTP fixture", fx)
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0",
            "MCPGW_AUDIT_EXPORTER": "file",
        }
        with service_tree(tmp, servers, env=env) as (base,):
            yield Traced(f"{base}/mcp", receiver, port, tmp / "services.log"), tmp / "spans.jsonl"


def trail_of(trail: Path, request_id: str) -> dict[str, Any]:
    """The audit file's record of the request sent with `request_id`."""

    def found() -> list[dict[str, Any]]:
        lines = trail.read_text().splitlines() if trail.exists() else []
        records = [json.loads(line) for line in lines]
        return [r for r in records if r["attributes"].get("jsonrpc.request.id") == request_id]

    wait_until(lambda: bool(found()), 10, f"request {request_id} in the audit file")
    return found()[0]


def test_beside_a_file_trail_a_sampled_trace_reaches_otlp_whole(trailed: tuple[Traced, Path]) -> None:
    traced, trail = trailed
    meta = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    request_id, answer = traced.send("tools/call", {"name": "remote_trace_context", "_meta": meta})

    # The root of the exported trace is the edge's span, not only the file's record of it.
    edge = traced.server_span(request_id)
    assert (edge.trace_id, edge.parent_span_id, edge.service) == (CLIENT_TRACE, CLIENT_SPAN, "mcpgw-edge")
    (connector,) = traced.children(edge)
    assert connector.kind == CLIENT
    assert received_context(answer)["meta_traceparent"] == f"00-{CLIENT_TRACE}-{connector.span_id}-01"
    assert trail_of(trail, request_id)["context"]["span_id"] == f"0x{edge.span_id}"


def test_an_unsampled_operation_is_in_the_trail_and_sends_no_span(trailed: tuple[Traced, Path]) -> None:
    traced, trail = trailed
    unsampled_id, answer = traced.send("tools/call", {"name": "remote_trace_context"})
    record = trail_of(trail, unsampled_id)
    trace_id = record["context"]["trace_id"].removeprefix("0x")
    edge_span = record["context"]["span_id"].removeprefix("0x")
    # No connector span: the downstream continues the edge's span, unsampled.
    assert received_context(answer)["meta_traceparent"] == f"00-{trace_id}-{edge_span}-00"

    # Spans of a later sampled call arrive after any the unsampled one could have sent: the
    # audit exports in order, and the connector batches its spans in order.
    meta = {"traceparent": f"00-{'cd' * 16}-{CLIENT_SPAN}-01"}
    sampled_id, _ = traced.send("tools/call", {"name": "remote_trace_context", "_meta": meta})
    traced.children(traced.server_span(sampled_id))
    assert not [s for s in traced.receiver.wait_for(lambda _: True) if s.trace_id == trace_id]
