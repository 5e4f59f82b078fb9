"""One tools/call on this edge, from its request to its audit record: a `Call` owns it.

A Call owns its cancellation (the client's notifications/cancelled), its deadline (the
call's timeout plus the hop's grace, so nothing waits forever), for a streamed call a
bounded channel of what the downstream sends the client meanwhile (notifications are
dropped when the client falls behind; requests wait for room), the requests it relayed
and their replies, and its audit record: submitted exactly once whatever the outcome,
and stored before the result is handed on. Transports read `messages` and await
`result()`; none of them sees gRPC or the connector.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Flag, auto
from typing import Any, Protocol

import anyio
import mcp_types as types
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from services.contracts import connector_pb2, events_pb2
from services.edge.approvals import DecidedBy, Decision, Verdict
from services.edge.auditing import AuditPublisher
from services.edge.connector_client import (
    DEADLINE_GRACE_SECONDS,
    CallCancelledError,
    Cancellable,
    ConnectorClient,
    ConnectorUnavailableError,
)
from services.edge.errors import ConnectionRequiredError, DownstreamRpcError, JsonRpcId, LimitedError
from services.edge.limits.limiter import NO_CHARGE, Charge
from services.edge.records import (
    MAX_AUDITED_MESSAGE,
    NO_PAYLOADS,
    NO_SENDER,
    Payloads,
    Sender,
    operation_event,
)
from services.edge.sessions import Session
from services.telemetry import TraceContext

log = logging.getLogger(__name__)

# What a call may have waiting for its client before notifications are dropped and
# requests wait: enough for bursts of progress, small enough to bound a slow client.
CHANNEL_SIZE = 64
# How long a cancelled streamed call's RPC has to end before its task is cut off.
CANCEL_GRACE_SECONDS = 5.0


class ConnectLinks(Protocol):
    """The links identities connect per_user_oauth servers at (`identity.connections`)."""

    def required(self, session: Session | None, sender: Sender, server: str) -> ConnectionRequiredError: ...


class Approval(Protocol):
    """A person's approval a call waits for before it runs (`approvals.Approvals`)."""

    @property
    def seconds(self) -> float: ...

    async def decide(self, ask: Callable[[str, bytes], Awaitable[dict[str, Any]]] | None) -> Verdict: ...


class Relay(Flag):
    """What a call sends its client before the result, besides nothing."""

    NONE = 0
    # Notifications: progress, log messages.
    NOTIFY = auto()
    # Requests the client answers: sampling, elicitation, roots.
    ASK = auto()


def failure(code: int, message: str, kind: connector_pb2.Failure.ValueType) -> connector_pb2.CallError:
    return connector_pb2.CallError(code=code, message=message, failure=kind)


def tool_error_result(message: str) -> bytes:
    return orjson.dumps({"content": [{"type": "text", "text": message}], "isError": True})


def no_connector(exc: ConnectorUnavailableError) -> connector_pb2.CallError:
    """The failure of a request no connector answered (in time)."""
    return failure(-32000, f"mcpgw: connector unavailable: {exc}", connector_pb2.FAILURE_NO_CONNECTOR)


def rpc_error(error: connector_pb2.CallError) -> DownstreamRpcError:
    """The JSON-RPC error a client sees for a failed request."""
    return DownstreamRpcError(
        error.code, error.message, orjson.loads(error.data_json) if error.data_json else None
    )


def result_of(outcome: connector_pb2.CallToolOutcome) -> bytes:
    """What the client of a tools/call sees for its outcome: the result, the downstream's own
    JSON-RPC error as that error, and every other failure (unreachable, timed out, invalid
    JSON, cancelled, a fault of the gateway) as a tool error whose text names the cause,
    which a model can read and act on."""
    if outcome.HasField("result"):
        return outcome.result.result_json
    if outcome.error.failure == connector_pb2.FAILURE_DOWNSTREAM:
        raise rpc_error(outcome.error)
    if outcome.error.failure == connector_pb2.FAILURE_LIMITED:
        data = orjson.loads(outcome.error.data_json) if outcome.error.data_json else {}
        raise LimitedError(outcome.error.message, data, int(data.get("retryAfter", 1)))
    return tool_error_result(outcome.error.message)


@dataclass(slots=True)
class _Reply:
    """A relayed request's answer, once the client sends it."""

    arrived: anyio.Event
    answer: dict[str, Any] | None = None


