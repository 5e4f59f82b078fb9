"""Streamable HTTP (`POST`/`GET`/`DELETE /mcp`): the HTTP rules of the 2025 revisions.

Everything here is about HTTP: headers, status codes, JSON or SSE framing. The MCP
methods themselves are `McpHandler`'s.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.edge.admission import (
    Admission,
    check_post,
    check_stream,
    endpoint_name,
    guarded,
    sender_of,
)
from services.edge.background import Background
from services.edge.calls import Call, Relay
from services.edge.catalog import Catalog, View
from services.edge.errors import (
    BadRequestError,
    EdgeError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    JsonRpcId,
    LimitedError,
    SessionNotFoundError,
    error_response,
    result_response,
)
from services.edge.eventlog import EventLog
from services.edge.jsonrpc import Message, parse_body
from services.edge.listening import ListenStream
from services.edge.protocol import CallContext, McpHandler, hello
from services.edge.sessions import URL_ELICITATION, Session, SessionCodec
from services.edge.sse import (
    JSON,
    KEEPALIVE,
    SSE,
    SSE_HEADERS,
    Reply,
    json_or_events,
    sse_event,
)
from services.edge.streams import StreamHub

log = logging.getLogger(__name__)

SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
# The first revision whose clients resume a broken SSE answer (priming events, Last-Event-ID).
RESUMABLE_FROM = "2025-11-25"
# Batches were removed in 2025-06-18.
BATCH_VERSIONS = frozenset({"2024-11-05", "2025-03-26"})


async def answer(request_id: JsonRpcId, call: Call) -> Reply:
    """A call's JSON-RPC response: its result, or the error it ended with."""
    try:
        return Reply(result_response(request_id, await call.result()))
    except EdgeError as exc:
        return Reply(error_response(request_id, exc.error_object()))
    except Exception:
        log.exception("unexpected error answering tools/call")
        return Reply(error_response(request_id, InternalError("Internal error").error_object()))


