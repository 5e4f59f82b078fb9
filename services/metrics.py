"""Each service's OpenTelemetry metrics: read as Prometheus text (the edge's `/metrics`, the
other services' own port) and, when an OTLP endpoint is configured, exported over OTLP.

Label sets stay bounded: servers, tools and prompts the catalog knows, virtual key ids,
methods the protocol defines, outcomes; never session ids, request ids or arguments.

What is recorded on every request is aggregated where it happens (`Durations`, `Tally`): a
dict lookup and a bisect, where the SDK's own instruments cost about 9 µs a record for each
reader, 4% of the gateway's CPU per call with OTLP on. Every reader collects them with the SDK's.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
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


Labels = dict[str, str | int]


@dataclass(slots=True)
class _Series:
    """One label set's cumulative counts, and the least and most since the last delta read."""

    labels: Labels
    buckets: list[int]
    count: int = 0
    sum: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")
    interval_min: float = float("inf")
    interval_max: float = float("-inf")


class Durations:
    """A histogram of seconds in the conventions' buckets, by label set, kept where it is
    recorded. A series is found by a cheap `key`; its labels are built once, when it is new."""

    def __init__(self, scope: str, name: str, description: str) -> None:
        self.scope = scope
        self.name = name
        self.description = description
        self.started = time.time_ns()
        self._series: dict[Hashable, _Series] = {}
        # Readers collect on threads of their own (Prometheus' server, OTLP's exporter).
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._series)

    def record(self, seconds: float, key: Hashable, labels: Callable[[], Labels]) -> None:
        """Count `seconds` under `key`, whose labels `labels()` gives: the same for every
        call with this key (the key holds each label's value, or what decides it)."""
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(labels(), [0] * (len(DURATION_BUCKETS) + 1))
            series.count += 1
            series.sum += seconds
            series.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
            if seconds < series.min:
                series.min = seconds
            if seconds > series.max:
                series.max = seconds
            if seconds < series.interval_min:
                series.interval_min = seconds
            if seconds > series.interval_max:
                series.interval_max = seconds

    def points(
        self, since: dict[Hashable, _Series] | None, read: int = 0, now: int = 0
    ) -> tuple[list[HistogramDataPoint], dict[Hashable, _Series]]:
        """Every series as a point at `now`, cumulative, or when `since` (the copy a read at
        `read` took) is given, the change since then; and the copy for the next read."""
        now = now or time.time_ns()
        with self._lock:
            copied = {key: replace(s, buckets=list(s.buckets)) for key, s in self._series.items()}
            if since is not None:
                for s in self._series.values():
                    s.interval_min, s.interval_max = float("inf"), float("-inf")
        points = []
        for key, s in copied.items():
            before = since.get(key) if since is not None else None
            if since is None:
                count, total_, buckets, low, high = s.count, s.sum, s.buckets, s.min, s.max
            elif before is None:
                count, total_, buckets, low, high = s.count, s.sum, s.buckets, s.interval_min, s.interval_max
            else:
                count = s.count - before.count
                if not count:
                    continue
                total_ = s.sum - before.sum
                buckets = [a - b for a, b in zip(s.buckets, before.buckets, strict=True)]
                low, high = s.interval_min, s.interval_max
            points.append(
                HistogramDataPoint(
                    attributes=s.labels,
                    start_time_unix_nano=self.started if since is None else read,
                    time_unix_nano=now,
                    count=count,
                    sum=total_,
                    bucket_counts=buckets,
                    explicit_bounds=DURATION_BUCKETS,
                    min=low,
                    max=high,
                )
            )
        return points, copied


class Tally:
    """A monotonic count by label set, kept where it is counted and read at each collection."""

    def __init__(self, meter: Meter, name: str, description: str, label_names: tuple[str, ...]) -> None:
        self._names = label_names
        self._counts: dict[tuple[str, ...], int] = {}
        total(meter, name, description, self._points)

    def add(self, values: tuple[str, ...]) -> None:
        """Count one for the labels `values` (in `label_names`' order)."""
        self._counts[values] = self._counts.get(values, 0) + 1

    def _points(self) -> list[tuple[float, dict[str, str]]]:
        # One writer (the service's event loop); list() copies the dict in one step of the GIL.
        return [(n, dict(zip(self._names, values, strict=True))) for values, n in list(self._counts.items())]