class Calls:
    """The calls in flight on this edge: by (session, request id) for a client's cancellation,
    and by the id of each request they relayed, for the client's reply."""

    def __init__(self, edge_id: str) -> None:
        self.edge_id = edge_id
        self._running: dict[tuple[str, str], Call] = {}
        self._asking: dict[str, Call] = {}
        self._ids = itertools.count(1)

    def cancel(self, session_id: str, request_id: str) -> bool:
        """Cancel a session's call running on this edge; whether there was one."""
        call = self._running.get((session_id, request_id))
        if call is None:
            return False
        call.cancel()
        return True

    def reply(self, ask_id: JsonRpcId, answer: dict[str, Any]) -> bool:
        """Hand a client's reply to the call that relayed the request; whether one did."""
        call = self._asking.get(str(ask_id))
        return call is not None and call.reply(str(ask_id), answer)

    def __len__(self) -> int:
        return len(self._running)

    def _track(self, call: Call) -> None:
        if call.key is not None:
            self._running[call.key] = call

    def _untrack(self, call: Call) -> None:
        if call.key is not None and self._running.get(call.key) is call:
            del self._running[call.key]

    def _asks(self, call: Call) -> str:
        """A new id for a request `call` relays to its client (it names this edge)."""
        ask_id = f"{self.edge_id}-{next(self._ids)}"
        self._asking[ask_id] = call
        return ask_id

    def _answered(self, ask_id: str) -> None:
        self._asking.pop(ask_id, None)


