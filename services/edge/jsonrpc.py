"""Classifying what a client POSTed: requests, notifications and responses (JSON-RPC 2.0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from services.edge.errors import InvalidRequestError, JsonRpcId, NestedTooDeepError, ParseError


@dataclass(frozen=True, slots=True)
class Message:
    kind: Literal["request", "notification", "response"]
    id: JsonRpcId
    method: str
    params: dict[str, Any] | None
    # A response's {"result": ...} or {"error": ...}; None for requests and notifications.
    answer: dict[str, Any] | None = None


# The deepest nesting the gateway carries. orjson writes JSON no deeper than 254 levels, and
# the Python SDK's servers silently drop messages past about 200 (the caller then waits out
# the tool's timeout): 128 is deeper than any real tool's arguments.
MAX_DEPTH = 128


def parse_body(body: bytes) -> tuple[list[Message], bool]:
    """The messages in `body` and whether it was a batch; raises ParseError, InvalidRequestError
    or NestedTooDeepError."""
    too_deep = NestedTooDeepError(f"Invalid params: the message nests deeper than {MAX_DEPTH} levels")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise too_deep from None
        raise ParseError("Parse error: the body is not valid JSON") from None
    # Only a body with that many brackets can nest that deep: two scans in C spare the walk.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _nests_deeper(value, MAX_DEPTH):
        raise too_deep
    if isinstance(value, list):
        if not value:
            raise InvalidRequestError("Invalid Request: an empty batch")
        return [classify(item) for item in value], True
    return [classify(value)], False


def _nests_deeper(value: object, limit: int) -> bool:
    """Whether containers in `value` nest more than `limit` levels (a walk without recursion)."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def classify(value: object) -> Message:
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        raise InvalidRequestError('Invalid Request: expected a JSON-RPC 2.0 object with "jsonrpc": "2.0"')
    has_id = "id" in value
    message_id = value.get("id")
    if has_id and (isinstance(message_id, bool) or not isinstance(message_id, str | int)):
        raise InvalidRequestError("Invalid Request: id must be a string or an integer")
    method = value.get("method")
    if method is None:
        if has_id and ("result" in value or "error" in value):
            answer = {"error": value["error"]} if "error" in value else {"result": value["result"]}
            return Message("response", message_id, "", None, answer)
        raise InvalidRequestError('Invalid Request: "method" is missing')
    if not isinstance(method, str) or not method:
        raise InvalidRequestError('Invalid Request: "method" must be a non-empty string')
    params = value.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidRequestError('Invalid Request: "params" must be an object')
    return Message("request" if has_id else "notification", message_id, method, params)
