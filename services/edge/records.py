"""What an operation's audit record says: who sent it, its trace, its names and its outcome.

Every MCP request an edge answers becomes one `OperationEvent`, whatever its method and
however it ended (refused at the edge included); audit turns it into the edge's SERVER
span. A `tools/call`'s record is its `Call`'s; `Operation` records every other request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from services.contracts import events_pb2
from services.edge.auditing import AuditPublisher
from services.edge.errors import EdgeError, JsonRpcId
from services.edge.sessions import Session
from services.telemetry import TraceContext, continue_trace, random_id

# The longest JSON-RPC id, method and name a record keeps (a client's may be any string, and
# a batch of records must fit one message).
MAX_AUDITED_ID = 200
MAX_AUDITED_MESSAGE = 500
# The most of a tool call's arguments or result a record keeps, when payloads are recorded.
MAX_PAYLOAD_BYTES = 8 * 1024
REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a request over HTTP, as its record names them, and the W3C trace context
    its headers carried."""

    address: str = ""
    port: int = 0
    http_version: str = ""
    traceparent: str | None = None
    tracestate: str | None = None
    # The LLM request that caused it (X-LLM-Request-Id).
    llm_request_id: str | None = None
    # How it reached the gateway (the Host header, the scheme), naming the URLs it is sent to.
    host: str = ""
    scheme: str = "http"


NO_SENDER = Sender()
LLM_REQUEST_META_KEY = "llm_request_id"


@dataclass(frozen=True, slots=True)
class Payloads:
    """Whether tool calls' arguments and results go into their records, and which object
    keys are redacted there (compared lowercased)."""

    recorded: bool = False
    redacted: frozenset[str] = frozenset()

    def of(self, raw: bytes) -> bytes:
        """`raw` JSON as its record keeps it: redacted and bounded, or nothing."""
        if not self.recorded or not raw:
            return b""
        if len(raw) > MAX_PAYLOAD_BYTES:
            return orjson.dumps({"truncated": True, "bytes": len(raw)})
        try:
            kept = orjson.dumps(_redact(orjson.loads(raw), self.redacted))
        except (ValueError, TypeError, RecursionError):
            # Not JSON, or nested deeper than either end handles: it must not cost the record.
            return orjson.dumps({"truncated": True, "bytes": len(raw)})
        if len(kept) > MAX_PAYLOAD_BYTES:
            return orjson.dumps({"truncated": True, "bytes": len(kept)})
        return kept


NO_PAYLOADS = Payloads()


def _redact(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if k.lower() in keys else _redact(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, keys) for v in value]
    return value


def trace_of(sender: Sender, params: dict[str, Any] | None) -> TraceContext:
    """The trace an operation continues: its `params._meta` (where MCP carries trace context)
    first, then its HTTP headers, else a new one."""
    meta = (params or {}).get("_meta")
    if isinstance(meta, dict) and "traceparent" in meta:
        return continue_trace(meta.get("traceparent"), meta.get("tracestate"))
    return continue_trace(sender.traceparent, sender.tracestate)


def llm_request_of(sender: Sender, params: dict[str, Any] | None) -> str:
    """The LLM request an operation names as its cause: `_meta` first, then the header."""
    meta = (params or {}).get("_meta")
    named = meta.get(LLM_REQUEST_META_KEY) if isinstance(meta, dict) else None
    if not isinstance(named, str):
        named = sender.llm_request_id or ""
    return named[:MAX_AUDITED_ID]


def operation_event(
    edge_id: str,
    method: str,
    exposed_name: str,
    session: Session | None,
    request_id: JsonRpcId,
    sender: Sender,
    trace: TraceContext,
    started: int,
    llm_request_id: str = "",
) -> events_pb2.OperationEvent:
    """An operation's record, its outcome still to fill in."""
    event = events_pb2.OperationEvent(
        event_id=random_id(128),
        method=method[:MAX_AUDITED_ID],
        start_unix_nano=started,
        end_unix_nano=time.time_ns(),
        exposed_name=exposed_name[:MAX_AUDITED_ID],
        request_id="" if request_id is None else str(request_id)[:MAX_AUDITED_ID],
        trace_id=trace.trace_id,
        span_id=trace.span_id,
        parent_span_id=trace.parent_span_id,
        sampled=trace.sampled,
        edge_id=edge_id,
        client_address=sender.address,
        client_port=sender.port,
        http_version=sender.http_version,
        llm_request_id=llm_request_id,
    )
    if session is not None:
        event.session = session.id
        event.virtual_key_id = session.key_id
        event.client_name = session.client_name
        event.protocol_version = session.protocol_version
    return event


def failed(event: events_pb2.OperationEvent, exc: EdgeError) -> None:
    """Mark a record as ended by the JSON-RPC error the client received."""
    event.outcome = events_pb2.OUTCOME_ERROR
    event.error_code = exc.code
    event.error_message = exc.message[:MAX_AUDITED_MESSAGE]


def target_of(method: str, params: dict[str, Any]) -> str:
    """The name an operation is about, as the client gave it: a prompt's name, a resource's
    URI, a completion's reference ("" when it has none)."""
    if method == "prompts/get":
        name = params.get("name")
    elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        name = params.get("uri")
    elif method == "completion/complete":
        ref = params.get("ref")
        name = (ref.get("name") or ref.get("uri")) if isinstance(ref, dict) else None
    else:
        name = None
    return name if isinstance(name, str) else ""


class Operation:
    """One request other than tools/call, recorded exactly once however it ends. One that
    reached a downstream answers once its record is stored, as a tool call does."""

    def __init__(
        self,
        audit: AuditPublisher,
        edge_id: str,
        method: str,
        params: dict[str, Any],
        session: Session | None,
        request_id: JsonRpcId,
        sender: Sender,
    ) -> None:
        self._audit = audit
        self.session = session
        self.sender = sender
        self.trace = trace_of(sender, params)
        target = target_of(method, params)
        started = time.time_ns()
        cause = llm_request_of(sender, params)
        self.event = operation_event(
            edge_id, method, target, session, request_id, sender, self.trace, started, cause
        )
        self._reached = False

    def reach(self, server: str, name: str) -> None:
        """The operation goes to `server`, which knows its target as `name`."""
        self.event.server, self.event.tool = server, name[:MAX_AUDITED_ID]
        self._reached = True

    async def succeeded(self) -> None:
        self.event.outcome = events_pb2.OUTCOME_OK
        await self._submit()

    async def failed(self, exc: EdgeError) -> None:
        failed(self.event, exc)
        await self._submit()

    async def _submit(self) -> None:
        self.event.end_unix_nano = time.time_ns()
        number = self._audit.submit(self.event)
        if self._reached:
            await self._audit.confirmed(number)
