"""Where audit records go: a JSON-lines file, the console, or an OTLP endpoint."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from services import __version__
from services.contracts import events_pb2
from services.settings import AuditSettings

SERVICE_NAME = "mcpgw"


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + os.linesep


def exporter_kind(settings: AuditSettings) -> str:
    """OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (unless a kind is named), else the audit file."""
    return settings.audit_exporter or ("otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "file")


def exported_event_ids(settings: AuditSettings, tail_bytes: int = 8 * 1024 * 1024) -> list[str]:
    """The event ids of the audit file's last records (none for other exporters)."""
    if exporter_kind(settings) != "file" or not settings.audit_file.exists():
        return []
    with settings.audit_file.open("rb") as written:
        start = max(0, written.seek(0, os.SEEK_END) - tail_bytes)
        written.seek(start)
        lines = written.read().splitlines()
    if start:
        lines = lines[1:]  # begun mid-line
    ids = []
    for line in lines:
        try:
            ids.append(str(json.loads(line)["attributes"]["mcpgw.event_id"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a crash mid-write, or not a record
    return ids


def build_exporter(settings: AuditSettings) -> SpanExporter:
    kind = exporter_kind(settings)
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if kind == "console":
        return ConsoleSpanExporter(formatter=_one_line)
    settings.audit_file.parent.mkdir(parents=True, exist_ok=True)
    return ConsoleSpanExporter(out=settings.audit_file.open("a", encoding="utf-8"), formatter=_one_line)


class _Collector(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class SpanBuilder:
    """Turns events into finished spans, each a child of the edge's trace context for the call."""

    def __init__(self) -> None:
        self._collector = _Collector()
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        provider.add_span_processor(self._collector)
        self._tracer = provider.get_tracer("mcpgw.audit", __version__)

    def build(self, events: Sequence[events_pb2.ToolCallEvent]) -> list[ReadableSpan]:
        for event in events:
            self._record(event)
        spans, self._collector.spans = self._collector.spans, []
        return spans

    def _record(self, event: events_pb2.ToolCallEvent) -> None:
        parent = None
        if event.trace_id and event.span_id:
            remote = SpanContext(
                trace_id=int(event.trace_id, 16),
                span_id=int(event.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        attributes: dict[str, str | int] = {
            "mcp.method.name": "tools/call",
            "gen_ai.tool.name": event.exposed_name,
            "mcpgw.event_id": event.event_id,
            "mcpgw.server": event.server,
            "mcpgw.tool": event.tool,
            "mcpgw.outcome": event.outcome,
            "mcpgw.edge_id": event.edge_id,
            "mcp.session.id": event.session,
            "jsonrpc.request.id": event.request_id,
        }
        if event.virtual_key_id:
            attributes["mcpgw.virtual_key_id"] = event.virtual_key_id
        if event.client_name:
            attributes["mcpgw.client_name"] = event.client_name
        if event.outcome == "error":
            attributes["error.type"] = str(event.error_code)
        span = self._tracer.start_span(
            f"tools/call {event.exposed_name}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=event.start_unix_nano,
        )
        if event.outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, event.error_message or event.outcome))
        span.end(end_time=event.end_unix_nano)
