"""ConnectorServicer over a fake pool: every failure is a named CallError in under a second, and
StreamTool relays updates in order, answers relayed requests, stays bounded and always ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, NoReturn, Self, cast

import aiohttp
import anyio
import anyio.lowlevel
import grpc
import mcp_types as types
import orjson
import pytest
from mcp.shared.dispatcher import ProgressFnT
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.connector.bulkheads import Capacity
from services.connector.downstream import Downstream
from services.connector.errors import (
    ConnectorFaultError,
    DownstreamError,
    DownstreamProtocolError,
    DownstreamRejectedError,
    DownstreamTimeoutError,
    DownstreamUnavailableError,
    MissingCredentialsError,
    NotConnectedError,
)
from services.connector.forwarding import RawResult
from services.connector.pool import DownstreamPool
from services.connector.relay import CallRelay, Response
from services.connector.servicer import UPDATES_BUFFER, ConnectorServicer
from services.connector.telemetry import DownstreamTelemetry
from services.contracts import connector_pb2, registry_pb2

pytestmark = pytest.mark.anyio

SERVER = "fake"
RESULT = RawResult(b'{"content":[{"type":"text","text":"done"}]}', False)
# What the fake downstream does for a call: given the call's progress callback and relay.
Act = Callable[[ProgressFnT | None, CallRelay | None], Awaitable[RawResult]]


class FakeDownstream:
    """`call_tool` and `request` as the servicer uses them; each call runs `act` and is recorded."""

    def __init__(self, act: Act) -> None:
        self._act = act
        self.calls: list[dict[str, Any]] = []
        self.config = registry_pb2.ServerConfig(
            name=SERVER, connection_type="http", connection_string="http://10.1.2.3:8123/mcp"
        )

    async def call_tool(
        self,
        tool: str,
        arguments_json: bytes,
        meta: dict[str, Any] | None,
        timeout: float | None = None,
        on_progress: ProgressFnT | None = None,
        relay: CallRelay | None = None,
        task_json: bytes = b"",
        *,
        traceparent: str | None = None,
    ) -> RawResult:
        call = {
            "tool": tool,
            "arguments": arguments_json,
            "meta": meta,
            "timeout": timeout,
            "progress": on_progress,
        }
        self.calls.append(call if traceparent is None else {**call, "traceparent": traceparent})
        return await self._act(on_progress, relay)

    async def request(
        self, method: str, params_json: bytes, timeout: float | None = None, *, traceparent: str | None = None
    ) -> bytes:
        call = {"method": method, "params": params_json, "timeout": timeout}
        self.calls.append(call if traceparent is None else {**call, "traceparent": traceparent})
        return (await self._act(None, None)).json


class FakePool:
    """`route` and `get` for the one server SERVER; `refuse` is what `route` raises instead."""

    def __init__(
        self,
        downstream: FakeDownstream | None,
        refuse: DownstreamError | None = None,
        capacity: Capacity | None = None,
    ) -> None:
        self._downstream = downstream
        self._refuse = refuse
        self._capacity = capacity

    def get(self, name: str) -> Downstream | None:
        return cast(Downstream, self._downstream) if name == SERVER else None

    async def route(self, name: str, key_id: str) -> Downstream | None:
        if self._refuse is not None:
            raise self._refuse
        return self.get(name)

    def failed(self, downstream: Downstream, key_id: str, exc: Exception) -> Exception:
        return exc

    def capacity(self, name: str) -> Capacity | None:
        return self._capacity if name == SERVER else None


async def never_called(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
    raise AssertionError("the downstream was not to be called")


def servicer(act: Act, tracer: DownstreamTelemetry | None = None) -> tuple[ConnectorServicer, FakeDownstream]:
    downstream = FakeDownstream(act)
    return ConnectorServicer(cast(DownstreamPool, FakePool(downstream)), tracer), downstream


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class _Context:
    """The ServicerContext methods the servicer uses."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._metadata = metadata
        self.written: list[connector_pb2.OutcomeBatch] = []

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)

    async def write(self, message: connector_pb2.OutcomeBatch) -> None:
        self.written.append(message)


CONTEXT = cast(grpc.aio.ServicerContext, _Context())