class _DurationsMerge:
    """What one reader collects of the service's `Durations`, added to the SDK's collection."""

    def __init__(self, durations: list[Durations], delta: bool) -> None:
        self._durations = durations
        # A delta reader's last copy of each, and when it was taken (None: cumulative).
        self._last: dict[str, tuple[int, dict[Hashable, _Series]]] | None = {} if delta else None

    def __call__(self, data: MetricsData) -> MetricsData:
        """`data` with the durations' points beside its first resource's scopes (the SDK hands
        a reader no collection at all rather than an empty one)."""
        by_scope: dict[str, list[Metric]] = {}
        for durations in self._durations:
            if self._last is None:
                points, _ = durations.points(None)
                temporality = AggregationTemporality.CUMULATIVE
            else:
                read, since = self._last.get(durations.name, (durations.started, {}))
                now = time.time_ns()
                points, copied = durations.points(since, read, now)
                self._last[durations.name] = (now, copied)
                temporality = AggregationTemporality.DELTA
            if points:
                metric = Metric(durations.name, durations.description, "s", Histogram(points, temporality))
                by_scope.setdefault(durations.scope, []).append(metric)
        if not by_scope:
            return data
        scopes = [
            ScopeMetrics(InstrumentationScope(scope, __version__), metrics, "")
            for scope, metrics in by_scope.items()
        ]
        first, *rest = data.resource_metrics
        merged = ResourceMetrics(first.resource, [*first.scope_metrics, *scopes], first.schema_url)
        return MetricsData([merged, *rest])


def _wants_delta(reader: MetricReader) -> bool:
    """Whether `reader` asks for histograms as deltas (an OTLP exporter's preference)."""
    return any(
        issubclass(kind, HistogramInstrument) and temporality is AggregationTemporality.DELTA
        for kind, temporality in reader._instrument_class_temporality.items()
    )


class _PrometheusReader(PrometheusMetricReader):
    def __init__(self, registry: CollectorRegistry, durations: list[Durations]) -> None:
        super().__init__(registry=registry)
        self._merge = _DurationsMerge(durations, _wants_delta(self))

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        super()._receive_metrics(self._merge(metrics_data), timeout_millis, **kwargs)


class _OtlpReader(PeriodicExportingMetricReader):
    def __init__(self, exporter: MetricExporter, durations: list[Durations]) -> None:
        super().__init__(exporter)
        self._merge = _DurationsMerge(durations, _wants_delta(self))

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        super()._receive_metrics(self._merge(metrics_data), timeout_millis, **kwargs)


@dataclass(frozen=True)
class ServiceMetrics:
    """A service's meter, and its metrics as Prometheus text."""

    provider: MeterProvider
    registry: CollectorRegistry
    _durations: list[Durations] = field(default_factory=list)

    def meter(self, name: str) -> Meter:
        return self.provider.get_meter(name, __version__)

    def durations(self, scope: str, name: str, description: str) -> Durations:
        """A histogram of seconds (named `name`, under the meter `scope`) every reader collects."""
        if not self._durations:
            # Also what keeps a collection from coming back empty, which readers drop whole.
            gauge(
                self.meter("mcpgw.metrics"),
                "mcpgw.metrics.series",
                "label sets each recorded histogram holds",
                lambda: [(len(d), {"mcpgw.metric": d.name}) for d in self._durations],
            )
        durations = Durations(scope, name, description)
        self._durations.append(durations)
        return durations

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


def service_metrics(service: str, exporter: MetricExporter | None = None) -> ServiceMetrics:
    """A service's metrics, exported to `exporter` or, by default, to the OTLP endpoint the
    environment names (if any) as well as served as Prometheus text."""
    registry = CollectorRegistry(auto_describe=True)
    durations: list[Durations] = []
    readers: list[MetricReader] = [_PrometheusReader(registry, durations)]
    if exporter is None and (
        os.environ.get("OTEL_METRICS_EXPORTER", "otlp") != "none"
        and any(os.environ.get(name) for name in OTLP_METRICS_VARIABLES)
    ):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter()
    if exporter is not None:
        readers.append(_OtlpReader(exporter, durations))
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
    return ServiceMetrics(provider, registry, durations)


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
