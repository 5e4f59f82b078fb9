"""The Calls stream end to end over a real gRPC server on port 0: many calls in few messages,
each outcome to its own caller, and cancellation, deadlines, broken and retired streams
each ending exactly the calls they should."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from services.connector.multiplexing import MAX_OUTCOME_BYTES, CallStream
from services.connector.telemetry import Metadata
from services.contracts import connector_pb2, connector_pb2_grpc
from services.edge.connector_client import ConnectorClient
from services.edge.multiplexing import (
    CallMux,
    CancelledByClientError,
    DeadlineError,
    StreamBrokenError,
)
from services.rpc import BATCH_BYTES, Coalescer
from services.telemetry import TraceContext

pytestmark = pytest.mark.anyio

Run = Callable[[connector_pb2.CallToolRequest, Metadata], Awaitable[connector_pb2.CallToolOutcome]]


def echoed(request: connector_pb2.CallToolRequest) -> connector_pb2.CallToolOutcome:
    return connector_pb2.CallToolOutcome(result=connector_pb2.ToolResult(result_json=request.arguments_json))


class Connector(connector_pb2_grpc.ConnectorServicer):
    """Only `Calls`, running `run` for each call and counting the batches that came."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.batches: list[connector_pb2.CallBatch] = []
        self.streams = 0
        self.open: list[CallStream] = []
        self.stopping = False
        self.unary = 0

    async def Calls(  # type: ignore[override]
        self, request_iterator: AsyncIterator[connector_pb2.CallBatch], context: grpc.aio.ServicerContext
    ) -> None:
        self.streams += 1

        async def counted() -> AsyncIterator[connector_pb2.CallBatch]:
            async for batch in request_iterator:
                self.batches.append(batch)
                yield batch

        stream = CallStream(self.run, context)
        if self.stopping:
            stream.retire()
        self.open.append(stream)
        await stream.serve(counted())

    async def CallTool(
        self, request: connector_pb2.CallToolRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.CallToolOutcome:
        self.unary += 1
        return await self.run(request, ())


class Gateway:
    """A connector on a free port and an edge's mux to it."""

    def __init__(self, run: Run, lanes: int = 1, max_age: float = 60.0) -> None:
        # The other RPCs answer UNIMPLEMENTED, as the generated base class does.
        self.connector = Connector(run)  # type: ignore[abstract]
        self._lanes, self._max_age = lanes, max_age

    async def start(self) -> CallMux:
        self.server = grpc.aio.server()
        connector_pb2_grpc.add_ConnectorServicer_to_server(self.connector, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.mux = CallMux(self.channel, self._lanes, self._max_age)
        return self.mux

    async def stop(self) -> None:
        await self.mux.__aexit__(None, None, None)
        await self.channel.close()
        await self.server.stop(None)


async def serve_echo(
    request: connector_pb2.CallToolRequest, metadata: Metadata
) -> connector_pb2.CallToolOutcome:
    await asyncio.sleep(0)
    return echoed(request)


def request(n: int, timeout: float = 0.0) -> connector_pb2.CallToolRequest:
    return connector_pb2.CallToolRequest(
        server="s", tool="t", arguments_json=b'{"n":%d}' % n, timeout_seconds=timeout
    )


class Slow:
    """A connector's run: a call of the tool "slow" waits until released (or cancelled),
    every other call is echoed."""

    def __init__(self) -> None:
        self.started, self.ended, self.release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def run(
        self, request: connector_pb2.CallToolRequest, metadata: Metadata
    ) -> connector_pb2.CallToolOutcome:
        if request.tool == "slow":
            self.started.set()
            try:
                await self.release.wait()
            finally:
                self.ended.set()
        return echoed(request)


async def test_many_calls_share_messages_and_each_gets_its_own_outcome() -> None:
    gateway = Gateway(serve_echo)
    mux = await gateway.start()
    try:
        calls = [mux.call(request(n), None, 5.0) for n in range(200)]
        outcomes = await asyncio.gather(*(call.outcome() for call in calls))
        assert [o.result.result_json for o in outcomes] == [b'{"n":%d}' % n for n in range(200)]
        assert gateway.connector.streams == 1
        # The 200 calls were put before the writer ran: far fewer messages than calls.
        assert sum(len(b.calls) for b in gateway.connector.batches) == 200
        assert len(gateway.connector.batches) < 10
    finally:
        await gateway.stop()


async def test_the_trace_context_reaches_the_connector_as_metadata() -> None:
    seen: list[Metadata] = []

    async def run(
        request: connector_pb2.CallToolRequest, metadata: Metadata
    ) -> connector_pb2.CallToolOutcome:
        seen.append(metadata)
        return echoed(request)

    gateway = Gateway(run)
    mux = await gateway.start()
    try:
        trace = TraceContext("a" * 32, "b" * 16, tracestate="k=v")
        await mux.call(request(1), trace, 5.0).outcome()
        await mux.call(request(2), None, 5.0).outcome()
        assert seen == [(("traceparent", trace.traceparent), ("tracestate", "k=v")), ()]
    finally:
        await gateway.stop()


async def test_a_cancelled_call_ends_at_once_and_its_task_at_the_connector_too() -> None:
    slow_run = Slow()
    started, ended, run = slow_run.started, slow_run.ended, slow_run.run

    gateway = Gateway(run)
    mux = await gateway.start()
    try:
        slow = mux.call(connector_pb2.CallToolRequest(tool="slow"), None, 30.0)
        waiting = asyncio.create_task(slow.outcome())
        await started.wait()
        assert slow.cancel() is True
        with pytest.raises(CancelledByClientError):
            await waiting
        await asyncio.wait_for(ended.wait(), 5)
        assert slow.cancel() is False
        # The stream carries on for the others.
        assert (await mux.call(request(7), None, 5.0).outcome()).result.result_json == b'{"n":7}'
    finally:
        await gateway.stop()


async def test_no_outcome_within_the_deadline_is_a_deadline_error_and_cancels_the_call() -> None:
    ended = asyncio.Event()

    async def run(
        request: connector_pb2.CallToolRequest, metadata: Metadata
    ) -> connector_pb2.CallToolOutcome:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()
        raise AssertionError("unreachable")

    gateway = Gateway(run)
    mux = await gateway.start()
    try:
        with pytest.raises(DeadlineError):
            await mux.call(request(1), None, 0.2).outcome()
        await asyncio.wait_for(ended.wait(), 5)
    finally:
        await gateway.stop()


async def test_a_cancelled_awaiting_task_cancels_the_call_at_the_connector() -> None:
    started, ended = asyncio.Event(), asyncio.Event()

    async def run(
        request: connector_pb2.CallToolRequest, metadata: Metadata
    ) -> connector_pb2.CallToolOutcome:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()
        raise AssertionError("unreachable")

    gateway = Gateway(run)
    mux = await gateway.start()
    try:
        waiting = asyncio.create_task(mux.call(request(1), None, 30.0).outcome())
        await started.wait()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(ended.wait(), 5)
    finally:
        await gateway.stop()


async def test_a_connector_that_goes_away_fails_only_the_calls_in_flight_and_the_next_stream_works() -> None:
    slow_run = Slow()
    started, run = slow_run.started, slow_run.run

    gateway = Gateway(run)
    mux = await gateway.start()
    try:
        waiting = asyncio.create_task(
            mux.call(connector_pb2.CallToolRequest(tool="slow"), None, 30.0).outcome()
        )
        await started.wait()
        await gateway.server.stop(None)
        with pytest.raises(StreamBrokenError):
            await asyncio.wait_for(waiting, 5)
        # The same port again: the lane opens a new stream for the next call.
        gateway.server = grpc.aio.server()
        connector_pb2_grpc.add_ConnectorServicer_to_server(gateway.connector, gateway.server)
        gateway.server.add_insecure_port(f"127.0.0.1:{gateway.port}")
        await gateway.server.start()
        await asyncio.wait_for(gateway.channel.channel_ready(), 10)
        outcome = await mux.call(request(3), None, 5.0).outcome()
        assert outcome.result.result_json == b'{"n":3}'
        assert gateway.connector.streams == 2
    finally:
        await gateway.stop()


async def test_a_retired_stream_still_delivers_its_calls_then_ends() -> None:
    slow_run = Slow()
    release, run = slow_run.release, slow_run.run

    # Every stream is past its age at once: each call opens a new one and retires the last.
    gateway = Gateway(run, max_age=0.0)
    mux = await gateway.start()
    try:
        slow = asyncio.create_task(
            mux.call(connector_pb2.CallToolRequest(tool="slow", arguments_json=b"1"), None, 30.0).outcome()
        )
        fast = await mux.call(request(2), None, 5.0).outcome()
        assert fast.result.result_json == b'{"n":2}'
        release.set()
        assert (await slow).result.result_json == b"1"
        assert gateway.connector.streams == 2
    finally:
        await gateway.stop()


async def test_lanes_spread_calls_over_that_many_streams() -> None:
    gateway = Gateway(serve_echo, lanes=3)
    mux = await gateway.start()
    try:
        await asyncio.gather(*(mux.call(request(n), None, 5.0).outcome() for n in range(9)))
        assert gateway.connector.streams == 3
    finally:
        await gateway.stop()


async def test_a_batch_stops_short_of_its_size_limit_but_takes_at_least_one_item() -> None:
    written: list[list[connector_pb2.MuxedCall]] = []

    async def write(items: list[connector_pb2.MuxedCall]) -> None:
        written.append(items)

    def sized(n: int) -> connector_pb2.MuxedCall:
        return connector_pb2.MuxedCall(request=connector_pb2.CallToolRequest(arguments_json=b"x" * n))

    quarter, huge, small = sized(BATCH_BYTES // 4 - 100), sized(BATCH_BYTES * 2), sized(1)
    coalescer = Coalescer(write)
    for item in (quarter, quarter, quarter, quarter, quarter, huge, small):
        coalescer.put(item)
    coalescer.close()
    await coalescer.run()
    # Four quarters fit, the fifth goes next; the huge one alone; nothing is lost.
    assert [len(batch) for batch in written] == [4, 1, 1, 1]


async def test_a_call_on_a_retired_stream_can_still_be_cancelled_at_the_connector() -> None:
    slow_run = Slow()
    started, ended, run = slow_run.started, slow_run.ended, slow_run.run

    gateway = Gateway(run, max_age=0.0)
    mux = await gateway.start()
    try:
        slow = mux.call(connector_pb2.CallToolRequest(tool="slow"), None, 30.0)
        waiting = asyncio.create_task(slow.outcome())
        await started.wait()
        # The next call retires the slow call's stream, which must still carry its cancel.
        assert (await mux.call(request(1), None, 5.0).outcome()).result.result_json == b'{"n":1}'
        assert slow.cancel() is True
        with pytest.raises(CancelledByClientError):
            await waiting
        await asyncio.wait_for(ended.wait(), 5)
    finally:
        await gateway.stop()


async def test_an_outcome_too_large_for_a_message_fails_alone() -> None:
    async def run(
        request: connector_pb2.CallToolRequest, metadata: Metadata
    ) -> connector_pb2.CallToolOutcome:
        if request.tool == "huge":
            return connector_pb2.CallToolOutcome(
                result=connector_pb2.ToolResult(result_json=b"x" * (MAX_OUTCOME_BYTES + 1))
            )
        await asyncio.sleep(0.05)
        return echoed(request)

    gateway = Gateway(run)
    mux = await gateway.start()
    try:
        huge = mux.call(connector_pb2.CallToolRequest(server="s", tool="huge"), None, 10.0)
        other = mux.call(request(5), None, 10.0)
        failed = await huge.outcome()
        assert failed.error.failure == connector_pb2.FAILURE_PROTOCOL
        assert "over the gateway's" in failed.error.message
        assert (await other.outcome()).result.result_json == b'{"n":5}'
    finally:
        await gateway.stop()


async def test_a_stopping_connector_refuses_calls_sent_after_it_retired_the_stream() -> None:
    gateway = Gateway(serve_echo)
    gateway.connector.stopping = True
    mux = await gateway.start()
    try:
        outcome = await mux.call(request(1), None, 5.0).outcome()
        # Nothing ran: refused, as a connector without the server refuses, to be tried elsewhere.
        assert outcome.error.failure == connector_pb2.FAILURE_NOT_CONNECTED
        assert "stopping" in outcome.error.message
        # The edge took the retirement: the next call opens a new stream.
        await mux.call(request(2), None, 5.0).outcome()
        assert gateway.connector.streams == 2
    finally:
        await gateway.stop()


async def test_calls_running_when_the_connector_retires_the_stream_still_get_their_outcomes() -> None:
    slow_run = Slow()
    started, release, run = slow_run.started, slow_run.release, slow_run.run

    gateway = Gateway(run)
    mux = await gateway.start()
    try:
        slow = asyncio.create_task(
            mux.call(connector_pb2.CallToolRequest(tool="slow", arguments_json=b"1"), None, 30.0).outcome()
        )
        await started.wait()
        gateway.connector.open[0].retire()
        release.set()
        # The retirement was written before the slow call's outcome: the edge has it by now.
        assert (await slow).result.result_json == b"1"
        assert (await mux.call(request(2), None, 5.0).outcome()).result.result_json == b'{"n":2}'
        assert gateway.connector.streams == 2
    finally:
        await gateway.stop()


async def test_calls_a_broken_stream_never_sent_are_refused_not_failed() -> None:
    gateway = Gateway(serve_echo)
    mux = await gateway.start()
    try:
        calls = [mux.call(request(n), None, 5.0) for n in range(3)]
        # Broken before its writer ran: none of the three left the edge.
        calls[0]._stream.rpc.cancel()
        for outcome in await asyncio.gather(*(call.outcome() for call in calls)):
            assert outcome.error.failure == connector_pb2.FAILURE_NOT_CONNECTED
            assert "was not sent" in outcome.error.message
        assert sum(len(b.calls) for b in gateway.connector.batches) == 0
    finally:
        await gateway.stop()


async def test_the_client_tries_a_call_the_stream_refused_again_as_a_unary_rpc() -> None:
    gateway = Gateway(serve_echo)
    gateway.connector.stopping = True
    mux = await gateway.start()
    try:
        client = ConnectorClient(gateway.channel, mux=mux)
        trace = TraceContext("a" * 32, "b" * 16)
        outcome = await client.call_tool(request(7, timeout=5.0), trace)
        assert outcome.result.result_json == b'{"n":7}'
        assert gateway.connector.unary == 1
    finally:
        await gateway.stop()