class Messages:
    """The edge's half of a StreamTool call: what the test puts in, as the servicer's request iterator."""

    def __init__(self, *first: connector_pb2.CallToolMessage) -> None:
        self._queue: asyncio.Queue[connector_pb2.CallToolMessage | None] = asyncio.Queue()
        for message in first:
            self.send(message)

    def send(self, message: connector_pb2.CallToolMessage) -> None:
        self._queue.put_nowait(message)

    def close(self) -> None:
        self._queue.put_nowait(None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> connector_pb2.CallToolMessage:
        message = await self._queue.get()
        if message is None:
            raise StopAsyncIteration
        return message


def call_request(meta: dict[str, Any] | None = None, timeout: float = 0.0) -> connector_pb2.CallToolRequest:
    return connector_pb2.CallToolRequest(
        server=SERVER,
        tool="work",
        arguments_json=b'{"n":1}',
        meta_json=b"" if meta is None else orjson.dumps(meta),
        timeout_seconds=timeout,
    )


def start(messages: Messages, rpc: ConnectorServicer) -> AsyncGenerator[connector_pb2.CallToolUpdate, None]:
    return cast(AsyncGenerator[connector_pb2.CallToolUpdate, None], rpc.StreamTool(messages, CONTEXT))


def streamed(meta: dict[str, Any] | None = None) -> Messages:
    return Messages(connector_pb2.CallToolMessage(call=call_request(meta)))


async def failure_of(rpc_name: str, rpc: ConnectorServicer) -> connector_pb2.CallError:
    """The CallError one RPC ends with; StreamTool must send nothing but that outcome."""
    if rpc_name == "CallTool":
        outcome = await rpc.CallTool(call_request(), CONTEXT)
        assert outcome.WhichOneof("kind") == "error"
        return outcome.error
    if rpc_name == "Forward":
        request = connector_pb2.ForwardRequest(server=SERVER, method="resources/read", params_json=b"{}")
        forwarded = await rpc.Forward(request, CONTEXT)
        assert forwarded.WhichOneof("kind") == "error"
        return forwarded.error
    if rpc_name == "Calls":
        return (await muxed_outcome(rpc, call_request())).error
    async with aclosing(start(streamed(), rpc)) as updates:
        sent = [update async for update in updates]
    assert [update.WhichOneof("kind") for update in sent] == ["outcome"]
    assert sent[0].outcome.WhichOneof("kind") == "error"
    return sent[0].outcome.error


async def muxed_outcome(
    rpc: ConnectorServicer, request: connector_pb2.CallToolRequest
) -> connector_pb2.CallToolOutcome:
    """The one outcome a Calls stream carrying only `request` writes before it ends."""

    async def batches() -> AsyncGenerator[connector_pb2.CallBatch]:
        yield connector_pb2.CallBatch(calls=[connector_pb2.MuxedCall(id=7, request=request)])

    context = _Context()
    await rpc.Calls(batches(), cast(grpc.aio.ServicerContext, context))
    outcomes = [outcome for batch in context.written for outcome in batch.outcomes]
    assert [outcome.id for outcome in outcomes] == [7]
    return outcomes[0].outcome


RPCS = ["CallTool", "StreamTool", "Forward", "Calls"]


# Errors no code path expects, each raised the way real code raises it.
async def raise_runtime_error() -> NoReturn:
    raise RuntimeError("boom")


async def raise_key_error() -> NoReturn:
    _ = {"present": 1}["missing"]
    raise AssertionError("unreachable")


async def raise_value_error() -> NoReturn:
    int("not a number")
    raise AssertionError("unreachable")


async def raise_session_closed() -> NoReturn:
    # aiohttp's own error for a request on a pool that was closed under the call.
    session = aiohttp.ClientSession()
    await session.close()
    await session.get("http://127.0.0.1:9/")
    raise AssertionError("unreachable")


async def raise_exception_group() -> NoReturn:
    async def fail() -> None:
        raise RuntimeError("a task failed")

    async with anyio.create_task_group() as tg:
        tg.start_soon(fail)
    raise AssertionError("unreachable")


async def raise_json_decode_error() -> NoReturn:
    orjson.loads(b'{"half":')
    raise AssertionError("unreachable")


UNEXPECTED: dict[str, tuple[Callable[[], Awaitable[NoReturn]], str]] = {
    "RuntimeError": (raise_runtime_error, "RuntimeError: boom"),
    "KeyError": (raise_key_error, "KeyError: 'missing'"),
    "ValueError": (raise_value_error, "ValueError: invalid literal for int()"),
    "aiohttp session closed": (raise_session_closed, "RuntimeError: Session is closed"),
    "ExceptionGroup": (raise_exception_group, "RuntimeError: a task failed"),
    "orjson.JSONDecodeError": (raise_json_decode_error, "JSONDecodeError: "),
}


@pytest.mark.parametrize("rpc_name", RPCS)
@pytest.mark.parametrize(("raise_it", "named"), UNEXPECTED.values(), ids=UNEXPECTED.keys())
async def test_an_unexpected_error_is_a_named_connector_fault(
    rpc_name: str,
    raise_it: Callable[[], Awaitable[NoReturn]],
    named: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        await raise_it()

    rpc, _ = servicer(act)
    with anyio.fail_after(1):
        error = await failure_of(rpc_name, rpc)
    assert error.failure == connector_pb2.FAILURE_CONNECTOR
    assert error.code == types.INTERNAL_ERROR
    assert error.message.startswith(f"mcpgw connector fault: {named}"), error.message
    # The client gets the name; the connector's log gets the traceback.
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


DOWNSTREAM_ERRORS: dict[str, tuple[DownstreamError, connector_pb2.Failure.ValueType, int]] = {
    "not connected": (
        NotConnectedError(SERVER, "server 'fake' is not connected"),
        connector_pb2.FAILURE_NOT_CONNECTED,
        types.CONNECTION_CLOSED,
    ),
    "unavailable": (
        DownstreamUnavailableError(SERVER, "server 'fake' closed the event stream before answering"),
        connector_pb2.FAILURE_UNAVAILABLE,
        types.CONNECTION_CLOSED,
    ),
    # Unavailable for this caller, but not a reason to try another connector.
    "missing credentials": (
        MissingCredentialsError(SERVER, "server 'fake' needs your own credentials"),
        connector_pb2.FAILURE_UNAVAILABLE,
        types.CONNECTION_CLOSED,
    ),
    "timeout": (
        DownstreamTimeoutError(SERVER, "server 'fake' did not answer within 2s"),
        connector_pb2.FAILURE_TIMEOUT,
        types.REQUEST_TIMEOUT,
    ),
    "protocol": (
        DownstreamProtocolError(SERVER, "server 'fake' sent invalid JSON: unexpected end of data"),
        connector_pb2.FAILURE_PROTOCOL,
        types.INTERNAL_ERROR,
    ),
    "connector fault": (
        ConnectorFaultError(SERVER, "mcpgw connector fault: RuntimeError: boom"),
        connector_pb2.FAILURE_CONNECTOR,
        types.INTERNAL_ERROR,
    ),
}


@pytest.mark.parametrize("rpc_name", RPCS)
@pytest.mark.parametrize(
    ("raised", "failure", "code"), DOWNSTREAM_ERRORS.values(), ids=DOWNSTREAM_ERRORS.keys()
)
async def test_each_downstream_error_maps_to_its_failure(
    rpc_name: str, raised: DownstreamError, failure: connector_pb2.Failure.ValueType, code: int
) -> None:
    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        raise raised

    rpc, _ = servicer(act)
    with anyio.fail_after(1):
        error = await failure_of(rpc_name, rpc)
    assert (error.failure, error.code, error.message, error.data_json) == (failure, code, str(raised), b"")


@pytest.mark.parametrize("rpc_name", RPCS)
@pytest.mark.parametrize("data", [{"retry_after": 3}, None])
async def test_a_downstream_json_rpc_error_keeps_its_code_message_and_data(
    rpc_name: str, data: dict[str, Any] | None
) -> None:
    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        raise DownstreamRejectedError(SERVER, types.ErrorData(code=-32042, message="quota spent", data=data))

    rpc, _ = servicer(act)
    with anyio.fail_after(1):
        error = await failure_of(rpc_name, rpc)
    assert error.failure == connector_pb2.FAILURE_DOWNSTREAM
    assert (error.code, error.message) == (-32042, "quota spent")
    assert error.data_json == (b"" if data is None else orjson.dumps(data))


@pytest.mark.parametrize("rpc_name", RPCS)
async def test_a_server_the_pool_does_not_hold_is_not_connected(rpc_name: str) -> None:
    rpc = ConnectorServicer(cast(DownstreamPool, FakePool(None)))
    with anyio.fail_after(1):
        error = await failure_of(rpc_name, rpc)
    assert error.failure == connector_pb2.FAILURE_NOT_CONNECTED
    assert error.message == "server 'fake' is not configured on this connector"


@pytest.mark.parametrize("rpc_name", RPCS)
async def test_a_route_refused_for_missing_credentials_is_unavailable(rpc_name: str) -> None:
    refused = MissingCredentialsError(SERVER, "server 'fake' needs your own credentials")
    rpc = ConnectorServicer(cast(DownstreamPool, FakePool(FakeDownstream(never_called), refused)))
    with anyio.fail_after(1):
        error = await failure_of(rpc_name, rpc)
    assert (error.failure, error.message) == (connector_pb2.FAILURE_UNAVAILABLE, str(refused))


@pytest.mark.parametrize("rpc_name", ["CallTool", "Calls"])
async def test_call_tool_passes_the_call_and_returns_the_result_verbatim(rpc_name: str) -> None:
    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        return RawResult(b'{"content":[],"isError":true}', True)

    rpc, downstream = servicer(act)
    request = call_request({"trace": "t"}, timeout=2.5)
    if rpc_name == "Calls":
        outcome = await muxed_outcome(rpc, request)
    else:
        outcome = await rpc.CallTool(request, CONTEXT)
    assert (outcome.result.result_json, outcome.result.is_error) == (b'{"content":[],"isError":true}', True)
    [call] = downstream.calls
    assert call == {
        "tool": "work",
        "arguments": b'{"n":1}',
        "meta": {"trace": "t"},
        "timeout": 2.5,
        "progress": None,
    }
    # Zero is "the server's default": the downstream gets None, not a zero-second timeout.
    await rpc.CallTool(call_request(), CONTEXT)
    assert downstream.calls[1]["timeout"] is None


async def test_forward_returns_the_result_verbatim() -> None:
    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        return RawResult(b'{"contents":[]}', False)

    rpc, downstream = servicer(act)
    request = connector_pb2.ForwardRequest(server=SERVER, method="resources/read", params_json=b'{"uri":"u"}')
    assert (await rpc.Forward(request, CONTEXT)).result_json == b'{"contents":[]}'
    assert downstream.calls == [{"method": "resources/read", "params": b'{"uri":"u"}', "timeout": None}]


def notification(update: connector_pb2.CallToolUpdate) -> Any:
    assert update.WhichOneof("kind") == "notification_json", update
    return orjson.loads(update.notification_json)


def log_message(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": n}}


async def test_stream_tool_sends_progress_and_notifications_in_order_then_the_outcome() -> None:
    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        assert on_progress is not None and relay is not None
        await on_progress(1, 3, "first")
        await relay.notify(log_message(1))
        await on_progress(2, None, None)
        return RESULT

    rpc, _ = servicer(act)
    with anyio.fail_after(1):
        async with aclosing(start(streamed({"progressToken": "tok-1"}), rpc)) as updates:
            sent = [update async for update in updates]
    assert [notification(update) for update in sent[:3]] == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": "tok-1", "progress": 1, "total": 3, "message": "first"},
        },
        log_message(1),
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": "tok-1", "progress": 2},
        },
    ]
    assert sent[3].outcome.result.result_json == RESULT.json
    assert len(sent) == 4


