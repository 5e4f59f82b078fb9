"""The edge's end of the `Calls` stream: unary tool calls multiplexed over a few gRPC streams.

Each of `lanes` streams carries calls round robin, each message every call ready at
that moment (a unary RPC per call costs both processes far more: see `make bench`).
A stream is opened when first needed, and retired after `max_age` seconds so that
streams spread again over connector replicas that came back (the channel balances
each new stream round robin), or when the connector says it is stopping. A broken stream
fails only the calls it carried; those it never sent are refused, to be tried elsewhere.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import grpc
import mcp_types as types

from services.contracts import connector_pb2, connector_pb2_grpc
from services.rpc import Coalescer
from services.telemetry import TraceContext

log = logging.getLogger(__name__)

LANES = 2
STREAM_MAX_AGE_SECONDS = 60.0


class StreamBrokenError(ConnectionError):
    """The stream a call went out on ended before its outcome came."""


class DeadlineError(TimeoutError):
    """No outcome came within the call's deadline."""


class CancelledByClientError(Exception):
    """The call was cancelled through its handle."""


@dataclass(frozen=True, slots=True)
class _Cancel:
    id: int

    def ByteSize(self) -> int:
        return 10


class _Stream:
    """One `Calls` RPC and the calls awaiting their outcome on it."""

    def __init__(self, stub: connector_pb2_grpc.ConnectorStub, tasks: set[asyncio.Task[None]]) -> None:
        self.rpc = stub.Calls()
        self.opened = time.monotonic()
        self.pending: dict[int, asyncio.Future[connector_pb2.CallToolOutcome]] = {}
        self.broken: str = ""
        self._retired = False
        # Calls taken for a write that found the stream over: they never left the edge.
        self._unsent: list[connector_pb2.MuxedCall] = []
        self._ids = itertools.count(1)
        self._out: Coalescer[connector_pb2.MuxedCall | _Cancel] = Coalescer(self._write)
        for work in (self._write_all(), self._read_all()):
            task = asyncio.create_task(work)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def send(self, muxed: connector_pb2.MuxedCall) -> asyncio.Future[connector_pb2.CallToolOutcome]:
        muxed.id = next(self._ids)
        outcome: asyncio.Future[connector_pb2.CallToolOutcome] = asyncio.get_running_loop().create_future()
        self.pending[muxed.id] = outcome
        self._out.put(muxed)
        return outcome

    def cancel(self, call_id: int) -> None:
        """The connector cancels the call, whose outcome nobody awaits any more."""
        if self.pending.pop(call_id, None) is not None and not self.broken:
            self._out.put(_Cancel(call_id))
            self._close_if_retired()

    def retire(self) -> None:
        """No new calls: the stream half-closes once its last call is over (a cancel can
        still be sent until then) and ends with that call's outcome."""
        self._retired = True
        self._close_if_retired()

    @property
    def retired(self) -> bool:
        return self._retired

    def _close_if_retired(self) -> None:
        if self._retired and not self.pending:
            self._out.close()

    async def _write(self, items: list[connector_pb2.MuxedCall | _Cancel]) -> None:
        calls = [i for i in items if isinstance(i, connector_pb2.MuxedCall)]
        if self.rpc.done():
            # The stream ended before these left the edge (a failed write may have sent them).
            self._unsent.extend(calls)
            raise StreamBrokenError("the stream ended before the calls were written")
        cancelled = [i.id for i in items if isinstance(i, _Cancel)]
        await self.rpc.write(connector_pb2.CallBatch(calls=calls, cancelled=cancelled))

    async def _write_all(self) -> None:
        try:
            await self._out.run()
            await self.rpc.done_writing()
        except Exception as exc:
            log.debug("a Calls stream failed to write: %s", exc)
            self.rpc.cancel()

    async def _read_all(self) -> None:
        try:
            async for batch in self.rpc:
                for muxed in batch.outcomes:
                    outcome = self.pending.pop(muxed.id, None)
                    if outcome is not None and not outcome.done():
                        outcome.set_result(muxed.outcome)
                if batch.retire and not self._retired:
                    log.info("the connector retired a Calls stream: it is stopping")
                    self._retired = True
                self._close_if_retired()
            self.broken = "the connector ended the stream"
        except grpc.aio.AioRpcError as exc:
            self.broken = exc.details() or exc.code().name
        except asyncio.CancelledError:
            self.broken = "the edge is stopping"
            raise
        finally:
            if not self.broken:
                self.broken = "the stream ended"
            # What was never written never ran: refused, so the caller tries it elsewhere.
            for unsent in (*self._unsent, *self._out.unsent()):
                if isinstance(unsent, connector_pb2.MuxedCall):
                    pending = self.pending.pop(unsent.id, None)
                    if pending is not None and not pending.done():
                        pending.set_result(_not_sent(unsent.request.server, self.broken))
            self._out.close()
            for outcome in self.pending.values():
                if not outcome.done():
                    outcome.set_exception(StreamBrokenError(self.broken))
            self.pending.clear()


