"""Where audit records go: a JSON-lines file, the console, or an OTLP endpoint."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from services import __version__
from services.contracts import events_pb2
from services.operations import method_of, outcome_name, span_name, target_attributes
from services.settings import AuditSettings
from services.telemetry import otlp_configured


def _context(context: SpanContext) -> dict[str, str]:
    return {
        "trace_id": f"0x{context.trace_id:032x}",
        "span_id": f"0x{context.span_id:016x}",
        "trace_state": repr(context.trace_state),
    }


class _Resources:
    """The last resource's JSON form: every record of a consumer has the same one, and the
    SDK's `to_json` encodes and decodes it again for each span."""

    def __init__(self) -> None:
        self._last: tuple[Resource, dict[str, Any]] | None = None

    def of(self, resource: Resource) -> dict[str, Any]:
        if self._last is None or self._last[0] is not resource:
            self._last = (resource, orjson.loads(resource.to_json(indent=None)))
        return self._last[1]


_resources = _Resources()


def _one_line(span: ReadableSpan) -> str:
    """`span.to_json()` on one line, the same JSON at a tenth of the SDK's cost (its
    `to_json` was most of the audit's CPU per record)."""
    status: dict[str, str] = {"status_code": span.status.status_code.name}
    if span.status.description:
        status["description"] = span.status.description
    line: dict[str, Any] = {
        "name": span.name,
        "context": _context(span.context) if span.context else None,
        "kind": str(span.kind),
        "parent_id": f"0x{span.parent.span_id:016x}" if span.parent is not None else None,
        "start_time": ns_to_iso_str(span.start_time) if span.start_time else None,
        "end_time": ns_to_iso_str(span.end_time) if span.end_time else None,
        "status": status,
        "attributes": dict(span.attributes) if span.attributes is not None else None,
        "events": [
            {"name": e.name, "timestamp": ns_to_iso_str(e.timestamp), "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
        "links": [
            {"context": _context(k.context), "attributes": dict(k.attributes or {})} for k in span.links
        ],
        "resource": _resources.of(span.resource),
    }
    return orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS).decode() + os.linesep


def exporter_kind(settings: AuditSettings) -> str:
    """OTLP when spans have an OTLP endpoint (unless a kind is named; the connector's spans go
    where the edge's do), else the audit file."""
    return settings.audit_exporter or ("otlp" if otlp_configured() else "file")


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


def trace_processor(settings: AuditSettings) -> SpanProcessor | None:
    """The edge's sampled SERVER spans, batched to OTLP beside an audit trail that goes to a
    file or the console, so traces keep their root; None when the trail itself goes to OTLP
    (every record is a span there already) or spans have no OTLP endpoint."""
    if exporter_kind(settings) == "otlp" or not otlp_configured():
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # The SDK's processor: a bounded queue, its own export thread, unsampled spans dropped.
    return BatchSpanProcessor(OTLPSpanExporter())


# The edge's spans are built here from its records, under its name.
EDGE_SERVICE = "mcpgw-edge"
RESOURCE_METHODS = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})


def span_attributes(event: events_pb2.OperationEvent) -> dict[str, str | int]:
    """The MCP semantic conventions' SERVER span attributes of a record, then mcpgw's own."""
    method = method_of(event)
    attributes = target_attributes(method, event.exposed_name)
    if method in RESOURCE_METHODS and event.exposed_name:
        attributes["mcp.resource.uri"] = event.exposed_name
    if event.request_id:
        attributes["jsonrpc.request.id"] = event.request_id
    if event.protocol_version:
        attributes["mcp.protocol.version"] = event.protocol_version
    if event.session:
        attributes["mcp.session.id"] = event.session
    if event.http_version:
        attributes["network.transport"] = "tcp"
        attributes["network.protocol.name"] = "http"
        attributes["network.protocol.version"] = event.http_version
    if event.client_address:
        attributes["client.address"] = event.client_address
        attributes["client.port"] = event.client_port
    if event.outcome == events_pb2.OUTCOME_TOOL_ERROR:
        attributes["error.type"] = "tool_error"
    elif event.outcome == events_pb2.OUTCOME_ERROR:
        attributes["error.type"] = str(event.error_code) if event.error_code else "_OTHER"
        if event.error_code:
            attributes["rpc.response.status_code"] = str(event.error_code)
    if event.arguments_json:
        attributes["gen_ai.tool.call.arguments"] = event.arguments_json.decode()
    if event.result_json:
        attributes["gen_ai.tool.call.result"] = event.result_json.decode()
    attributes["mcpgw.event_id"] = event.event_id
    attributes["mcpgw.outcome"] = outcome_name(event)
    attributes["mcpgw.edge_id"] = event.edge_id
    for key, value in (
        ("mcpgw.server", event.server),
        ("mcpgw.tool", event.tool),
        ("mcpgw.virtual_key_id", event.virtual_key_id),
        ("mcpgw.client_name", event.client_name),
        ("mcpgw.llm_request_id", event.llm_request_id),
    ):
        if value:
            attributes[key] = value
    return attributes


class SpanBuilder:
    """Turns operation records into the edge's SERVER spans, under the ids the edge gave them:
    the child of the client's span when it sent one, the parent of the connector's."""

    def __init__(self) -> None:
        self._resource = Resource.create({"service.name": EDGE_SERVICE, "service.version": __version__})
        self._scope = InstrumentationScope("mcpgw.audit", __version__)

    def build(self, events: Sequence[events_pb2.OperationEvent]) -> list[ReadableSpan]:
        return [self._span(event) for event in events]

    def _span(self, event: events_pb2.OperationEvent) -> ReadableSpan:
        flags = TraceFlags(TraceFlags.SAMPLED if event.sampled or not event.method else TraceFlags.DEFAULT)
        trace_id = _hex_id(event.trace_id, 32) or random.getrandbits(128)
        parent_id = _hex_id(event.parent_span_id, 16)
        context = SpanContext(trace_id, _hex_id(event.span_id, 16) or random.getrandbits(64), False, flags)
        parent = SpanContext(trace_id, parent_id, True, flags) if parent_id else None
        failed = event.outcome != events_pb2.OUTCOME_OK
        status = Status(StatusCode.ERROR, event.error_message or None) if failed else Status(StatusCode.UNSET)
        return ReadableSpan(
            span_name(method_of(event), event.exposed_name),
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=span_attributes(event),
            kind=SpanKind.SERVER,
            status=status,
            start_time=event.start_unix_nano,
            end_time=event.end_unix_nano,
            instrumentation_scope=self._scope,
        )


def _hex_id(text: str, length: int) -> int:
    """A W3C id from its hex form; 0 (no id) for anything else."""
    if len(text) != length:
        return 0
    try:
        return int(text, 16)
    except ValueError:
        return 0