async def test_stream_tool_without_a_progress_token_asks_for_no_progress() -> None:
    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        assert relay is not None
        return RESULT

    rpc, downstream = servicer(act)
    with anyio.fail_after(1):
        async with aclosing(start(streamed({"other": 1}), rpc)) as updates:
            assert [update.WhichOneof("kind") async for update in updates] == ["outcome"]
    assert downstream.calls[0]["progress"] is None


async def test_a_relayed_request_is_answered_by_the_client_reply() -> None:
    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        assert relay is not None
        answer = await relay.ask("sampling/createMessage", {"maxTokens": 5})
        return RawResult(orjson.dumps({"content": [], "structuredContent": answer}), False)

    rpc, _ = servicer(act)
    messages = streamed()
    with anyio.fail_after(1):
        async with aclosing(start(messages, rpc)) as updates:
            asked = await anext(updates)
            assert asked.WhichOneof("kind") == "request"
            assert (asked.request.method, orjson.loads(asked.request.params_json)) == (
                "sampling/createMessage",
                {"maxTokens": 5},
            )
            # A reply to a request nobody made is ignored; the right one answers.
            for request_id in ("nobody-asked", asked.request.request_id):
                reply = connector_pb2.ClientReply(request_id=request_id, response_json=b'{"result":{"n":1}}')
                messages.send(connector_pb2.CallToolMessage(reply=reply))
            outcome = await anext(updates)
            assert await anext(updates, None) is None
    result = orjson.loads(outcome.outcome.result.result_json)
    assert result["structuredContent"] == {"result": {"n": 1}}


