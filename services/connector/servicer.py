"""The Connector gRPC service: calls forwarded to downstream sessions, results streamed back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import mcp_types as types
import orjson
from mcp.shared.dispatcher import ProgressFnT

from services.connector.errors import (
    DownstreamError,
    DownstreamRejectedError,
    DownstreamTimeoutError,
    NotConnectedError,
)
from services.connector.pool import DownstreamPool
from services.connector.relay import CallRelay, Response
from services.contracts import connector_pb2, connector_pb2_grpc
from services.rpc import abort

log = logging.getLogger(__name__)


def call_error(exc: DownstreamError) -> connector_pb2.CallError:
    """The CallError the edge maps to what its client sees."""
    if isinstance(exc, DownstreamRejectedError):
        error = exc.error
        return connector_pb2.CallError(
            code=error.code,
            message=error.message,
            data_json=b"" if error.data is None else orjson.dumps(error.data),
            reason="downstream",
        )
    if isinstance(exc, NotConnectedError):
        # Nothing reached the downstream: another connector may take the call.
        reason = "not_connected"
    else:
        reason = "timeout" if isinstance(exc, DownstreamTimeoutError) else "unavailable"
    code = types.REQUEST_TIMEOUT if reason == "timeout" else types.CONNECTION_CLOSED
    return connector_pb2.CallError(code=code, message=str(exc), reason=reason)


def _not_configured(server: str) -> DownstreamError:
    return NotConnectedError(server, f"server {server!r} is not configured on this connector")


def _json_object(raw: bytes) -> dict[str, Any] | None:
    value = orjson.loads(raw) if raw else None
    return value if isinstance(value, dict) else None


class ConnectorServicer(connector_pb2_grpc.ConnectorServicer):
    def __init__(self, pool: DownstreamPool) -> None:
        self._pool = pool

    async def _call(
        self,
        request: connector_pb2.CallToolRequest,
        meta: dict[str, Any] | None,
        on_progress: ProgressFnT | None,
        relay: CallRelay | None = None,
    ) -> connector_pb2.CallToolOutcome:
        try:
            downstream = await self._pool.route(request.server, request.key_id)
            if downstream is None:
                raise _not_configured(request.server)
            result = await downstream.call_tool(
                request.tool,
                request.arguments_json,
                meta,
                request.timeout_seconds or None,
                on_progress,
                relay,
            )
        except DownstreamError as exc:
            return connector_pb2.CallToolOutcome(error=call_error(exc))
        return connector_pb2.CallToolOutcome(
            result=connector_pb2.ToolResult(result_json=result.json, is_error=result.is_error)
        )

    async def CallTool(
        self, request: connector_pb2.CallToolRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.CallToolOutcome:
        # grpc cancels this coroutine when the edge cancels the RPC; the downstream call goes with it.
        return await self._call(request, _json_object(request.meta_json), None)

    async def StreamTool(
        self,
        request_iterator: AsyncIterator[connector_pb2.CallToolMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[connector_pb2.CallToolUpdate]:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("call"):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the first message must be the call")
        request = first.call
        meta = _json_object(request.meta_json)
        token = None if meta is None else meta.get("progressToken")
        updates: asyncio.Queue[connector_pb2.CallToolUpdate] = asyncio.Queue()
        replies: dict[str, asyncio.Future[Response]] = {}
        asked = itertools.count(1)

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            params: dict[str, Any] = {"progressToken": token, "progress": progress}
            if total is not None:
                params["total"] = total
            if message is not None:
                params["message"] = message
            await notify({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

        async def notify(message: dict[str, Any]) -> None:
            updates.put_nowait(connector_pb2.CallToolUpdate(notification_json=orjson.dumps(message)))

        async def ask(method: str, params: dict[str, Any] | None) -> Response:
            request_id = f"s{next(asked)}"
            replies[request_id] = asyncio.get_running_loop().create_future()
            updates.put_nowait(
                connector_pb2.CallToolUpdate(
                    request=connector_pb2.ServerRequest(
                        request_id=request_id, method=method, params_json=orjson.dumps(params or {})
                    )
                )
            )
            try:
                return await replies[request_id]
            finally:
                del replies[request_id]

        async def read_replies() -> None:
            async for message in request_iterator:
                reply = message.reply
                waiting = replies.get(reply.request_id)
                response = _json_object(reply.response_json)
                if waiting is not None and not waiting.done() and response is not None:
                    waiting.set_result(response)

        async def call() -> None:
            relay = CallRelay(notify, ask)
            outcome = await self._call(request, meta, on_progress if token is not None else None, relay)
            updates.put_nowait(connector_pb2.CallToolUpdate(outcome=outcome))

        tasks = [asyncio.create_task(call()), asyncio.create_task(read_replies())]
        try:
            while True:
                update = await updates.get()
                yield update
                if update.HasField("outcome"):
                    return
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def ListTools(
        self, request: connector_pb2.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.ListToolsResponse:
        downstream = self._pool.get(request.server)
        if downstream is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no server named {request.server!r}")
        try:
            tools = await downstream.list_tools()
        except DownstreamError as exc:
            await abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return connector_pb2.ListToolsResponse(tools_json=[orjson.dumps(t) for t in tools])

    async def Forward(
        self, request: connector_pb2.ForwardRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.ForwardOutcome:
        try:
            downstream = await self._pool.route(request.server, request.key_id)
            if downstream is None:
                raise _not_configured(request.server)
            result = await downstream.request(
                request.method, request.params_json, request.timeout_seconds or None
            )
        except DownstreamError as exc:
            return connector_pb2.ForwardOutcome(error=call_error(exc))
        return connector_pb2.ForwardOutcome(result_json=result)
