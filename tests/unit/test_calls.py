"""`Call`, the one object that owns a tools/call on the edge, against a connector stand-in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio
import orjson
import pytest
from anyio import wait_all_tasks_blocked

from services.contracts import connector_pb2, events_pb2
from services.edge.auditing import AuditPublisher
from services.edge.calls import CHANNEL_SIZE, Call, Calls, ConnectLinks, Relay
from services.edge.connector_client import CallCancelledError, ConnectorClient, ConnectorUnavailableError
from services.edge.errors import ConnectionRequiredError, DownstreamRpcError
from services.edge.records import Payloads, Sender
from services.edge.sessions import Session
from services.telemetry import TraceContext
from tests.unit.fakes import Audit

pytestmark = pytest.mark.anyio

Ask = Callable[[str, bytes], Awaitable[dict[str, Any]]]
Behaviour = Callable[[Callable[[bytes], object] | None, Ask | None], Awaitable[connector_pb2.CallToolOutcome]]
OK = connector_pb2.CallToolOutcome(result=connector_pb2.ToolResult(result_json=b'{"content":[]}'))


class Connector:
    """Answers call_tool by running a behaviour with the call's notify and ask."""

    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self.cancelled = False

    async def call_tool(
        self,
        request: connector_pb2.CallToolRequest,
        trace: TraceContext,
        on_notification: Callable[[bytes], object] | None = None,
        ask: Ask | None = None,
        cancelled: anyio.Event | None = None,
        on_rpc: Callable[[Any], object] | None = None,
    ) -> connector_pb2.CallToolOutcome:
        # Like the real client: a unary call is ended by cancelling its RPC, a streamed one by
        # its `cancelled` event; either way the call sees CallCancelledError.
        stop = cancelled or anyio.Event()
        if on_rpc is not None:
            on_rpc(Rpc(stop))
        try:
            outcome_or_cancel = await self._race(stop, on_notification, ask)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        return outcome_or_cancel

    async def _race(
        self, stop: anyio.Event, on_notification: Callable[[bytes], object] | None, ask: Ask | None
    ) -> connector_pb2.CallToolOutcome:
        outcome: list[connector_pb2.CallToolOutcome] = []
        failed: list[Exception] = []
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                try:
                    outcome.append(await self._behaviour(on_notification, ask))
                except Exception as exc:
                    failed.append(exc)
                tg.cancel_scope.cancel()

            async def watch() -> None:
                await stop.wait()
                self.cancelled = True
                tg.cancel_scope.cancel()

            tg.start_soon(run)
            tg.start_soon(watch)
        if failed:
            raise failed[0]
        if not outcome:
            if self.cancelled:
                raise CallCancelledError
            self.cancelled = True
            raise anyio.get_cancelled_exc_class()()
        return outcome[0]


class Rpc:
    def __init__(self, stop: anyio.Event) -> None:
        self._stop = stop

    def cancel(self) -> None:
        self._stop.set()


SESSION = Session("2025-11-25", "test-client", "key-1", 0, "session-1")


def make_call(
    behaviour: Behaviour,
    *,
    relay: Relay = Relay.NONE,
    timeout: float = 1.0,
    grace: float = 0.0,
    payloads: Payloads = Payloads(),  # noqa: B008 (frozen)
    arguments: bytes = b"",
    connections: ConnectLinks | None = None,
) -> tuple[Call, Calls, Connector, Audit]:
    calls, connector, audit = Calls("edge-t"), Connector(behaviour), Audit()
    request = connector_pb2.CallToolRequest(
        server="srv", tool="t", timeout_seconds=timeout, arguments_json=arguments
    )
    call = Call(
        calls,
        cast(ConnectorClient, connector),
        cast(AuditPublisher, audit),
        request,
        "srv_t",
        session=SESSION,
        request_id=7,
        trace=TraceContext("0" * 31 + "1", "0" * 15 + "1", "0" * 15 + "2"),
        sender=Sender("10.0.0.7", 50123, "1.1"),
        payloads=payloads,
        relay=relay,
        grace=grace,
        connections=connections,
    )
    return call, calls, connector, audit


async def hang(notify: object, ask: object) -> connector_pb2.CallToolOutcome:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def test_a_result_is_returned_and_audited_once() -> None:
    async def answer(notify: object, ask: object) -> connector_pb2.CallToolOutcome:
        return OK

    call, calls, _, audit = make_call(answer)
    assert await call.result() == b'{"content":[]}'
    assert [(e.outcome, e.session, e.virtual_key_id, e.request_id) for e in audit.events] == [
        (events_pb2.OUTCOME_OK, "session-1", "key-1", "7")
    ]
    assert len(calls) == 0


