"""The connector's end of the `Calls` stream: many unary tool calls over one gRPC stream.

A unary RPC per call costs both processes a call object, an HTTP/2 stream and its
metadata; here each message carries every call (or outcome) ready at that moment.
A connector that stops retires its streams: the edge sends their calls elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import mcp_types as types

from services.connector.telemetry import Metadata
from services.contracts import connector_pb2
from services.rpc import MAX_MESSAGE_BYTES, Coalescer
from services.telemetry import w3c_metadata

# What one outcome may weigh, with room for its batch's framing.
MAX_OUTCOME_BYTES = MAX_MESSAGE_BYTES - 1024

Run = Callable[[connector_pb2.CallToolRequest, Metadata], Awaitable[connector_pb2.CallToolOutcome]]
"""(request, its trace metadata) -> the call's outcome, every failure a named CallError."""


@dataclass(frozen=True, slots=True)
class _Retire:
    def ByteSize(self) -> int:
        return 2


class CallStream:
    """One `Calls` RPC: a task per call it carries, cancelled by its id or with the stream."""

    def __init__(self, run: Run, context: grpc.aio.ServicerContext) -> None:
        self._run = run
        self._outcomes: Coalescer[connector_pb2.MuxedOutcome | _Retire] = Coalescer(self._write)
        self._context = context
        self._running: dict[int, asyncio.Task[None]] = {}
        self._retired = False

    def retire(self) -> None:
        """Tell the edge to send no more calls here; those that still come are refused (nothing
        runs, so another replica may take them) and those running end as usual."""
        if not self._retired:
            self._retired = True
            self._outcomes.put(_Retire())

    async def _write(self, items: list[connector_pb2.MuxedOutcome | _Retire]) -> None:
        outcomes = [i for i in items if isinstance(i, connector_pb2.MuxedOutcome)]
        retire = len(outcomes) < len(items)
        await self._context.write(connector_pb2.OutcomeBatch(outcomes=outcomes, retire=retire))

    async def serve(self, batches: AsyncIterator[connector_pb2.CallBatch]) -> None:
        """Run the calls until the edge half-closes and every call has its outcome written."""
        writer = asyncio.create_task(self._outcomes.run())
        try:
            async for batch in batches:
                for muxed in batch.calls:
                    if self._retired:
                        self._outcomes.put(_refused(muxed))
                    else:
                        self._running[muxed.id] = asyncio.create_task(self._serve_one(muxed))
                for call_id in batch.cancelled:
                    running = self._running.pop(call_id, None)
                    if running is not None:
                        running.cancel()
            # Half-closed: the calls still running end first, then their outcomes are written.
            while self._running:
                await asyncio.wait(list(self._running.values()))
            self._outcomes.close()
            await writer
        finally:
            # The edge cancelled the stream (or it broke): its calls end with it, downstream too.
            left = {writer, *self._running.values()}
            for task in left:
                task.cancel()
            await asyncio.wait(left)

    async def _serve_one(self, muxed: connector_pb2.MuxedCall) -> None:
        try:
            outcome = await self._run(muxed.request, w3c_metadata(muxed.traceparent, muxed.tracestate))
        finally:
            self._running.pop(muxed.id, None)
        if outcome.ByteSize() > MAX_OUTCOME_BYTES:
            # Written, it would break the stream and every call on it: this call fails alone.
            error = connector_pb2.CallError(
                code=types.INTERNAL_ERROR,
                message=f"server {muxed.request.server!r} sent a result of {outcome.ByteSize()} bytes, "
                f"over the gateway's {MAX_OUTCOME_BYTES}",
                failure=connector_pb2.FAILURE_PROTOCOL,
            )
            outcome = connector_pb2.CallToolOutcome(error=error)
        self._outcomes.put(connector_pb2.MuxedOutcome(id=muxed.id, outcome=outcome))


def _refused(muxed: connector_pb2.MuxedCall) -> connector_pb2.MuxedOutcome:
    error = connector_pb2.CallError(
        code=types.CONNECTION_CLOSED,
        message=f"the connector is stopping: the call to server {muxed.request.server!r} did not run",
        failure=connector_pb2.FAILURE_NOT_CONNECTED,
    )
    return connector_pb2.MuxedOutcome(id=muxed.id, outcome=connector_pb2.CallToolOutcome(error=error))
