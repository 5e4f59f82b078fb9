"""Each service's OpenTelemetry metrics: read as Prometheus text (the edge's `/metrics`, the
other services' own port) and, when an OTLP endpoint is configured, exported over OTLP.

Label sets stay bounded: servers, tools and prompts the catalog knows, virtual key ids,
methods the protocol defines, outcomes; never session ids, request ids or arguments.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, start_http_server

from services import __version__

# The MCP semantic conventions' advice for operation durations, in seconds.
DURATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
# What a label takes when its value is not one the gateway knows (a client's unknown tool).
OTHER = "_OTHER"
# Methods the MCP revisions define, and mcpgw's 2026-07-28 additions; anything else is OTHER.
KNOWN_METHODS = frozenset(
    {
        "initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get",
        "resources/list", "resources/templates/list", "resources/read", "resources/subscribe",
        "resources/unsubscribe", "completion/complete", "logging/setLevel", "tasks/get",
        "tasks/result", "tasks/cancel", "tasks/list", "server/discover", "subscriptions/listen",
    }
)  # fmt: skip
OTLP_METRICS_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")


@dataclass(frozen=True)
class ServiceMetrics:
    """A service's meter, and its metrics as Prometheus text."""

    provider: MeterProvider
    registry: CollectorRegistry

    def meter(self, name: str) -> Meter:
        return self.provider.get_meter(name, __version__)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of every metric now, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    @contextmanager
    def served(self, listen: str) -> Iterator[None]:
        """Serve the Prometheus text at http://`listen`/metrics meanwhile (nothing when empty)."""
        if not listen:
            yield
            return
        host, _, port = listen.rpartition(":")
        # prometheus_client's own server: one thread, owned here and stopped on the way out.
        server, thread = start_http_server(int(port), host or "127.0.0.1", self.registry)
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def shutdown(self) -> None:
        self.provider.shutdown()


def service_metrics(service: str) -> ServiceMetrics:
    registry = CollectorRegistry(auto_describe=True)
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
    if os.environ.get("OTEL_METRICS_EXPORTER", "otlp") != "none" and any(
        os.environ.get(name) for name in OTLP_METRICS_VARIABLES
    ):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    provider = MeterProvider(
        metric_readers=readers,
        resource=Resource.create({"service.name": service, "service.version": __version__}),
        views=[
            View(
                instrument_name="*.duration",
                aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS),
            )
        ],
        shutdown_on_exit=False,
    )
    return ServiceMetrics(provider, registry)


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else OTHER


def error_label(code: int) -> str:
    """A JSON-RPC error code as a label: the reserved range only (a downstream may answer
    any integer; one series each would be unbounded)."""
    return str(code) if -32768 <= code <= -32000 else OTHER


Points = Callable[[], Iterable[tuple[float, dict[str, str]]]]


def _callback(read: Points) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, attributes) for value, attributes in read()]

    return observe


def gauge(meter: Meter, name: str, description: str, read: Points) -> None:
    """A gauge whose points `read` gives at each collection (nothing on the hot path)."""
    meter.create_observable_gauge(name, callbacks=[_callback(read)], description=description)


def total(meter: Meter, name: str, description: str, read: Points) -> None:
    """A monotonic count kept elsewhere, read at each collection."""
    meter.create_observable_counter(name, callbacks=[_callback(read)], description=description)
