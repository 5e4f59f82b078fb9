"""The HTTP+SSE transport of revision 2024-11-05, for clients that predate Streamable HTTP.

`GET /sse` (or `/sse/{name}` for one server) opens the session's event stream, whose first
event names the URL to POST to: `/messages?session_id=...`. Every POST is answered 202 and
its responses travel on that stream, as do notifications and the downstream's requests.
The stream lives on the edge that opened it, so its session does too.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.edge.admission import Admission, check_stream, guarded, sender_of
from services.edge.calls import Call, Relay
from services.edge.catalog import Catalog, View
from services.edge.errors import (
    EdgeError,
    InternalError,
    InvalidRequestError,
    SessionNotFoundError,
    UnsupportedMediaTypeError,
    error_response,
    result_response,
)
from services.edge.jsonrpc import Message, parse_body
from services.edge.listening import ListenStream
from services.edge.peers import Peers, owner
from services.edge.protocol import CallContext, McpHandler, hello
from services.edge.records import Sender
from services.edge.sessions import Session
from services.edge.sse import JSON
from services.edge.streams import Stream, StreamHub

log = logging.getLogger(__name__)

MESSAGES_PATH = "/messages"


def sse_endpoint_name(path: str) -> str | None:
    """The server a legacy stream path names: "" for /sse, "a" for /sse/a, None for others."""
    if path == "/sse":
        return ""
    return path[len("/sse/") :].rstrip("/") if path.startswith("/sse/") else None


@dataclass(eq=False)
class SseSession:
    id: str
    stream: Stream
    view: Callable[[], View | None]
    # Who opened the stream: the sender of requests posted to another edge.
    sender: Sender
    session: Session | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def send(self, message: bytes) -> None:
        """Responses wait for room on the stream; only notifications may be dropped."""
        await self.stream.outbox.put(message)


async def _relayed(call: Call, sse: SseSession) -> bytes:
    """Run `call`; what it sends its client meanwhile goes on the session's stream first."""

    async def pump() -> None:
        with call.messages:
            async for message in call.messages:
                await sse.send(message)

    pumping = asyncio.ensure_future(pump())
    try:
        result = await call.result()
    except EdgeError:
        await pumping
        raise
    except BaseException:
        pumping.cancel()
        raise
    # The channel closed as the call ended: the pump has at most its last messages to send.
    await pumping
    return result


