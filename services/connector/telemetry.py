"""What the connector records of each downstream request: its CLIENT span, its duration
(the MCP semantic conventions' `mcp.client.operation.duration`), and the W3C context it
passes on.

The edge sends each call's trace context in gRPC metadata. With an OTLP endpoint configured
and the context sampled, the connector records a CLIENT span under it (the MCP semantic
conventions' attributes) and the downstream continues that span; otherwise no span is made
and the downstream continues the edge's span. Either way the context reaches the downstream
in the request's `params._meta` and, over Streamable HTTP, in the `traceparent` header.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services import __version__
from services.contracts import registry_pb2
from services.metrics import ServiceMetrics, error_label
from services.operations import span_name, target_attributes
from services.telemetry import current_trace

SCOPE = "mcpgw.connector"
_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_KEYS = ("traceparent", "tracestate")
# (server, method, target) whose span attributes are kept built.
ATTRIBUTE_CACHE = 10_000
# A gRPC call's metadata, as grpc.aio hands it over.
Metadata = Sequence[tuple[str, str | bytes]] | None


@dataclass(slots=True)
class Hop:
    """One downstream request: what the downstream receives of its trace, and where its
    outcome is written (its span, when one is recorded, and its duration's labels)."""

    # The W3C keys the downstream's `_meta` gets (nothing when the edge sent no context).
    context: dict[str, str] = field(default_factory=dict)
    span: Span | None = None
    # The duration's error.type, when it failed.
    error_type: str = ""

    @property
    def traceparent(self) -> str | None:
        return self.context.get("traceparent")

    def tool_error(self) -> None:
        self.error_type = "tool_error"
        if self.span is not None:
            self.span.set_attribute("error.type", "tool_error")
            self.span.set_status(Status(StatusCode.ERROR))

    def failed(self, code: int, message: str) -> None:
        self.error_type = error_label(code)
        if self.span is not None:
            self.span.set_attribute("error.type", str(code))
            self.span.set_attribute("rpc.response.status_code", str(code))
            self.span.set_status(Status(StatusCode.ERROR, message))


def with_context(meta: Mapping[str, object] | None, hop: Hop) -> dict[str, object] | None:
    """A request's `_meta` continuing `hop`: the client's own trace keys give way to it."""
    if not hop.context:
        return dict(meta) if meta else None
    kept = {k: v for k, v in (meta or {}).items() if k not in TRACE_KEYS}
    return {**kept, **hop.context}


def server_address(config: registry_pb2.ServerConfig) -> dict[str, str | int]:
    """The conventions' network attributes of a downstream: a pipe for stdio, else TCP to
    the host and port of its URL (left out while the URL is an env. reference)."""
    if config.connection_type == "stdio":
        return {"network.transport": "pipe"}
    attributes: dict[str, str | int] = {"network.transport": "tcp", "network.protocol.name": "http"}
    try:
        url = urlsplit(config.connection_string)
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return attributes
    if url.hostname and url.scheme in ("http", "https"):
        attributes["server.address"] = url.hostname
        attributes["server.port"] = port
    return attributes


class DownstreamTelemetry:
    """Opens a Hop per downstream request: its duration always, its span only with a tracer
    provider (an OTLP endpoint)."""

    def __init__(self, provider: TracerProvider | None, metrics: ServiceMetrics | None = None) -> None:
        self._tracer: Tracer | None = None if provider is None else provider.get_tracer(SCOPE, __version__)
        self._duration = (
            None
            if metrics is None
            else metrics.durations(
                SCOPE,
                "mcp.client.operation.duration",
                "The duration of the MCP request as observed on the sender from the time "
                "it was sent until the response is received.",
            )
        )
        self._cache: dict[tuple[str, str, str, str], tuple[dict[str, str | int], dict[str, str | int]]] = {}

    def _attributes(
        self, config: registry_pb2.ServerConfig, method: str, target: str
    ) -> tuple[dict[str, str | int], dict[str, str | int]]:
        """A request's span attributes and duration labels, built once per (server, method,
        target): targets are the catalog's names, so the cache is bounded by it (and capped)."""
        key = (config.name, config.connection_string, method, target)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        attributes = target_attributes(method, target)
        attributes.update(server_address(config))
        # The duration is labelled by server, not its address (bounded by the config).
        labels = {k: v for k, v in attributes.items() if k not in ("server.address", "server.port")}
        labels["mcpgw.server"] = config.name
        if len(self._cache) >= ATTRIBUTE_CACHE:
            self._cache.clear()
        self._cache[key] = attributes, labels
        return attributes, labels

    @contextmanager
    def hop(
        self,
        metadata: Metadata,
        config: registry_pb2.ServerConfig,
        method: str,
        target: str = "",
    ) -> Iterator[Hop]:
        """The hop of one request of `method` (about `target`: a tool or prompt) to the
        downstream `config`, continuing the context in the edge's gRPC `metadata`."""
        started = time.perf_counter()
        attributes, labels = self._attributes(config, method, target)
        carrier = {k: v for k, v in metadata or () if k in TRACE_KEYS and isinstance(v, str)}
        # Log records written for this request name its trace ("00-<trace id>-...").
        current_trace.set(carrier.get("traceparent", "")[3:35])
        span = None
        if self._tracer is not None and _sampled(carrier.get("traceparent", "")):
            parent = set_span_in_context(NonRecordingSpan(_remote(carrier)))
            name = span_name(method, target)
            span = self._tracer.start_span(name, context=parent, kind=SpanKind.CLIENT, attributes=attributes)
            carrier = {}
            # The span's context, its tracestate inherited from the edge's.
            _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        hop = Hop(carrier, span)
        try:
            yield hop
        finally:
            if span is not None:
                span.end()
            if self._duration is not None:
                error_type = hop.error_type
                self._duration.record(
                    time.perf_counter() - started,
                    (config.name, config.connection_type, method, target, error_type),
                    lambda: {**labels, "error.type": error_type} if error_type else labels,
                )


def _sampled(traceparent: str) -> bool:
    """Whether a W3C traceparent has its sampled flag set (an unsampled hop makes no span: the
    parent-based sampler would drop it anyway, after costing as much as a recorded one)."""
    try:
        return bool(int(traceparent.rpartition("-")[2][:2], 16) & 1)
    except ValueError:
        return False


def _remote(carrier: dict[str, str]) -> SpanContext:
    return get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
