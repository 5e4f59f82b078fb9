"""The Connector gRPC service: calls forwarded to downstream sessions, results streamed back."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import mcp_types as types
import orjson
from mcp.shared.dispatcher import ProgressFnT

from services.connector.bulkheads import Bulkhead, BulkheadFullError, Bulkheads, Capacity
from services.connector.downstream import Downstream
from services.connector.errors import (
    ConnectorFaultError,
    DownstreamError,
    DownstreamProtocolError,
    DownstreamRejectedError,
    DownstreamTimeoutError,
    DownstreamUnavailableError,
    NeedsConnectionError,
    NotConnectedError,
)
from services.connector.multiplexing import CallStream
from services.connector.pool import DownstreamPool
from services.connector.relay import CallRelay, Response
from services.connector.telemetry import DownstreamTelemetry, Metadata, with_context
from services.contracts import connector_pb2, connector_pb2_grpc
from services.rpc import abort

log = logging.getLogger(__name__)


FAILURES: tuple[tuple[type[DownstreamError], connector_pb2.Failure.ValueType, int], ...] = (
    # Most specific first: NotConnectedError is a DownstreamUnavailableError.
    (NeedsConnectionError, connector_pb2.FAILURE_NEEDS_CONNECTION, types.INVALID_REQUEST),
    (NotConnectedError, connector_pb2.FAILURE_NOT_CONNECTED, types.CONNECTION_CLOSED),
    (DownstreamUnavailableError, connector_pb2.FAILURE_UNAVAILABLE, types.CONNECTION_CLOSED),
    (DownstreamTimeoutError, connector_pb2.FAILURE_TIMEOUT, types.REQUEST_TIMEOUT),
    (DownstreamProtocolError, connector_pb2.FAILURE_PROTOCOL, types.INTERNAL_ERROR),
)
# The JSON-RPC code of a limited call, as the edge answers its own refusals.
LIMITED = -32029
# Updates of one streamed call waiting for the edge to take them. Progress and log messages
# beyond this are dropped; requests and the outcome wait for room.
UPDATES_BUFFER = 64


def call_error(exc: DownstreamError) -> connector_pb2.CallError:
    """The CallError the edge maps to what its client sees."""
    if isinstance(exc, DownstreamRejectedError):
        error = exc.error
        return connector_pb2.CallError(
            code=error.code,
            message=error.message,
            data_json=b"" if error.data is None else orjson.dumps(error.data),
            failure=connector_pb2.FAILURE_DOWNSTREAM,
        )
    if isinstance(exc, BulkheadFullError):
        data = {"limit": "concurrency", "retryAfter": max(1, math.ceil(exc.retry_after))}
        return connector_pb2.CallError(
            code=LIMITED,
            message=str(exc),
            data_json=orjson.dumps(data),
            failure=connector_pb2.FAILURE_LIMITED,
        )
    for kind, failure, code in FAILURES:
        if isinstance(exc, kind):
            return connector_pb2.CallError(code=code, message=str(exc), failure=failure)
    return connector_pb2.CallError(
        code=types.INTERNAL_ERROR, message=str(exc), failure=connector_pb2.FAILURE_CONNECTOR
    )


def _not_configured(server: str) -> DownstreamError:
    return NotConnectedError(server, f"server {server!r} is not configured on this connector")


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class ConnectorServicer(connector_pb2_grpc.ConnectorServicer):
    def __init__(self, pool: DownstreamPool, telemetry: DownstreamTelemetry | None = None) -> None:
        self._pool = pool
        self._telemetry = telemetry or DownstreamTelemetry(None)
        self._bulkheads = Bulkheads()
        self._streams: set[CallStream] = set()
        self._stopping = False

    def retire_streams(self) -> None:
        """The connector is stopping: every `Calls` stream, open or opened from now on, is told
        to take no more calls, so the edges send them to another replica."""
        self._stopping = True
        for stream in self._streams:
            stream.retire()

    async def _route(self, server: str, key_id: str) -> Downstream:
        downstream = await self._pool.route(server, key_id)
        if downstream is None:
            raise _not_configured(server)
        return downstream

    async def _call(
        self,
        request: connector_pb2.CallToolRequest,
        metadata: Metadata,
        meta: dict[str, Any] | None,
        on_progress: ProgressFnT | None,
        relay: CallRelay | None = None,
    ) -> connector_pb2.CallToolOutcome:
        """The call's outcome, whatever happens below: every failure is a named CallError."""
        held: list[Bulkhead] = []
        try:
            try:
                for bulkhead in self._bulkheads_of(request):
                    await bulkhead.acquire(request.server)
                    held.append(bulkhead)
                downstream = await self._route(request.server, request.key_id)
            except Exception as exc:
                return connector_pb2.CallToolOutcome(error=_failure(request.server, exc))
            return await self._reach(downstream, request, metadata, meta, on_progress, relay)
        finally:
            for bulkhead in held:
                bulkhead.release()

    def _bulkheads_of(self, request: connector_pb2.CallToolRequest) -> list[Bulkhead]:
        """The key's bulkhead, then the server's: a call holds a slot of each while it runs."""
        held = []
        if request.key_max_concurrency > 0:
            capacity = Capacity(
                request.key_max_concurrency, request.key_max_queue, request.key_queue_timeout_seconds or 30.0
            )
            bulkhead = self._bulkheads.of("key", request.key_id, capacity)
            if bulkhead is not None:
                held.append(bulkhead)
        bulkhead = self._bulkheads.of("server", request.server, self._pool.capacity(request.server))
        if bulkhead is not None:
            held.append(bulkhead)
        return held

    async def _reach(
        self,
        downstream: Downstream,
        request: connector_pb2.CallToolRequest,
        metadata: Metadata,
        meta: dict[str, Any] | None,
        on_progress: ProgressFnT | None,
        relay: CallRelay | None,
    ) -> connector_pb2.CallToolOutcome:
        with self._telemetry.hop(metadata, downstream.config, "tools/call", request.tool) as hop:
            try:
                result = await downstream.call_tool(
                    request.tool,
                    request.arguments_json,
                    with_context(meta, hop),
                    request.timeout_seconds or None,
                    on_progress,
                    relay,
                    request.task_json,
                    traceparent=hop.traceparent,
                )
            except Exception as exc:
                error = _failure(request.server, self._pool.failed(downstream, request.key_id, exc))
                hop.failed(error.code, error.message)
                return connector_pb2.CallToolOutcome(error=error)
            if result.is_error:
                hop.tool_error()
        return connector_pb2.CallToolOutcome(
            result=connector_pb2.ToolResult(result_json=result.json, is_error=result.is_error)
        )

    async def CallTool(
        self, request: connector_pb2.CallToolRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.CallToolOutcome:
        # grpc cancels this coroutine when the edge cancels the RPC; the downstream call goes with it.
        return await self._call(request, context.invocation_metadata(), _json_object(request.meta_json), None)

    # grpc.aio lets a streaming handler write with context.write and return None (what lets
    # one writer batch the outcomes of many tasks); the generated stubs know only iterators.
    async def Calls(  # type: ignore[override]
        self, request_iterator: AsyncIterator[connector_pb2.CallBatch], context: grpc.aio.ServicerContext
    ) -> None:
        stream = CallStream(self._muxed, context)
        if self._stopping:
            stream.retire()
        self._streams.add(stream)
        try:
            await stream.serve(request_iterator)
        finally:
            self._streams.discard(stream)

    async def _muxed(
        self, request: connector_pb2.CallToolRequest, metadata: Metadata
    ) -> connector_pb2.CallToolOutcome:
        try:
            return await self._call(request, metadata, _json_object(request.meta_json), None)
        except Exception as exc:
            # Every call on the stream gets an outcome: the edge's caller is waiting for it.
            return connector_pb2.CallToolOutcome(error=_failure(request.server, exc))

    async def StreamTool(
        self,
        request_iterator: AsyncIterator[connector_pb2.CallToolMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[connector_pb2.CallToolUpdate]:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("call"):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the first message must be the call")
        call = StreamedCall(first.call)
        metadata = context.invocation_metadata()

        async def serve() -> None:
            try:
                outcome = await self._call(call.request, metadata, call.meta, call.on_progress, call.relay)
            finally:
                # Whatever ended the call (even a cancellation), the stream ends with it.
                call.finish()
            await call.updates.put(connector_pb2.CallToolUpdate(outcome=outcome))

        tasks = [asyncio.create_task(serve()), asyncio.create_task(call.read_replies(request_iterator))]
        try:
            while True:
                update = await call.updates.get()
                if update is None:
                    return
                yield update
                if update.HasField("outcome"):
                    return
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

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
            downstream = await self._route(request.server, request.key_id)
        except Exception as exc:
            return connector_pb2.ForwardOutcome(error=_failure(request.server, exc))
        params = _json_object(request.params_json) or {}
        target = params.get("name") if request.method == "prompts/get" else ""
        metadata = context.invocation_metadata()
        with self._telemetry.hop(metadata, downstream.config, request.method, str(target or "")) as hop:
            params_json = request.params_json
            if hop.context:
                meta = params.get("_meta")
                params["_meta"] = with_context(meta if isinstance(meta, dict) else None, hop)
                params_json = orjson.dumps(params)
            try:
                result = await downstream.request(
                    request.method, params_json, request.timeout_seconds or None, traceparent=hop.traceparent
                )
            except Exception as exc:
                error = _failure(request.server, self._pool.failed(downstream, request.key_id, exc))
                hop.failed(error.code, error.message)
                return connector_pb2.ForwardOutcome(error=error)
        return connector_pb2.ForwardOutcome(result_json=result)


def _failure(server: str, exc: Exception) -> connector_pb2.CallError:
    """The CallError for anything a call raised; what is not a DownstreamError is a fault of
    the connector's own, logged with its traceback and named to the client."""
    # What a task group raises is its one leaf's failure: name that (it may be a DownstreamError).
    leaf: BaseException = exc
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    if isinstance(leaf, DownstreamError):
        return call_error(leaf)
    log.error("a call to server %s failed inside the connector", server, exc_info=exc)
    return call_error(ConnectorFaultError(server, f"mcpgw connector fault: {type(leaf).__name__}: {leaf}"))


class StreamedCall:
    """One StreamTool call's state: its bounded queue of updates for the edge, and the
    requests it relayed to the client, awaiting their replies."""

    def __init__(self, request: connector_pb2.CallToolRequest) -> None:
        self.request = request
        self.meta = _json_object(request.meta_json)
        self._token = None if self.meta is None else self.meta.get("progressToken")
        # None marks the end: the call is over and nothing more will come.
        self.updates: asyncio.Queue[connector_pb2.CallToolUpdate | None] = asyncio.Queue(UPDATES_BUFFER)
        self._replies: dict[str, asyncio.Future[Response]] = {}
        self._asked = itertools.count(1)
        self.relay = CallRelay(self._notify, self._ask)
        self.on_progress: ProgressFnT | None = self._progress if self._token is not None else None

    def finish(self) -> None:
        for waiting in self._replies.values():
            waiting.cancel()

    async def _progress(self, progress: float, total: float | None, message: str | None) -> None:
        params: dict[str, Any] = {"progressToken": self._token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self._notify({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    async def _notify(self, message: dict[str, Any]) -> None:
        try:
            self.updates.put_nowait(connector_pb2.CallToolUpdate(notification_json=orjson.dumps(message)))
        except asyncio.QueueFull:
            # An edge that stopped reading loses a notification, not the connector its memory.
            log.warning(
                "call to %s: %s dropped, the edge is not reading", self.request.server, message.get("method")
            )

    async def _ask(self, method: str, params: dict[str, Any] | None) -> Response:
        request_id = f"s{next(self._asked)}"
        waiting: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = waiting
        try:
            request = connector_pb2.ServerRequest(
                request_id=request_id, method=method, params_json=orjson.dumps(params or {})
            )
            await self.updates.put(connector_pb2.CallToolUpdate(request=request))
            return await waiting
        finally:
            del self._replies[request_id]

    async def read_replies(self, messages: AsyncIterator[connector_pb2.CallToolMessage]) -> None:
        async for message in messages:
            reply = message.reply
            waiting = self._replies.get(reply.request_id)
            response = _json_object(reply.response_json)
            if waiting is not None and not waiting.done() and response is not None:
                waiting.set_result(response)