class LegacySseEndpoint:
    def __init__(
        self,
        handler: McpHandler,
        catalog: Callable[[], Catalog],
        hub: StreamHub,
        admission: Admission,
        peers: Peers,
        *,
        keepalive_seconds: float,
        session_ttl_seconds: int,
    ) -> None:
        self._handler = handler
        self._catalog = catalog
        self._hub = hub
        self._admission = admission
        self._peers = peers
        self._keepalive = keepalive_seconds
        self._ttl = session_ttl_seconds
        self._sessions: dict[str, SseSession] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await guarded(Request(scope, receive), self._route)
        await response(scope, receive, send)

    async def _route(self, request: Request) -> Response:
        self._admission.check(request)
        name = sse_endpoint_name(request.scope["path"])
        if name is not None and request.method == "GET":
            return self._open(request, name)
        if name is None and request.method == "POST":
            return await self._post(request)
        return Response(status_code=405, headers={"allow": "GET" if name is not None else "POST"})

    def _open(self, request: Request, name: str) -> Response:
        check_stream(request)
        _, key_id = self._admission.endpoint_view(self._catalog(), request, name)
        # The id names this edge, so a POST landing on another one finds its way here.
        session_id = f"{self._peers.edge_id}-{secrets.token_hex(16)}"
        stream = self._hub.open(session_id, name, key_id=key_id)

        def view() -> View | None:
            return self._catalog().view_of(name, key_id)

        sse = SseSession(session_id, stream, view, sender_of(request))
        self._sessions[session_id] = sse

        async def ended() -> None:
            del self._sessions[session_id]
            self._hub.close(stream)
            for task in sse.tasks:
                task.cancel()
            # The stream was the session: it ends with it.
            if sse.session is not None:
                await self._handler.end_session(sse.session)

        endpoint = f"event: endpoint\ndata: {MESSAGES_PATH}?session_id={session_id}\n\n".encode()
        return ListenStream(stream.outbox, endpoint, self._keepalive, ended)

    async def _post(self, request: Request) -> Response:
        session_id = request.query_params.get("session_id", "")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != JSON:
            raise UnsupportedMediaTypeError("Unsupported Media Type: Content-Type must be application/json")
        body = await self._admission.body(request)
        messages, _ = parse_body(body)  # refused here (400), before it travels to another edge
        key = self._admission.key_of(self._catalog(), request)
        key_id = "" if key is None else key.id
        if owner(session_id) not in ("", self._peers.edge_id):
            await self._peers.deliver(session_id, body, key_id)
        elif (sse := self._held(session_id, key_id)) is not None:
            await self._dispatch(sse, messages, sender_of(request))
        else:
            raise SessionNotFoundError("Session not found: open a new stream with GET /sse")
        return Response("Accepted", status_code=202)

    async def deliver(self, session_id: str, body: bytes, key_id: str) -> bool:
        """Messages POSTed for a session this edge holds (here or on another edge, with the
        key they came with); whether it holds the session and the key is the session's."""
        sse = self._held(session_id, key_id)
        if sse is None:
            return False
        # Posted to another edge: its headers stayed there, the stream's stand in.
        await self._dispatch(sse, parse_body(body)[0], sse.sender)
        return True

    def _held(self, session_id: str, key_id: str) -> SseSession | None:
        """The session, if this edge holds it and it was opened with this key."""
        sse = self._sessions.get(session_id)
        return sse if sse is not None and hmac.compare_digest(sse.stream.key_id, key_id) else None

    async def _dispatch(self, sse: SseSession, messages: list[Message], sender: Sender) -> None:
        for message in messages:
            if message.kind == "response":
                await self._handler.client_replied(message.id, message.answer or {})
            elif message.method == "notifications/cancelled" and sse.session is not None:
                await self._handler.client_cancelled(sse.session, message.params)
            elif message.kind == "request":
                task = asyncio.create_task(self._serve(sse, message, sender))
                sse.tasks.add(task)
                task.add_done_callback(sse.tasks.discard)

    async def _serve(self, sse: SseSession, message: Message, sender: Sender) -> None:
        try:
            body = result_response(message.id, await self._answer(sse, message, sender))
        except EdgeError as exc:
            body = error_response(message.id, exc.error_object())
        except Exception:
            log.exception("unexpected error answering %s over SSE", message.method)
            body = error_response(message.id, InternalError("Internal error").error_object())
        await sse.send(body)

    async def _answer(self, sse: SseSession, message: Message, sender: Sender) -> bytes:
        view = sse.view()
        if view is None:
            raise InvalidRequestError("Invalid Request: the server of this stream is no longer connected")
        if message.method == "initialize":
            return self._initialize(sse, message, view)
        if sse.session is None:
            raise InvalidRequestError("Invalid Request: send initialize first")
        level = self._handler.session_level(sse.session)
        ctx = CallContext(sse.session, message.id, view, log_level=level, sender=sender)
        if message.method != "tools/call":
            return await self._handler.request(ctx, message.method, message.params)
        ctx.relay = Relay.NOTIFY | (Relay.ASK if sse.session.answers else Relay.NONE)
        return await _relayed(await self._handler.open_call(ctx, message.params), sse)

    def _initialize(self, sse: SseSession, message: Message, view: View) -> bytes:
        if sse.session is not None:
            raise InvalidRequestError("Invalid Request: the session is already initialized")
        settled = hello(message.params)
        expires = int(time.time()) + self._ttl
        sse.session = Session(
            settled.version,
            settled.client_name,
            sse.stream.key_id,
            expires,
            sse.id,
            sse.stream.endpoint,
            settled.answers,
        )
        return self._handler.initialize_result(settled.version, view)