class Call:
    # Slots: one is alive per call in flight, and a dict of its 31 fields was 1.5 KiB of it.
    __slots__ = (
        "_approval",
        "_asked",
        "_audit",
        "_audited",
        "_calls",
        "_cancel_requested",
        "_cancelled",
        "_charge",
        "_connections",
        "_connector",
        "_llm_request_id",
        "_log_filter",
        "_messages",
        "_outcome",
        "_payloads",
        "_present",
        "_price",
        "_relay",
        "_request_id",
        "_rpc",
        "_scope",
        "_send",
        "_sender",
        "_session",
        "deadline",
        "dropped",
        "exposed_name",
        "key",
        "request",
        "trace",
        "verdict",
    )

    def __init__(
        self,
        calls: Calls,
        connector: ConnectorClient,
        audit: AuditPublisher,
        request: connector_pb2.CallToolRequest,
        exposed_name: str,
        *,
        session: Session | None,
        request_id: JsonRpcId,
        trace: TraceContext,
        sender: Sender = NO_SENDER,
        llm_request_id: str = "",
        payloads: Payloads = NO_PAYLOADS,
        price: float = 0.0,
        charge: Charge = NO_CHARGE,
        relay: Relay = Relay.NONE,
        log_filter: Callable[[bytes], bool] | None = None,
        present: Callable[[bytes], Awaitable[bytes]] | None = None,
        connections: ConnectLinks | None = None,
        approval: Approval | None = None,
        grace: float = DEADLINE_GRACE_SECONDS,
    ) -> None:
        self.request = request
        self.exposed_name = exposed_name
        self._calls = calls
        self._connector = connector
        self._audit = audit
        self._session = session
        self._request_id = request_id
        self.trace = trace
        self._sender = sender
        self._llm_request_id = llm_request_id
        self._payloads = payloads
        # What the call costs once it ran (tool_pricing): charged for a result, error or not.
        self._price = price
        # What it took of its key's budget, given back when it runs to no result.
        self._charge = charge
        self._relay = relay
        self._log_filter = log_filter
        # The result as the client's view names things (resource URIs on /mcp, task ids).
        self._present = present
        # What a per_user_oauth server's call answers while the caller has not connected it.
        self._connections = connections
        # Whether a person must approve the call first, and what they decided.
        self._approval = approval
        self.verdict: Verdict | None = None
        self.deadline = request.timeout_seconds + grace + (approval.seconds if approval is not None else 0.0)
        self._cancelled = False
        # A call is cancelled through its RPC, not by cutting off the task awaiting it (that
        # leaks grpcio's native ops, grpc/grpc#43360): a streamed one by this event, a unary
        # one by cancelling the RPC it was handed (`_rpc`).
        self._cancel_requested: anyio.Event | None = None
        # Only a streamed call has a channel to its client and a scope to cut it off with (the
        # unary one is the hot path: it allocates neither).
        self._send: MemoryObjectSendStream[bytes] | None = None
        self._messages: MemoryObjectReceiveStream[bytes] | None = None
        self._scope: anyio.CancelScope | None = None
        if relay is not Relay.NONE:
            self._cancel_requested = anyio.Event()
            self._send, self._messages = anyio.create_memory_object_stream[bytes](CHANNEL_SIZE)
            self._scope = anyio.CancelScope()
        self._outcome: connector_pb2.CallToolOutcome | None = None
        self._rpc: Cancellable | None = None
        self._asked: dict[str, _Reply] = {}
        # The audit record's number at the publisher, once submitted.
        self._audited = 0
        # Notifications the client missed because it did not read them in time.
        self.dropped = 0
        # A client cancels a call by its session and the id it sent the call under.
        self.key = (session.id, str(request_id)) if session is not None and session.id else None

    @property
    def messages(self) -> MemoryObjectReceiveStream[bytes]:
        """What the downstream sends the client before the result, closed when the call ends."""
        assert self._messages is not None, "a call that relays nothing has no messages"
        return self._messages

    def cancel(self) -> None:
        """The client cancelled: the call ends (downstream too) and answers as cancelled."""
        self._cancelled = True
        if self._cancel_requested is None or self._scope is None:
            # A unary call: cancelling its RPC ends it (before it started, it does not start).
            if self._rpc is not None:
                self._rpc.cancel()
            return
        self._cancel_requested.set()
        # Should the RPC not end after all, the call is cut a moment later.
        self._scope.deadline = min(self._scope.deadline, anyio.current_time() + CANCEL_GRACE_SECONDS)

    async def result(self) -> bytes:
        """The call's result JSON, or the DownstreamRpcError the downstream answered (or the
        URL elicitation a client that opens URLs is asked to connect its account with)."""
        outcome = await self.run()
        if outcome.error.failure == connector_pb2.FAILURE_NEEDS_CONNECTION and self._connections is not None:
            required = self._connections.required(self._session, self._sender, self.request.server)
            if required.code == types.URL_ELICITATION_REQUIRED:
                raise required
            return tool_error_result(required.message)
        result = result_of(outcome)
        return result if self._present is None else await self._present(result)

    async def run(self) -> connector_pb2.CallToolOutcome:
        """Run the call to its outcome; the channel closes and the audit record goes out with it."""
        started = time.time_ns()
        outcome: connector_pb2.CallToolOutcome | None = None
        self._calls._track(self)
        try:
            if self._scope is None:
                # The hot path: no task group and no scope; the RPC's own deadline bounds it.
                if not self._cancelled:
                    await self._reach()
            else:
                # The RPC runs in a task of its own: grpc's aio calls re-raise a cancellation in
                # a way a cancel scope around them does not recognise (it escaped as
                # CancelledError), while a task group's child ends cleanly with its group.
                with self._scope, anyio.move_on_after(self.deadline):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._reach)
            outcome = self._outcome or connector_pb2.CallToolOutcome(error=self._ended_early())
        finally:
            self._calls._untrack(self)
            if outcome is None or not outcome.HasField("result"):
                self._charge.refund()
            # The client's stream of this call ends with it.
            if self._send is not None:
                self._send.close()
            audited = self._submit(started, outcome)
        # The answer goes out once its audit record is stored, so no answered call escapes
        # the audit whatever dies next.
        await self._audit.confirmed(audited)
        return outcome

    def _hold_rpc(self, rpc: Cancellable) -> None:
        self._rpc = rpc

    async def _reach(self) -> None:
        """The connector's outcome of the call, into `_outcome`."""
        if self._approval is not None:
            ask = self._ask if Relay.ASK in self._relay else None
            self.verdict = await self._approval.decide(ask)
            if self.verdict.decision is not Decision.APPROVED:
                self._outcome = connector_pb2.CallToolOutcome(error=self._denied(self.verdict))
                return
        try:
            self._outcome = await self._connector.call_tool(
                self.request,
                self.trace,
                self._notify if Relay.NOTIFY in self._relay else None,
                self._ask if Relay.ASK in self._relay else None,
                self._cancel_requested,
                self._hold_rpc,
            )
        except CallCancelledError:
            pass  # run() answers it as cancelled by the client
        except ConnectorUnavailableError as exc:
            log.warning("call to %s failed: connector unavailable: %s", self.exposed_name, exc)
            self._outcome = connector_pb2.CallToolOutcome(error=no_connector(exc))

    def _denied(self, verdict: Verdict) -> connector_pb2.CallError:
        name = self.exposed_name
        if verdict.decision is Decision.TIMED_OUT:
            message = f"mcpgw: nobody approved the call of {name} in time; it did not run"
        else:
            whom = "the client's user" if verdict.by is DecidedBy.CLIENT else "an operator"
            message = f"mcpgw: {whom} denied the call of {name}; it did not run"
        return failure(-32000, message, connector_pb2.FAILURE_DENIED)

    def _ended_early(self) -> connector_pb2.CallError:
        if self._cancelled:
            return failure(
                -32000, "mcpgw: the call was cancelled by the client", connector_pb2.FAILURE_CANCELLED
            )
        return failure(
            -32001,
            f"mcpgw: server {self.request.server!r} did not answer within {self.deadline:g}s",
            connector_pb2.FAILURE_TIMEOUT,
        )

    def _notify(self, message: bytes) -> None:
        if self._log_filter is not None and not self._log_filter(message):
            return
        assert self._send is not None, "only a streamed call is notified"
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            # A client that stopped reading loses a notification, not the edge its memory.
            self.dropped += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _ask(self, method: str, params_json: bytes) -> dict[str, Any]:
        """Relay a downstream's request to the client and wait for its reply."""
        assert self._send is not None, "only a streamed call asks its client"
        ask_id = self._calls._asks(self)
        waiting = self._asked[ask_id] = _Reply(anyio.Event())
        try:
            await self._send.send(
                b'{"jsonrpc":"2.0","id":' + orjson.dumps(ask_id) + b',"method":' + orjson.dumps(method)
                + b',"params":' + (params_json or b"{}") + b"}"
            )  # fmt: skip
            await waiting.arrived.wait()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return {
                "error": {"code": -32603, "message": f"mcpgw: the client's stream closed before {method}"}
            }
        finally:
            del self._asked[ask_id]
            self._calls._answered(ask_id)
        assert waiting.answer is not None
        return waiting.answer

    def reply(self, ask_id: str, answer: dict[str, Any]) -> bool:
        waiting = self._asked.get(ask_id)
        if waiting is None or waiting.arrived.is_set():
            return False
        waiting.answer = answer
        waiting.arrived.set()
        return True

    def _submit(self, started: int, outcome: connector_pb2.CallToolOutcome | None) -> int:
        """The audit record, exactly once; its number at the publisher."""
        if self._audited:
            return self._audited

        event = operation_event(
            self._calls.edge_id,
            "tools/call",
            self.exposed_name,
            self._session,
            self._request_id,
            self._sender,
            self.trace,
            started,
            self._llm_request_id,
        )
        event.server, event.tool = self.request.server, self.request.tool
        if self.verdict is not None:
            event.approval = self.verdict.decision.value
            event.approval_decided_by = self.verdict.by.value
        event.arguments_json = self._payloads.of(self.request.arguments_json)
        if outcome is None:
            event.outcome, event.error_message = events_pb2.OUTCOME_ERROR, "cancelled"
        elif outcome.HasField("error"):
            event.outcome = events_pb2.OUTCOME_ERROR
            event.error_code = outcome.error.code
            event.error_message = outcome.error.message[:MAX_AUDITED_MESSAGE]
        else:
            is_error = outcome.result.is_error
            event.outcome = events_pb2.OUTCOME_TOOL_ERROR if is_error else events_pb2.OUTCOME_OK
            event.result_json = self._payloads.of(outcome.result.result_json)
            event.cost = self._price
        self._audited = self._audit.submit(event)
        return self._audited


class LocalCall(Call):
    """A tools/call the edge answers itself (Code Mode's meta-tools): a Call in everything
    (its record, deadline, cancellation) but where its outcome comes from."""

    __slots__ = ("_answer", "_local")

    def __init__(
        self,
        *args: Any,
        answer: Callable[[LocalCall], Awaitable[tuple[bytes, bool]]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._answer = answer
        self._local = anyio.CancelScope()

    def cancel(self) -> None:
        super().cancel()
        self._local.cancel()

    async def _reach(self) -> None:
        with self._local, anyio.move_on_after(self.deadline):
            result_json, is_error = await self._answer(self)
            self._outcome = connector_pb2.CallToolOutcome(
                result=connector_pb2.ToolResult(result_json=result_json, is_error=is_error)
            )
