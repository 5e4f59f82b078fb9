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


# The methods whose span names carry their target (a tool or prompt name: bounded; a
# resource URI is not, so it is no span name).
NAMED_TARGETS = ("tools/call", "prompts/get")


def target_attributes(method: str, target: str) -> dict[str, str | int]:
    """The MCP semantic conventions' method and target attributes of an operation."""
    attributes: dict[str, str | int] = {"mcp.method.name": method}
    if method == "tools/call":
        attributes["gen_ai.tool.name"] = target
        attributes["gen_ai.operation.name"] = "execute_tool"
    elif method == "prompts/get" and target:
        attributes["gen_ai.prompt.name"] = target
    return attributes


def span_name(method: str, target: str) -> str:
    """`{method} {target}` for a tool or prompt, else the method alone."""
    return f"{method} {target}" if target and method in NAMED_TARGETS else method