def _not_sent(server: str, reason: str) -> connector_pb2.CallToolOutcome:
    error = connector_pb2.CallError(
        code=types.CONNECTION_CLOSED,
        message=f"the call to server {server!r} was not sent: {reason}",
        failure=connector_pb2.FAILURE_NOT_CONNECTED,
    )
    return connector_pb2.CallToolOutcome(error=error)


class MuxedCall:
    """One call in flight on a stream: awaited for its outcome, cancelled by the client."""

    __slots__ = ("_id", "_outcome", "_stream", "_timer")

    def __init__(self, stream: _Stream, muxed: connector_pb2.MuxedCall, deadline: float) -> None:
        self._stream = stream
        self._outcome = stream.send(muxed)
        self._id = muxed.id
        self._timer = asyncio.get_running_loop().call_later(deadline, self._expire)

    def _expire(self) -> None:
        self._end(DeadlineError("the connector did not answer within the call's deadline"))

    def cancel(self) -> bool:
        return self._end(CancelledByClientError())

    def _end(self, exc: BaseException) -> bool:
        if self._outcome.done():
            return False
        self._outcome.set_exception(exc)
        self._stream.cancel(self._id)
        return True

    async def outcome(self) -> connector_pb2.CallToolOutcome:
        try:
            return await self._outcome
        except asyncio.CancelledError:
            # The task awaiting it was cancelled (e.g. the edge stopping): the call goes too.
            self._stream.cancel(self._id)
            raise
        finally:
            self._timer.cancel()


class CallMux:
    """The streams to the connector service; calls go round robin over them."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        lanes: int = LANES,
        max_age_seconds: float = STREAM_MAX_AGE_SECONDS,
    ) -> None:
        self._stub = connector_pb2_grpc.ConnectorStub(channel)
        self._lanes: list[_Stream | None] = [None] * max(lanes, 1)
        self._next = itertools.cycle(range(len(self._lanes)))
        self._max_age = max_age_seconds
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    def call(
        self, request: connector_pb2.CallToolRequest, trace: TraceContext | None, deadline: float
    ) -> MuxedCall:
        muxed = connector_pb2.MuxedCall(request=request)
        if trace is not None:
            muxed.traceparent = trace.traceparent
            muxed.tracestate = trace.tracestate
        return MuxedCall(self._stream(), muxed, deadline)

    def _stream(self) -> _Stream:
        lane = next(self._next)
        stream = self._lanes[lane]
        if (
            stream is not None
            and not stream.broken
            and not stream.retired
            and time.monotonic() - stream.opened < self._max_age
        ):
            return stream
        if stream is not None:
            stream.retire()
        stream = self._lanes[lane] = _Stream(self._stub, self._tasks)
        return stream