async def test_the_record_names_the_trace_and_sender_and_keeps_no_payload_by_default() -> None:
    async def answer(notify: object, ask: object) -> connector_pb2.CallToolOutcome:
        return OK

    call, _, _, audit = make_call(answer, arguments=b'{"password":"hunter2"}')
    await call.result()
    (event,) = audit.events
    assert (event.method, event.trace_id, event.span_id, event.parent_span_id) == (
        "tools/call",
        "0" * 31 + "1",
        "0" * 15 + "1",
        "0" * 15 + "2",
    )
    assert (event.client_address, event.client_port, event.http_version) == ("10.0.0.7", 50123, "1.1")
    assert (event.server, event.tool, event.exposed_name) == ("srv", "t", "srv_t")
    assert event.arguments_json == b"" and event.result_json == b""


async def test_recorded_payloads_are_redacted() -> None:
    async def answer(notify: object, ask: object) -> connector_pb2.CallToolOutcome:
        return connector_pb2.CallToolOutcome(
            result=connector_pb2.ToolResult(result_json=b'{"content":[],"token":"t0k3n"}')
        )

    payloads = Payloads(True, frozenset({"password", "token"}))
    arguments = b'{"user":"ann","nested":[{"Password":"hunter2"}]}'
    call, _, _, audit = make_call(answer, payloads=payloads, arguments=arguments)
    await call.result()
    (event,) = audit.events
    assert orjson.loads(event.arguments_json) == {"user": "ann", "nested": [{"Password": "<redacted>"}]}
    assert orjson.loads(event.result_json) == {"content": [], "token": "<redacted>"}


async def test_the_client_cancels_by_session_and_request_id() -> None:
    call, calls, connector, audit = make_call(hang)
    async with anyio.create_task_group() as tg:
        results: list[bytes] = []

        async def run() -> None:
            results.append(await call.result())

        tg.start_soon(run)
        await wait_all_tasks_blocked()
        assert calls.cancel("session-1", "7")
    assert connector.cancelled, "the connector's call is cancelled with it"
    assert b"cancelled by the client" in results[0] and b'"isError":true' in results[0]
    assert [(e.outcome, e.error_message) for e in audit.events] == [
        (events_pb2.OUTCOME_ERROR, "mcpgw: the call was cancelled by the client")
    ]
    assert not calls.cancel("session-1", "7"), "a finished call is gone from the table"


async def test_a_call_past_its_deadline_ends_with_a_named_timeout() -> None:
    # A streamed call's deadline is the edge's own; a unary call's is its RPC's (gRPC ends it
    # with DEADLINE_EXCEEDED, which reads as the connector not answering within it).
    call, _, connector, audit = make_call(hang, timeout=0.2, relay=Relay.NOTIFY)
    with anyio.fail_after(2):
        result = orjson.loads(await call.result())
    assert result["isError"] is True
    assert "did not answer within 0.2s" in result["content"][0]["text"]
    assert connector.cancelled
    assert [e.outcome for e in audit.events] == [events_pb2.OUTCOME_ERROR]


async def test_an_unreachable_connector_is_named() -> None:
    async def unreachable(notify: object, ask: object) -> connector_pb2.CallToolOutcome:
        raise ConnectorUnavailableError("connection refused")

    call, _, _, audit = make_call(unreachable)
    result = orjson.loads(await call.result())
    assert result["content"][0]["text"] == "mcpgw: connector unavailable: connection refused"
    assert audit.events[0].error_message == "mcpgw: connector unavailable: connection refused"


async def test_the_downstream_own_error_is_that_error() -> None:
    error = connector_pb2.CallError(
        code=-32602, message="bad", data_json=b'{"x":1}', failure=connector_pb2.FAILURE_DOWNSTREAM
    )

    async def refuse(notify: object, ask: object) -> connector_pb2.CallToolOutcome:
        return connector_pb2.CallToolOutcome(error=error)

    call, _, _, audit = make_call(refuse)
    with pytest.raises(DownstreamRpcError) as raised:
        await call.result()
    assert (raised.value.code, raised.value.message, raised.value.data) == (-32602, "bad", {"x": 1})
    assert [e.error_code for e in audit.events] == [-32602]


