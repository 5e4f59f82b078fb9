"""The edge's metrics: every operation's duration (the MCP semantic conventions'
`mcp.server.operation.duration`), tool calls by server, tool, key and outcome, and gauges
of what the edge holds (calls in flight, open streams, sessions started, audit spool)."""

from __future__ import annotations

from collections.abc import Callable

from services.contracts import events_pb2
from services.edge.errors import LimitedError
from services.metrics import OTHER, ServiceMetrics, Tally, error_label, gauge, method_label, total
from services.operations import method_of, outcome_name, target_attributes

SCOPE = "mcpgw.edge"
LIMITED_CODE = LimitedError.code


# An operation's duration labels as a key: method, target, protocol version, error type.
OperationKey = tuple[str, str, str, str]


def operation_key(event: events_pb2.OperationEvent) -> OperationKey:
    """A record's duration labels' values, bounded: a name the catalog did not route is any
    string a client sent, so it is OTHER, and so is an error code outside JSON-RPC's range."""
    if event.outcome == events_pb2.OUTCOME_TOOL_ERROR:
        error = "tool_error"
    elif event.outcome == events_pb2.OUTCOME_ERROR:
        error = error_label(event.error_code) if event.error_code else OTHER
    else:
        error = ""
    target = event.exposed_name if event.server else OTHER
    return method_label(method_of(event)), target, event.protocol_version, error


def operation_attributes(key: OperationKey) -> dict[str, str | int]:
    """The duration labels of `key`, as the conventions name them."""
    method, target, protocol_version, error = key
    attributes = target_attributes(method, target)
    attributes["network.transport"] = "tcp"
    attributes["network.protocol.name"] = "http"
    if protocol_version:
        attributes["mcp.protocol.version"] = protocol_version
    if error:
        attributes["error.type"] = error
    return attributes


CALL_LABELS = ("mcpgw.server", "mcpgw.tool", "mcpgw.virtual_key_id", "mcpgw.outcome")


class EdgeMeters:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self._meter = metrics.meter(SCOPE)
        self._duration = metrics.durations(
            SCOPE,
            "mcp.server.operation.duration",
            "MCP request duration as observed on the receiver from the time it was "
            "received until the result or ack is sent.",
        )
        self._calls = Tally(
            self._meter,
            "mcpgw.calls",
            "tools/call requests by server, tool, virtual key and outcome",
            CALL_LABELS,
        )
        self._limited = Tally(
            self._meter,
            "mcpgw.calls.limited",
            "tools/call requests refused by a rate limit, a budget or a bulkhead (the audit says which)",
            CALL_LABELS[:3],
        )

    def observe(self, event: events_pb2.OperationEvent) -> None:
        """Count one finished operation (every record the edge submits)."""
        seconds = max(0, event.end_unix_nano - event.start_unix_nano) / 1e9
        key = operation_key(event)
        self._duration.record(seconds, key, lambda: operation_attributes(key))
        if key[0] == "tools/call":
            server = event.server or OTHER
            self._calls.add((server, event.tool or OTHER, event.virtual_key_id, outcome_name(event)))
            if event.error_code == LIMITED_CODE:
                self._limited.add((server, event.tool or OTHER, event.virtual_key_id))

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
