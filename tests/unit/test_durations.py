"""Durations kept where they are recorded reach every reader: Prometheus text with the
conventions' buckets, and OTLP as cumulative or delta points."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from prometheus_client.parser import text_string_to_metric_families

from services.metrics import Durations, service_metrics


def prometheus(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by name and labels (less the exporter's own otel_scope_* labels)."""
    return {
        (
            s.name,
            tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope"))),
        ): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_prometheus_reads_counts_sums_and_upper_inclusive_buckets() -> None:
    metrics = service_metrics("test")
    durations = metrics.durations("mcpgw.test", "test.operation.duration", "a test")
    for seconds in (0.005, 0.01, 0.3, 500):
        durations.record(seconds, "a", lambda: {"which": "a"})
    durations.record(0.02, "b", lambda: {"which": "b"})
    samples = prometheus(metrics.exposition()[0])
    metrics.shutdown()

    def bucket(which: str, le: str) -> float:
        return samples[("test_operation_duration_seconds_bucket", (("le", le), ("which", which)))]

    assert (bucket("a", "0.01"), bucket("a", "0.2"), bucket("a", "0.5"), bucket("a", "300")) == (2, 2, 3, 3)
    assert bucket("a", "+Inf") == 4 and bucket("b", "0.01") == 0 and bucket("b", "0.02") == 1
    assert samples[("test_operation_duration_seconds_count", (("which", "a"),))] == 4
    assert samples[("test_operation_duration_seconds_sum", (("which", "a"),))] == 0.005 + 0.01 + 0.3 + 500


def test_a_keys_labels_are_built_once() -> None:
    durations = Durations("mcpgw.test", "test.duration", "a test")
    built: list[str] = []

    def labels() -> dict[str, str | int]:
        built.append("a")
        return {"which": "a"}

    for _ in range(3):
        durations.record(0.1, "a", labels)
    points, _ = durations.points(None)
    assert built == ["a"] and [p.count for p in points] == [3]


class Exported(MetricExporter):
    def __init__(self, temporality: AggregationTemporality) -> None:
        super().__init__(preferred_temporality={HistogramInstrument: temporality})
        self.points: list[list[HistogramDataPoint]] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.points.append(
            [
                point
                for resource in metrics_data.resource_metrics
                for scope in resource.scope_metrics
                for metric in scope.metrics
                if metric.name == "test.duration"
                for point in metric.data.data_points
                if isinstance(point, HistogramDataPoint)
            ]
        )
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def which(key: str) -> Callable[[], dict[str, str | int]]:
    return lambda: {"which": key}


def exported(temporality: AggregationTemporality, rounds: Sequence[Sequence[tuple[str, float]]]) -> Exported:
    """What an OTLP reader exports after each round of (key, seconds) records."""
    exporter = Exported(temporality)
    metrics = service_metrics("test", exporter)
    durations = metrics.durations("mcpgw.test", "test.duration", "a test")
    for records in rounds:
        for key, seconds in records:
            durations.record(seconds, key, which(key))
        metrics.provider.force_flush()
    metrics.shutdown()
    return exporter


def summary(points: list[HistogramDataPoint]) -> dict[Any, tuple[int, float, float]]:
    return {p.attributes["which"] if p.attributes else None: (p.count, p.min, p.max) for p in points}


def test_otlp_cumulative_points_hold_everything_since_the_start() -> None:
    exporter = exported(
        AggregationTemporality.CUMULATIVE, [[("a", 0.1), ("a", 0.3)], [("a", 0.2), ("b", 1.0)]]
    )
    assert summary(exporter.points[0]) == {"a": (2, 0.1, 0.3)}
    assert summary(exporter.points[1]) == {"a": (3, 0.1, 0.3), "b": (1, 1.0, 1.0)}
    assert exporter.points[1][0].start_time_unix_nano == exporter.points[0][0].start_time_unix_nano


def test_otlp_delta_points_hold_what_changed_since_the_last_export() -> None:
    exporter = exported(
        AggregationTemporality.DELTA, [[("a", 0.1), ("a", 0.3)], [("a", 0.2), ("b", 1.0)], [("b", 2.0)]]
    )
    assert summary(exporter.points[0]) == {"a": (2, 0.1, 0.3)}
    assert summary(exporter.points[1]) == {"a": (1, 0.2, 0.2), "b": (1, 1.0, 1.0)}
    # A series with nothing new is left out; each interval starts where the last ended.
    assert summary(exporter.points[2]) == {"b": (1, 2.0, 2.0)}
    second = {p.attributes["which"]: p for p in exporter.points[1] if p.attributes}
    assert exporter.points[2][0].start_time_unix_nano == second["b"].time_unix_nano
    assert list(exporter.points[2][0].bucket_counts) == [0] * 7 + [1] + [0] * 7