class StreamableHttpEndpoint:
    def __init__(
        self,
        handler: McpHandler,
        catalog: Callable[[], Catalog],
        sessions: SessionCodec,
        hub: StreamHub,
        admission: Admission,
        events: EventLog,
        background: Background,
        *,
        keepalive_seconds: float,
    ) -> None:
        self._events = events
        self._background = background
        self._handler = handler
        self._catalog = catalog
        self._sessions = sessions
        self._hub = hub
        self._admission = admission
        self._keepalive = keepalive_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await guarded(Request(scope, receive), self._route)
        await response(scope, receive, send)

    async def _route(self, request: Request) -> Response:
        self._admission.check(request)
        endpoint = endpoint_name(request.scope["path"])
        if request.method == "POST":
            return await self._post(request, endpoint)
        if request.method == "GET":
            return await self._get(request, endpoint)
        if request.method == "DELETE":
            return await self._delete(request, endpoint)
        return Response(status_code=405, headers={"allow": "GET, POST, DELETE"})

    def _view(self, request: Request, endpoint: str) -> tuple[View, str]:
        return self._admission.endpoint_view(self._catalog(), request, endpoint)

    def _session(self, request: Request, endpoint: str, key_id: str) -> Session:
        token = request.headers.get(SESSION_HEADER)
        if not token:
            raise BadRequestError("Bad Request: Mcp-Session-Id header is required")
        session = self._sessions.resolve(token)
        if session.endpoint != endpoint:
            raise SessionNotFoundError("Session not found: it belongs to another endpoint")
        if not hmac.compare_digest(session.key_id, key_id):
            raise SessionNotFoundError("Session not found: it was opened with another key")
        version = request.headers.get(VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            raise BadRequestError(f"Bad Request: unsupported MCP-Protocol-Version {version}")
        return session

    async def _post(self, request: Request, endpoint: str) -> Response:
        check_post(request)
        body = await self._admission.body(request)
        view, key_id = self._view(request, endpoint)
        messages, is_batch = parse_body(body)
        if any(m.method == "initialize" for m in messages):
            if is_batch:
                raise InvalidRequestError("Invalid Request: initialize must not be part of a batch")
            return self._initialize(messages[0], view, endpoint, key_id)
        session = self._session(request, endpoint, key_id)
        if is_batch and session.protocol_version not in BATCH_VERSIONS:
            raise InvalidRequestError(
                f"Invalid Request: batches are not allowed in {session.protocol_version}"
            )
        for message in messages:
            if message.kind == "response":
                await self._handler.client_replied(message.id, message.answer or {})
            elif message.method == "notifications/cancelled":
                await self._handler.client_cancelled(session, message.params)
        requests = [m for m in messages if m.kind == "request"]
        if not requests:
            return Response(status_code=202)
        sender = sender_of(request)
        if is_batch:
            contexts = [(CallContext(session, m.id, view, sender=sender), m) for m in requests]
            answers = [(await self._answer(ctx, m)).body for ctx, m in contexts]
            return Response(b"[" + b",".join(answers) + b"]", media_type=JSON)
        message = requests[0]
        meta = (message.params or {}).get("_meta")
        # A call that may send the client something before its result answers over SSE: one
        # that asked for progress, or whose client answers requests or set a log level.
        streams = (
            session.answers
            or (isinstance(meta, dict) and "progressToken" in meta)
            or self._handler.wants_logs(session)
        )
        ctx = CallContext(session, message.id, view, sender=sender)
        if message.method == "tools/call" and streams:
            return await self._answer_streaming(session, ctx, message)
        reply = await self._answer(ctx, message)
        return Response(reply.body, status_code=reply.status, media_type=JSON, headers=reply.headers)

    def _initialize(self, message: Message, view: View, endpoint: str, key_id: str) -> Response:
        if message.kind != "request":
            raise InvalidRequestError("Invalid Request: initialize must be a request")
        try:
            settled = hello(message.params)
        except InvalidParamsError as exc:
            return Response(error_response(message.id, exc.error_object()), media_type=JSON)
        token = self._sessions.issue(
            settled.version, settled.client_name, key_id, endpoint=endpoint, answers=settled.answers
        )
        body = result_response(message.id, self._handler.initialize_result(settled.version, view))
        return Response(body, media_type=JSON, headers={SESSION_HEADER: token})

    async def _answer(self, ctx: CallContext, message: Message) -> Reply:
        try:
            result = await self._handler.request(ctx, message.method, message.params)
        except EdgeError as exc:
            return error_reply(message.id, exc)
        except Exception:
            log.exception("unexpected error answering %s", message.method)
            return Reply(error_response(message.id, InternalError("Internal error").error_object()))
        return Reply(result_response(message.id, result))

    async def _answer_streaming(self, session: Session, ctx: CallContext, message: Message) -> Response:
        ctx.relay = Relay.NOTIFY | (Relay.ASK if session.answers else Relay.NONE)
        ctx.log_level = self._handler.session_level(session)
        try:
            call = await self._handler.open_call(ctx, message.params)
        except EdgeError as exc:
            reply = error_reply(message.id, exc)
            return Response(reply.body, status_code=reply.status, media_type=JSON, headers=reply.headers)
        record = self._events.open(session.id) if session.protocol_version >= RESUMABLE_FROM else None
        return await json_or_events(call.messages, answer(message.id, call), self._background, record)

    async def _resume(self, session: Session, last_event_id: str) -> Response:
        """The rest of an SSE answer the client lost, from the event after the one it names."""
        replay = await self._events.replay(session.id, last_event_id)

        async def events() -> AsyncIterator[bytes]:
            async for event in replay:
                yield KEEPALIVE if event is None else sse_event(event[1], event[0])

        return StreamingResponse(events(), media_type=SSE, headers=SSE_HEADERS)

    async def _get(self, request: Request, endpoint: str) -> Response:
        check_stream(request)
        _, key_id = self._view(request, endpoint)
        session = self._session(request, endpoint, key_id)
        last_event_id = request.headers.get("last-event-id")
        if last_event_id is not None:
            return await self._resume(session, last_event_id)
        stream = self._hub.open(
            session.id, endpoint, key_id=key_id, url_elicitation=URL_ELICITATION in session.answers
        )

        async def ended() -> None:
            self._hub.close(stream)

        return ListenStream(stream.outbox, b": stream open\n\n", self._keepalive, ended)

    async def _delete(self, request: Request, endpoint: str) -> Response:
        _, key_id = self._view(request, endpoint)
        session = self._session(request, endpoint, key_id)
        self._hub.end(session.id)
        await self._handler.end_session(session)
        return Response(status_code=200)


def error_reply(request_id: JsonRpcId, exc: EdgeError) -> Reply:
    """A refused request's answer: HTTP 200, but 429 with Retry-After for a limited call
    (answered alone, as JSON; inside a batch or a stream only the JSON-RPC error says it)."""
    body = error_response(request_id, exc.error_object())
    if isinstance(exc, LimitedError):
        return Reply(body, exc.status, exc.headers)
    return Reply(body)