async def test_a_downstream_that_fails_after_asking_ends_the_stream() -> None:
    # As the forwarder does: the server's request is answered in the background while the call goes on.
    asking: list[asyncio.Task[Any]] = []
    seen_by_client = anyio.Event()

    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        assert relay is not None
        ask = relay.ask

        async def answer() -> Response:
            return await ask("elicitation/create", {"message": "sure?"})

        asking.append(asyncio.create_task(answer()))
        await seen_by_client.wait()
        raise RuntimeError("the stream broke after asking")

    rpc, _ = servicer(act)
    with anyio.fail_after(1):
        async with aclosing(start(streamed(), rpc)) as updates:
            assert (await anext(updates)).WhichOneof("kind") == "request"
            seen_by_client.set()
            # The client never replies: the outcome still comes, and the stream ends.
            ended = await anext(updates)
            assert await anext(updates, None) is None
        assert ended.outcome.error.failure == connector_pb2.FAILURE_CONNECTOR
        assert "the stream broke after asking" in ended.outcome.error.message
        # The question left open is withdrawn, not left waiting for ever. (asyncio.wait, not
        # pytest.raises(CancelledError), which would also swallow fail_after's cancellation.)
        await asyncio.wait(asking)
        assert asking[0].cancelled()


async def test_updates_beyond_the_buffer_are_dropped_while_the_edge_does_not_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    edge_paused = anyio.Event()
    all_sent = anyio.Event()
    extra = 10

    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        assert relay is not None
        await relay.notify(log_message(-1))
        await edge_paused.wait()
        for n in range(UPDATES_BUFFER + extra):
            await relay.notify(log_message(n))
            # The edge could take an update here, if it were reading.
            await anyio.lowlevel.checkpoint()
        all_sent.set()
        return RESULT

    rpc, _ = servicer(act)
    with anyio.fail_after(1):
        async with aclosing(start(streamed(), rpc)) as updates:
            assert notification(await anext(updates)) == log_message(-1)
            edge_paused.set()
            await all_sent.wait()
            rest = [update async for update in updates]
    # The first UPDATES_BUFFER were kept, the rest dropped; the outcome waited for room.
    assert [notification(u)["params"]["data"] for u in rest[:-1]] == list(range(UPDATES_BUFFER))
    assert rest[-1].outcome.result.result_json == RESULT.json
    dropped = [r for r in caplog.records if "the edge is not reading" in r.getMessage()]
    assert len(dropped) == extra


