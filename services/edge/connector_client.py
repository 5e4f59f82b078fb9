"""The edge's client of the connector service: one request to a downstream as one gRPC call.

Every RPC has a deadline: the call's own timeout (which the connector enforces and
answers with a named error) plus a grace for the hop, so a connector that never answers
costs a client at most that long, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import grpc
import orjson

from services.contracts import connector_pb2, connector_pb2_grpc
from services.edge.multiplexing import CallMux, CancelledByClientError, DeadlineError, StreamBrokenError
from services.telemetry import TraceContext, w3c_metadata

# A connector that holds no session with the server refused before anything was sent, so
# the call is tried again: round robin takes it to another connector replica.
ATTEMPTS = 2
# What the gRPC deadline adds to a call's timeout: the connector answers a timed-out call
# itself (a named error), and this is the time that answer has to arrive.
DEADLINE_GRACE_SECONDS = 5.0
# How long a call waits for a connector while none is reachable (e.g. the one there is,
# restarting) before it fails as unavailable.
CONNECTOR_WAIT_SECONDS = 5.0


class ConnectorUnavailableError(ConnectionError):
    """No connector answered, or none within the call's deadline."""


class CallCancelledError(Exception):
    """The call was cancelled (its `cancelled` event set) before its outcome came."""


class Cancellable(Protocol):
    """A call in flight at the connector (its RPC, or its place on a multiplexed stream)."""

    def cancel(self) -> bool: ...


Ask = Callable[[str, bytes], Awaitable[dict[str, Any]]]
"""(method, params JSON) -> the client's {"result": ...} or {"error": ...}."""


def _refused(outcome: connector_pb2.CallToolOutcome | connector_pb2.ForwardOutcome) -> bool:
    return outcome.HasField("error") and outcome.error.failure == connector_pb2.FAILURE_NOT_CONNECTED


def _unavailable(exc: grpc.aio.AioRpcError) -> ConnectorUnavailableError:
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ConnectorUnavailableError("the connector did not answer within the call's deadline")
    return ConnectorUnavailableError(exc.details() or exc.code().name)


def trace_metadata(trace: TraceContext | None) -> tuple[tuple[str, str], ...]:
    """The W3C headers the connector continues the call's trace from (none: no trace)."""
    return () if trace is None else w3c_metadata(trace.traceparent, trace.tracestate)


class ConnectorClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        wait_seconds: float = CONNECTOR_WAIT_SECONDS,
        mux: CallMux | None = None,
    ) -> None:
        self._channel = channel
        self._stub = connector_pb2_grpc.ConnectorStub(channel)
        self._wait = wait_seconds
        # Unary calls go over its streams; without one, a unary RPC each.
        self._mux = mux

    async def _reachable(self) -> None:
        """Wait (a little) for a connector while none is connected: one that is restarting
        takes the call a moment later instead of every call failing meanwhile. Nothing was
        sent yet, so nothing runs twice; past the wait the call fails as unavailable."""
        if self._channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
            return
        with anyio.move_on_after(self._wait):
            await self._channel.channel_ready()

    async def call_tool(
        self,
        request: connector_pb2.CallToolRequest,
        trace: TraceContext,
        on_notification: Callable[[bytes], object] | None = None,
        ask: Ask | None = None,
        cancelled: anyio.Event | None = None,
        on_rpc: Callable[[Cancellable], object] | None = None,
    ) -> connector_pb2.CallToolOutcome:
        """The call's outcome; with `on_notification`, what the downstream sends before it goes
        there, and with `ask`, its requests are answered by the client. A streamed call ends
        with CallCancelledError once `cancelled` is set; a unary one once the RPC `on_rpc`
        is handed is cancelled (no task to cancel: grpc's cancellation of a task awaiting it
        escapes cancel scopes, and a task per call costs the hot path)."""
        metadata = trace_metadata(trace)
        deadline = request.timeout_seconds + DEADLINE_GRACE_SECONDS
        relayed = on_notification is not None or ask is not None
        outcome: connector_pb2.CallToolOutcome
        for attempt in range(ATTEMPTS):
            await self._reachable()
            try:
                # A refused call is tried again as a unary RPC: round robin moves it to another
                # replica, where a stream's replica was fixed when it opened.
                if not relayed and self._mux is not None and attempt == 0:
                    outcome = await self._muxed(self._mux, request, trace, deadline, on_rpc)
                elif not relayed:
                    # Unary: the cheapest gRPC call there is (without a mux), and most tool calls are this.
                    rpc = self._stub.CallTool(request, metadata=metadata, timeout=deadline)
                    if on_rpc is not None:
                        on_rpc(rpc)
                    try:
                        outcome = await rpc
                    except asyncio.CancelledError:
                        current = asyncio.current_task()
                        if rpc.cancelled() and on_rpc is not None and not (current and current.cancelling()):
                            raise CallCancelledError from None
                        raise
                else:
                    outcome = await self._relayed(
                        request, metadata, deadline, on_notification, ask, cancelled
                    )
            except grpc.aio.AioRpcError as exc:
                raise _unavailable(exc) from None
            if not _refused(outcome):
                break
        return outcome

    @staticmethod
    async def _muxed(
        mux: CallMux,
        request: connector_pb2.CallToolRequest,
        trace: TraceContext,
        deadline: float,
        on_rpc: Callable[[Cancellable], object] | None,
    ) -> connector_pb2.CallToolOutcome:
        call = mux.call(request, trace, deadline)
        if on_rpc is not None:
            on_rpc(call)
        try:
            return await call.outcome()
        except CancelledByClientError:
            raise CallCancelledError from None
        except (StreamBrokenError, DeadlineError) as exc:
            raise ConnectorUnavailableError(str(exc)) from None

    async def _relayed(
        self,
        request: connector_pb2.CallToolRequest,
        metadata: tuple[tuple[str, str], ...],
        deadline: float,
        on_notification: Callable[[bytes], object] | None,
        ask: Ask | None,
        cancelled: anyio.Event | None = None,
    ) -> connector_pb2.CallToolOutcome:
        """grpcio leaks a batch's native ops when the task awaiting it is cancelled, or when
        the batch fails (grpc/grpc#43360, about 100 bytes a time): so nothing here cancels a
        task in the middle of a read. The edge half-closes as soon as it has nothing more to
        send (the connector's read of replies then ends instead of being cut), a cancelled
        call cancels the RPC and lets the read in flight end by itself, and a call that got
        its outcome is read to its status rather than cancelled."""
        call = self._stub.StreamTool(metadata=metadata, timeout=deadline)
        answering: set[asyncio.Task[None]] = set()

        async def cancel_when_asked(event: anyio.Event) -> None:
            await event.wait()
            call.cancel()

        async def answer(server_request: connector_pb2.ServerRequest) -> None:
            if ask is None:
                error = {
                    "code": -32601,
                    "message": f"mcpgw: the client cannot answer {server_request.method}",
                }
                response: dict[str, Any] = {"error": error}
            else:
                response = await ask(server_request.method, server_request.params_json)
            reply = connector_pb2.ClientReply(
                request_id=server_request.request_id, response_json=orjson.dumps(response)
            )
            await call.write(connector_pb2.CallToolMessage(reply=reply))

        outcome: connector_pb2.CallToolOutcome | None = None
        try:
            await call.write(connector_pb2.CallToolMessage(call=request))
            if ask is None:
                await call.done_writing()
            if cancelled is not None:
                watcher = asyncio.create_task(cancel_when_asked(cancelled))
                answering.add(watcher)
                watcher.add_done_callback(answering.discard)
            async for update in call:
                if update.HasField("outcome"):
                    # Read on to the RPC's status (it follows at once) rather than cutting it.
                    outcome = update.outcome
                    if ask is not None:
                        await call.done_writing()
                elif update.HasField("request"):
                    task = asyncio.create_task(answer(update.request))
                    answering.add(task)
                    task.add_done_callback(answering.discard)
                elif on_notification is not None:
                    on_notification(update.notification_json)
            if outcome is not None:
                return outcome
        except grpc.aio.AioRpcError:
            if outcome is not None:
                return outcome  # the RPC failed after its outcome came: the outcome stands
            raise
        except asyncio.CancelledError:
            # grpc raises CancelledError from the read of an RPC cancelled with call.cancel().
            current = asyncio.current_task()
            if cancelled is None or not cancelled.is_set() or (current is not None and current.cancelling()):
                raise
            raise CallCancelledError from None
        finally:
            for task in answering:
                task.cancel()
            for task in list(answering):
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await task
            call.cancel()
        raise ConnectorUnavailableError("the connector ended the call without an outcome")

    async def forward(
        self, request: connector_pb2.ForwardRequest, trace: TraceContext | None
    ) -> connector_pb2.ForwardOutcome:
        """Any request other than tools/call, answered by the downstream it names."""
        for _ in range(ATTEMPTS):
            await self._reachable()
            try:
                outcome: connector_pb2.ForwardOutcome = await self._stub.Forward(
                    request,
                    metadata=trace_metadata(trace),
                    timeout=request.timeout_seconds + DEADLINE_GRACE_SECONDS,
                )
            except grpc.aio.AioRpcError as exc:
                raise _unavailable(exc) from None
            if not _refused(outcome):
                break
        return outcome
