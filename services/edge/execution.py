"""Explicit execution: `POST /v1/mcp/tool/execute` (Bifrost's path) runs the tool calls a
model asked for, in the shape the application holds them, under the caller's virtual key.

The body is one call or a list of them: an OpenAI chat `tool_calls[i]` (the default), a
Responses `function_call` (`?format=responses`) or an Anthropic `tool_use`
(`?format=anthropic`); the answer is the matching tool-result message (or list), ready to
append to the conversation. Each call goes through `open_call`, as a client's would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.edge.admission import Admission, sender_of
from services.edge.catalog import Catalog
from services.edge.errors import (
    BadRequestError,
    EdgeError,
    InvalidParamsError,
    LimitedError,
    TransportError,
)
from services.edge.protocol import CallContext, McpHandler
from services.edge.sessions import Session

PATH = "/v1/mcp/tool/execute"
MAX_CALLS = 64
CLIENT_NAME = "tool-execute"


class Format(StrEnum):
    CHAT = "chat"
    RESPONSES = "responses"
    ANTHROPIC = "anthropic"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call a model asked for: its id in the conversation, the tool, the arguments."""

    id: str
    name: str
    arguments: dict[str, Any]


def _field(value: dict[str, Any], name: str, where: str) -> Any:
    if name not in value:
        raise BadRequestError(f"Bad Request: {where}.{name} is missing")
    return value[name]


def _string(value: dict[str, Any], name: str, where: str) -> str:
    found = _field(value, name, where)
    if not isinstance(found, str) or not found:
        raise BadRequestError(f"Bad Request: {where}.{name} must be a non-empty string")
    return found


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    """Arguments as the format carries them: a JSON string (OpenAI) or an object (Anthropic)."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw or "{}")
        except orjson.JSONDecodeError:
            raise BadRequestError(f"Bad Request: {where} is not valid JSON") from None
    if not isinstance(raw, dict):
        raise BadRequestError(f"Bad Request: {where} must be a JSON object")
    return raw


def parse_call(form: Format, value: Any, where: str) -> ToolCall:
    """One tool call of `form`; BadRequestError naming the field that is wrong."""
    if not isinstance(value, dict):
        raise BadRequestError(f"Bad Request: {where} must be an object")
    if form is Format.CHAT:
        function = _field(value, "function", where)
        if not isinstance(function, dict):
            raise BadRequestError(f"Bad Request: {where}.function must be an object")
        arguments = _arguments(function.get("arguments", "{}"), f"{where}.function.arguments")
        return ToolCall(
            _string(value, "id", where), _string(function, "name", f"{where}.function"), arguments
        )
    if form is Format.RESPONSES:
        arguments = _arguments(value.get("arguments", "{}"), f"{where}.arguments")
        return ToolCall(_string(value, "call_id", where), _string(value, "name", where), arguments)
    arguments = _arguments(value.get("input", {}), f"{where}.input")
    return ToolCall(_string(value, "id", where), _string(value, "name", where), arguments)


def parse_calls(form: Format, body: bytes) -> tuple[list[ToolCall], bool]:
    """The calls of a request body, and whether it was a list."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequestError("Bad Request: the body is not valid JSON") from None
    if isinstance(value, list):
        if not value or len(value) > MAX_CALLS:
            raise BadRequestError(f"Bad Request: a list of 1 to {MAX_CALLS} tool calls is expected")
        return [parse_call(form, v, f"[{i}]") for i, v in enumerate(value)], True
    return [parse_call(form, value, "body")], False


def result_text(result: dict[str, Any]) -> str:
    """A CallToolResult as the text a tool message carries: its text blocks, else its
    structuredContent or content as JSON."""
    content = result.get("content") or []
    texts = [c["text"] for c in content if isinstance(c, dict) and c.get("type") == "text" and "text" in c]
    if texts and len(texts) == len(content):
        return "\n".join(texts)
    shown = result.get("structuredContent", content)
    return orjson.dumps(shown).decode()


def tool_message(form: Format, call: ToolCall, result: dict[str, Any]) -> dict[str, Any]:
    """The tool-result message of `form` for one call's CallToolResult."""
    text = result_text(result)
    if form is Format.CHAT:
        return {"role": "tool", "tool_call_id": call.id, "content": text}
    if form is Format.RESPONSES:
        return {"type": "function_call_output", "call_id": call.id, "output": text}
    message: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": call.id,
        "content": [{"type": "text", "text": text}],
    }
    if result.get("isError"):
        message["is_error"] = True
    return message


def status_of(exc: EdgeError) -> int:
    """The HTTP status of a call the gateway refused or could not complete."""
    if isinstance(exc, TransportError | LimitedError):
        return exc.status
    if isinstance(exc, InvalidParamsError):
        return 400
    return 502


def refusal(exc: EdgeError, call: ToolCall | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": "tool_execution_error", "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    answer: dict[str, Any] = {"error": error}
    if call is not None:
        answer["tool_call_id"] = call.id
    return answer


class ToolExecution:
    """The execution endpoint, over the handler every MCP transport uses."""

    def __init__(self, handler: McpHandler, catalog: Callable[[], Catalog], admission: Admission) -> None:
        self._handler = handler
        self._catalog = catalog
        self._admission = admission

    async def serve(self, request: Request) -> Response:
        try:
            return await self._serve(request)
        except EdgeError as exc:
            return _json(refusal(exc), status_of(exc), exc.headers)

    async def _serve(self, request: Request) -> Response:
        self._admission.check_declared(request)
        try:
            form = Format(request.query_params.get("format") or Format.CHAT)
        except ValueError:
            raise BadRequestError(f"Bad Request: format must be one of {[f.value for f in Format]}") from None
        calls, listed = parse_calls(form, await self._admission.body(request))
        view, key_id = self._admission.endpoint_view(self._catalog(), request, "")
        caller = Session("", CLIENT_NAME, key_id, 0, "")
        sender = sender_of(request)
        answers: list[dict[str, Any] | EdgeError] = [{} for _ in calls]

        async def run(index: int, call: ToolCall) -> None:
            ctx = CallContext(caller, call.id, view, sender=sender, operator_approves=True)
            try:
                opened = await self._handler.open_call(ctx, {"name": call.name, "arguments": call.arguments})
                answers[index] = tool_message(form, call, orjson.loads(await opened.result()))
            except EdgeError as exc:
                answers[index] = exc

        async with anyio.create_task_group() as tg:
            for index, call in enumerate(calls):
                tg.start_soon(run, index, call)
        if not listed:
            answer = answers[0]
            if isinstance(answer, EdgeError):
                return _json(refusal(answer), status_of(answer), answer.headers)
            return _json(answer)
        shown = [
            refusal(a, c) if isinstance(a, EdgeError) else a for a, c in zip(answers, calls, strict=True)
        ]
        return _json(shown)


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status, headers=headers, media_type="application/json")