async def test_cancelling_the_stream_cancels_the_downstream_call() -> None:
    started, cancelled = anyio.Event(), anyio.Event()

    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    rpc, _ = servicer(act)
    updates = start(streamed(), rpc)

    async def edge() -> connector_pb2.CallToolUpdate:
        return await anext(updates)

    with anyio.fail_after(1):
        # grpc cancels the handler's task when the edge cancels the RPC.
        reading = asyncio.create_task(edge())
        await started.wait()
        reading.cancel()
        await asyncio.wait([reading])
        assert reading.cancelled()
        assert cancelled.is_set()
        await updates.aclose()


@pytest.mark.parametrize(
    "first",
    [
        [],
        [
            connector_pb2.CallToolMessage(
                reply=connector_pb2.ClientReply(request_id="s1", response_json=b"{}")
            )
        ],
    ],
    ids=["nothing", "a reply"],
)
async def test_a_stream_that_does_not_start_with_the_call_is_refused(
    first: list[connector_pb2.CallToolMessage],
) -> None:
    rpc, _ = servicer(never_called)
    messages = Messages(*first)
    messages.close()
    with anyio.fail_after(1), pytest.raises(Aborted) as aborted:
        async with aclosing(start(messages, rpc)) as updates:
            await anext(updates)
    assert aborted.value.code == grpc.StatusCode.INVALID_ARGUMENT


EDGE_CONTEXT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def traced_context(traceparent: str = EDGE_CONTEXT) -> grpc.aio.ServicerContext:
    metadata = (("traceparent", traceparent), ("tracestate", "rojo=1"))
    return cast(grpc.aio.ServicerContext, _Context(metadata))


