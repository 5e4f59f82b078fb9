"""An OTLP/gRPC receiver for tests: the collector's trace and metrics services (the
protocol's own generated stubs), keeping every span and histogram point it is sent."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _attributes(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in attributes}


def _service(resource: Resource) -> str:
    return str(_attributes(resource.attributes).get("service.name", ""))


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived, with its ids in W3C hex and its attributes as Python values."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int
    status_message: str

    @classmethod
    def of(cls, service: str, span: trace_pb2.Span) -> ReceivedSpan:
        return cls(
            service=service,
            name=span.name,
            kind=span.kind,
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex(),
            attributes=_attributes(span.attributes),
            status_code=span.status.code,
            status_message=span.status.message,
        )


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._arrived = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self.metrics = MetricsReceiver()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            service = _service(resource_spans.resource)
            for scope_spans in resource_spans.scope_spans:
                received += [ReceivedSpan.of(service, span) for span in scope_spans.spans]
        with self._arrived:
            self._spans += received
            self._arrived.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(
        self, wanted: Callable[[list[ReceivedSpan]], bool], timeout: float = 20.0
    ) -> list[ReceivedSpan]:
        """Every span received once `wanted` holds of them (AssertionError after `timeout`)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: wanted(self._spans), timeout):
                raise AssertionError(f"spans did not arrive in {timeout:g}s; got {self._spans}")
            return list(self._spans)


@dataclass(frozen=True)
class ReceivedHistogram:
    """One histogram data point as it arrived."""

    service: str
    name: str
    attributes: dict[str, Any]
    temporality: int
    count: int
    sum: float
    bucket_counts: list[int]
    explicit_bounds: list[float]


class MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self._arrived = threading.Condition()
        self._points: list[ReceivedHistogram] = []

    def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        received = [
            ReceivedHistogram(
                _service(resource_metrics.resource),
                metric.name,
                _attributes(point.attributes),
                metric.histogram.aggregation_temporality,
                point.count,
                point.sum,
                list(point.bucket_counts),
                list(point.explicit_bounds),
            )
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if metric.WhichOneof("data") == "histogram"
            for point in metric.histogram.data_points
        ]
        with self._arrived:
            self._points += received
            self._arrived.notify_all()
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def wait_for(
        self, wanted: Callable[[list[ReceivedHistogram]], bool], timeout: float = 20.0
    ) -> list[ReceivedHistogram]:
        """Every point received once `wanted` holds of them (AssertionError after `timeout`)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: wanted(self._points), timeout):
                raise AssertionError(f"histograms did not arrive in {timeout:g}s; got {self._points}")
            return list(self._points)


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, OtlpReceiver]]:
    """A receiver on a free loopback port; yields its endpoint URL and what it received (the
    metrics at `.metrics`)."""
    receiver = OtlpReceiver()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver.metrics, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", receiver
    finally:
        server.stop(grace=None)
