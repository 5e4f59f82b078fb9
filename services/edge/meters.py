"""The edge's metrics: every operation's duration (the MCP semantic conventions'
`mcp.server.operation.duration`), tool calls by server, tool, key and outcome, and gauges
of what the edge holds (calls in flight, open streams, sessions started, audit spool)."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.metrics import Meter

from services.contracts import events_pb2
from services.metrics import OTHER, error_label, gauge, method_label, total
from services.operations import method_of, outcome_name, target_attributes


def operation_attributes(event: events_pb2.OperationEvent) -> dict[str, str | int]:
    """A record's duration labels: its method, target and error as the conventions name them,
    bounded (a name the catalog did not route is OTHER)."""
    method = method_label(method_of(event))
    # A name the catalog did not route is any string a client sent: not a label value.
    attributes = target_attributes(method, event.exposed_name if event.server else OTHER)
    attributes["network.transport"] = "tcp"
    attributes["network.protocol.name"] = "http"
    if event.protocol_version:
        attributes["mcp.protocol.version"] = event.protocol_version
    if event.outcome == events_pb2.OUTCOME_TOOL_ERROR:
        attributes["error.type"] = "tool_error"
    elif event.outcome == events_pb2.OUTCOME_ERROR:
        attributes["error.type"] = error_label(event.error_code) if event.error_code else OTHER
    return attributes


class EdgeMeters:
    def __init__(self, meter: Meter) -> None:
        self._duration = meter.create_histogram(
            "mcp.server.operation.duration",
            unit="s",
            description="MCP request duration as observed on the receiver from the time it was "
            "received until the result or ack is sent.",
        )
        self._calls = meter.create_counter(
            "mcpgw.calls", description="tools/call requests by server, tool, virtual key and outcome"
        )
        self._meter = meter

    def observe(self, event: events_pb2.OperationEvent) -> None:
        """Count one finished operation (every record the edge submits)."""
        seconds = max(0, event.end_unix_nano - event.start_unix_nano) / 1e9
        self._duration.record(seconds, operation_attributes(event))
        if method_of(event) == "tools/call":
            self._calls.add(
                1,
                {
                    "mcpgw.server": event.server or OTHER,
                    "mcpgw.tool": event.tool or OTHER,
                    "mcpgw.virtual_key_id": event.virtual_key_id,
                    "mcpgw.outcome": outcome_name(event),
                },
            )

    def held(
        self,
        calls: Callable[[], int],
        streams: Callable[[], int],
        sessions: Callable[[], int],
        spooled: Callable[[], int],
    ) -> None:
        """What the edge holds, read at each collection (nothing on the hot path)."""
        meter = self._meter
        gauge(meter, "mcpgw.calls.in_flight", "tools/call requests in flight", lambda: [(calls(), {})])
        gauge(meter, "mcpgw.streams.open", "open GET and SSE streams", lambda: [(streams(), {})])
        total(meter, "mcpgw.sessions.started", "MCP sessions this edge issued", lambda: [(sessions(), {})])
        gauge(meter, "mcpgw.audit.backlog", "audit records not yet stored", lambda: [(spooled(), {})])