async def ok_result(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
    return RawResult(b'{"content":[]}', False)


async def test_without_a_span_exporter_the_downstream_continues_the_edges_span() -> None:
    rpc, downstream = servicer(ok_result)
    await rpc.CallTool(call_request({"traceparent": "00-client-span-01", "other": 1}), traced_context())
    [call] = downstream.calls
    # The client's own trace keys give way to the edge's; its other keys pass through.
    assert call["meta"] == {"other": 1, "traceparent": EDGE_CONTEXT, "tracestate": "rojo=1"}
    assert call["traceparent"] == EDGE_CONTEXT


async def test_with_an_exporter_a_client_span_sits_between_the_edge_and_the_downstream() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    rpc, downstream = servicer(ok_result, DownstreamTelemetry(provider))
    await rpc.CallTool(call_request(), traced_context())
    [span] = exported.get_finished_spans()
    assert span.name == "tools/call work" and span.kind is SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == 0x00F067AA0BA902B7
    assert span.context is not None and span.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert dict(span.attributes or {}) == {
        "mcp.method.name": "tools/call",
        "gen_ai.tool.name": "work",
        "gen_ai.operation.name": "execute_tool",
        "network.transport": "tcp",
        "network.protocol.name": "http",
        "server.address": "10.1.2.3",
        "server.port": 8123,
    }
    [call] = downstream.calls
    expected = f"00-4bf92f3577b34da6a3ce929d0e0e4736-{span.context.span_id:016x}-01"
    assert call["traceparent"] == expected and call["meta"]["traceparent"] == expected
    assert call["meta"]["tracestate"] == "rojo=1"


async def test_an_unsampled_context_makes_no_span_and_reaches_the_downstream_as_sent() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    rpc, downstream = servicer(ok_result, DownstreamTelemetry(provider))
    unsampled = EDGE_CONTEXT.removesuffix("-01") + "-00"
    await rpc.CallTool(call_request(), traced_context(unsampled))
    assert exported.get_finished_spans() == ()
    [call] = downstream.calls
    assert call["traceparent"] == unsampled and call["meta"]["traceparent"] == unsampled


async def test_a_failed_forward_marks_its_span_with_the_json_rpc_code() -> None:
    async def rejected(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        raise DownstreamRejectedError(SERVER, types.ErrorData(code=-32602, message="Unknown prompt"))

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    rpc, downstream = servicer(rejected, DownstreamTelemetry(provider))
    request = connector_pb2.ForwardRequest(
        server=SERVER, method="prompts/get", params_json=b'{"name":"greet","_meta":{"k":"v"}}'
    )
    outcome = await rpc.Forward(request, traced_context())
    assert outcome.error.code == -32602
    [span] = exported.get_finished_spans()
    assert span.name == "prompts/get greet" and span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "-32602"
    [call] = downstream.calls
    sent = orjson.loads(call["params"])
    assert sent["name"] == "greet" and sent["_meta"]["k"] == "v"
    assert sent["_meta"]["traceparent"] == call["traceparent"]


@pytest.mark.parametrize("whose", ["server", "key"])
async def test_a_call_past_a_full_bulkhead_is_limited_and_never_reaches_the_downstream(whose: str) -> None:
    entered = anyio.Event()
    release = anyio.Event()

    async def act(on_progress: ProgressFnT | None, relay: CallRelay | None) -> RawResult:
        entered.set()
        await release.wait()
        return RawResult(b'{"content":[]}', False)

    downstream = FakeDownstream(act)
    capacity = Capacity(1) if whose == "server" else None
    rpc = ConnectorServicer(cast(DownstreamPool, FakePool(downstream, capacity=capacity)))
    request = call_request()
    if whose == "key":
        request.key_id, request.key_max_concurrency = "k1", 1
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(rpc.CallTool, request, CONTEXT)
        with anyio.fail_after(1):
            await entered.wait()
            refused = await rpc.CallTool(request, CONTEXT)
        release.set()
    assert refused.error.failure == connector_pb2.FAILURE_LIMITED
    assert orjson.loads(refused.error.data_json) == {"limit": "concurrency", "retryAfter": 1}
    named = "server 'fake'" if whose == "server" else "key 'k1'"
    assert refused.error.message.startswith(f"mcpgw: {named} has 1 calls in flight")
    assert len(downstream.calls) == 1