async def test_a_full_channel_drops_notifications_and_never_blocks_the_call() -> None:
    async def chatty(notify: Callable[[bytes], object] | None, ask: object) -> connector_pb2.CallToolOutcome:
        assert notify is not None
        for n in range(CHANNEL_SIZE + 36):
            notify(b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":%d}}' % n)
        return OK

    call, _, _, audit = make_call(chatty, relay=Relay.NOTIFY)
    with anyio.fail_after(1):
        await call.result()
    kept = [orjson.loads(m)["params"]["progress"] async for m in call.messages]
    assert kept == list(range(CHANNEL_SIZE)), "the first ones, in order; the channel then ends"
    assert call.dropped == 36
    assert len(audit.events) == 1


async def test_a_relayed_request_is_answered_by_the_client_reply() -> None:
    async def sampling(notify: object, ask: Ask | None) -> connector_pb2.CallToolOutcome:
        assert ask is not None
        answer = await ask("sampling/createMessage", b'{"maxTokens":5}')
        text = answer["result"]["content"]["text"]
        return connector_pb2.CallToolOutcome(
            result=connector_pb2.ToolResult(
                result_json=orjson.dumps({"content": [{"type": "text", "text": text}]})
            )
        )

    call, calls, _, _ = make_call(sampling, relay=Relay.NOTIFY | Relay.ASK)
    async with anyio.create_task_group() as tg:
        results: list[bytes] = []

        async def run() -> None:
            results.append(await call.result())

        tg.start_soon(run)
        with anyio.fail_after(1):
            request = orjson.loads(await call.messages.receive())
        assert request["method"] == "sampling/createMessage"
        assert request["id"].startswith("edge-t-"), "the id names the edge that asked"
        assert request["params"] == {"maxTokens": 5}
        assert not calls.reply("edge-t-999", {"result": {}}), "an id nobody asked under"
        assert calls.reply(request["id"], {"result": {"content": {"type": "text", "text": "sampled"}}})
    assert orjson.loads(results[0])["content"][0]["text"] == "sampled"


async def test_an_outside_cancellation_still_audits_once() -> None:
    call, _, _, audit = make_call(hang)
    with anyio.move_on_after(0.1):
        await call.result()
    assert [(e.outcome, e.error_message) for e in audit.events] == [(events_pb2.OUTCOME_ERROR, "cancelled")]


async def test_without_relay_nothing_reaches_the_channel() -> None:
    seen: list[object] = []

    async def look(notify: object, ask: object) -> connector_pb2.CallToolOutcome:
        seen.extend([notify, ask])
        return OK

    call, _, _, _ = make_call(look)
    await call.result()
    assert seen == [None, None]
    # A call that relays nothing has no channel for a transport to read.
    with pytest.raises(AssertionError):
        _ = call.messages


async def test_the_result_waits_until_its_audit_record_is_stored() -> None:
    async def answer(notify: object, ask: object) -> connector_pb2.CallToolOutcome:
        return OK

    call, _, _, audit = make_call(answer)
    audit.stored = anyio.Event()
    results: list[bytes] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _collect(call, results))
        await anyio.wait_all_tasks_blocked()
        assert audit.awaited == [1] and results == [] and len(audit.events) == 1
        audit.stored.set()
    assert len(results) == 1


async def _collect(call: Call, results: list[bytes]) -> None:
    results.append(await call.result())


NEEDS_CONNECTION = connector_pb2.CallToolOutcome(
    error=connector_pb2.CallError(
        code=-32600, message="connect it", failure=connector_pb2.FAILURE_NEEDS_CONNECTION
    )
)


@pytest.mark.parametrize(("code", "raised"), [(-32042, True), (-32600, False)])
async def test_a_call_that_needs_a_connection_answers_with_its_link(code: int, raised: bool) -> None:
    async def needs(notify: object, ask: object) -> connector_pb2.CallToolOutcome:
        return NEEDS_CONNECTION

    class Links:
        def required(self, session: Session | None, sender: Sender, server: str) -> ConnectionRequiredError:
            assert session is SESSION
            return ConnectionRequiredError(
                code, f"open https://gw.test/oauth/connect/{server}", {"server": server}
            )

    call, _, _, audit = make_call(needs, connections=Links())
    if raised:
        # A client that opens URLs gets the URL elicitation error itself.
        with pytest.raises(ConnectionRequiredError) as caught:
            await call.result()
        assert caught.value.code == -32042 and caught.value.data == {"server": "srv"}
    else:
        # Any other client: a tool error its model can read, naming the link.
        result = orjson.loads(await call.result())
        assert result["isError"] is True
        assert result["content"][0]["text"] == "open https://gw.test/oauth/connect/srv"
    assert len(audit.events) == 1
