"""What every service reads the same way off an operation's record (OperationEvent)."""

from __future__ import annotations

from services.contracts import events_pb2

# How an outcome is named in records, labels, spans and the API.
OUTCOME_NAMES = {
    events_pb2.OUTCOME_OK: "ok",
    events_pb2.OUTCOME_TOOL_ERROR: "tool_error",
    events_pb2.OUTCOME_ERROR: "error",
}
OUTCOMES = {name: value for value, name in OUTCOME_NAMES.items()}
UNKNOWN_OUTCOME = "unknown"


def outcome_name(event: events_pb2.OperationEvent) -> str:
    return OUTCOME_NAMES.get(event.outcome, UNKNOWN_OUTCOME)


def method_of(event: events_pb2.OperationEvent) -> str:
    """The record's JSON-RPC method (records of edges older than the field were tool calls)."""
    return event.method or "tools/call"
