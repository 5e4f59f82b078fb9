"""The Connector gRPC service: calls forwarded to downstream sessions, results streamed back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import mcp_types as types
import orjson

from services.connector.downstream import (
    DownstreamError,
    DownstreamRejectedError,
    DownstreamTimeoutError,
)
from services.connector.pool import DownstreamPool
from services.contracts import connector_pb2, connector_pb2_grpc
from services.rpc import abort

log = logging.getLogger(__name__)

_DONE = connector_pb2.CallToolOutput()


def _error_output(exc: DownstreamError) -> connector_pb2.CallToolOutput:
    if isinstance(exc, DownstreamRejectedError):
        error = exc.error
        return connector_pb2.CallToolOutput(
            error=connector_pb2.CallError(
                code=error.code,
                message=error.message,
                data_json=b"" if error.data is None else orjson.dumps(error.data),
                reason="downstream",
            )
        )
    reason = "timeout" if isinstance(exc, DownstreamTimeoutError) else "unavailable"
    code = types.REQUEST_TIMEOUT if reason == "timeout" else types.CONNECTION_CLOSED
    return connector_pb2.CallToolOutput(
        error=connector_pb2.CallError(code=code, message=str(exc), reason=reason)
    )


def _json_object(raw: bytes) -> dict[str, Any] | None:
    value = orjson.loads(raw) if raw else None
    return value if isinstance(value, dict) else None


class ConnectorServicer(connector_pb2_grpc.ConnectorServicer):
    def __init__(self, pool: DownstreamPool) -> None:
        self._pool = pool

    async def CallTool(
        self, request_iterator: AsyncIterator[connector_pb2.CallToolInput], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[connector_pb2.CallToolOutput]:
        first = await anext(request_iterator, None)
        if first is None or not first.HasField("start"):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the first message must be start")
        start = first.start
        downstream = self._pool.get(start.server)
        if downstream is None:
            yield _error_output(
                DownstreamError(start.server, f"server {start.server!r} is not configured on this connector")
            )
            return
        meta = _json_object(start.meta_json)
        token = None if meta is None else meta.get("progressToken")
        outputs: asyncio.Queue[connector_pb2.CallToolOutput] = asyncio.Queue()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            params: dict[str, Any] = {"progressToken": token, "progress": progress}
            if total is not None:
                params["total"] = total
            if message is not None:
                params["message"] = message
            notification = {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}
            outputs.put_nowait(connector_pb2.CallToolOutput(notification_json=orjson.dumps(notification)))

        async def call() -> None:
            try:
                result = await downstream.call_tool(
                    start.tool,
                    _json_object(start.arguments_json),
                    meta,
                    start.timeout_seconds or None,
                    on_progress if token is not None else None,
                )
                outputs.put_nowait(
                    connector_pb2.CallToolOutput(
                        result=connector_pb2.ToolResult(
                            result_json=orjson.dumps(result), is_error=result.get("isError") is True
                        )
                    )
                )
            except DownstreamError as exc:
                outputs.put_nowait(_error_output(exc))
            finally:
                outputs.put_nowait(_DONE)

        async def watch_cancel() -> None:
            async for message in request_iterator:
                if message.HasField("cancel"):
                    call_task.cancel()
                    return

        call_task = asyncio.create_task(call())
        cancel_task = asyncio.create_task(watch_cancel())
        try:
            while (output := await outputs.get()) is not _DONE:
                yield output
        finally:
            cancel_task.cancel()
            call_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call_task

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
