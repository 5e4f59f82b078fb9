"""Process-wide logging, W3C trace context, and each service's OpenTelemetry tracer."""

from __future__ import annotations

import logging
import os
import random
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import format_span_id, format_trace_id, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services import __version__
from services.settings import LogFormat

# What OTLP export is configured with (the SDK reads the same variables).
OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_PROPAGATOR = TraceContextTextMapPropagator()


# The trace of the operation being served, for the log records written meanwhile.
current_trace: ContextVar[str] = ContextVar("current_trace", default="")


class _TraceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = current_trace.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, service, logger, message, the trace id of
    the operation it was written for, and the exception, if any."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            line["trace_id"] = trace_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def setup_logging(level: str, service: str, fmt: LogFormat = LogFormat.TEXT) -> None:
    """One record per line on stderr: text prefixed with the service name, or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TraceFilter())
    if fmt is LogFormat.JSON:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDK and HTTP clients log every request at INFO; that is noise on a gateway.
    for noisy in ("httpx", "httpx2", "mcp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # OpenTelemetry warns of every malformed tracestate a client sends (its text, verbatim).
    logging.getLogger("opentelemetry.trace.span").setLevel(logging.ERROR)


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One hop's place in a W3C trace: the trace, this hop's span, and the caller's span it
    continues ("" when this hop started the trace)."""

    trace_id: str
    span_id: str
    parent_span_id: str = ""
    sampled: bool = True
    tracestate: str = ""

    @property
    def traceparent(self) -> str:
        """What the next hop continues: this hop's span as its parent."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def w3c_metadata(traceparent: str, tracestate: str = "") -> tuple[tuple[str, str], ...]:
    """The W3C trace headers as gRPC metadata: what the next hop continues (none without a trace)."""
    if not traceparent:
        return ()
    if tracestate:
        return (("traceparent", traceparent), ("tracestate", tracestate))
    return (("traceparent", traceparent),)


def continue_trace(traceparent: object = None, tracestate: object = None) -> TraceContext:
    """A new span in the trace `traceparent` names when it is valid W3C trace context (it
    comes from a client: anything else is ignored), else the root span of a new trace,
    sampled as OTEL_TRACES_SAMPLER says."""
    if isinstance(traceparent, str):
        carrier = {"traceparent": traceparent}
        if isinstance(tracestate, str):
            carrier["tracestate"] = tracestate
        parent = get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
        if parent.is_valid:
            return TraceContext(
                format_trace_id(parent.trace_id),
                random_id(64),
                format_span_id(parent.span_id),
                parent.trace_flags.sampled,
                parent.trace_state.to_header() if parent.trace_state else "",
            )
    trace_id = random_id(128)
    decision = _sampler().should_sample(None, int(trace_id, 16), "root").decision
    sampled = decision is Decision.RECORD_AND_SAMPLE
    return TraceContext(trace_id, random_id(64), "", sampled)


def random_id(bits: int) -> str:
    """A random non-zero id of `bits` bits in hex: trace, span and event ids. Not secrets, so
    from `random`, as OpenTelemetry's own id generator draws them: `secrets` costs a system
    call each, three per operation."""
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"


@cache
def _sampler() -> Sampler:
    # The SDK's own reading of OTEL_TRACES_SAMPLER and its argument.
    return TracerProvider(shutdown_on_exit=False).sampler


def otlp_configured() -> bool:
    """Whether spans have somewhere to go: an OTLP endpoint, and traces not switched off."""
    return os.environ.get("OTEL_TRACES_EXPORTER", "otlp") != "none" and any(
        os.environ.get(name) for name in OTLP_ENDPOINT_VARIABLES
    )


def tracer_provider(service: str) -> TracerProvider | None:
    """The service's spans, batched to the OTLP endpoint; None when none is configured (the
    service then makes no spans, and passes trace context on unchanged)."""
    if not otlp_configured():
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.version": __version__}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
