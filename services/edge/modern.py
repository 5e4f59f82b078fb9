"""Revision 2026-07-28 over HTTP: every POST is one self-contained request, with no session.

A sibling of `transport.py` (the 2025 revisions): `app.py` sends a request here when its
MCP-Protocol-Version is not a handshake revision.

The request's `_meta` envelope and routing headers are checked by the `mcp` SDK's own
ladder (`classify_inbound_request`); JSON-RPC errors go out with the status its table
gives (-32601 is 404, -32602 is 400). Notifications ride the request's own SSE answer,
and change notifications a `subscriptions/listen` stream.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    unsupported_protocol_version_rejection,
    validate_mcp_param_headers,
)
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    HEADER_MISMATCH,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.edge.admission import Admission, check_post, endpoint_name, guarded, sender_of
from services.edge.background import Background
from services.edge.calls import CHANNEL_SIZE, Relay
from services.edge.catalog import Catalog, Route, View
from services.edge.errors import (
    EdgeError,
    EnvelopeError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    JsonRpcId,
    LimitedError,
    MethodNotFoundError,
    error_response,
    result_response,
)
from services.edge.inputs import InputRounds
from services.edge.jsonrpc import Message, parse_body
from services.edge.listening import ListenStream
from services.edge.peers import Peers
from services.edge.protocol import CallContext, McpHandler, answerable
from services.edge.records import Sender
from services.edge.sessions import Session
from services.edge.sse import JSON, Reply, json_or_events, sse_event
from services.edge.streams import StreamHub

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = [*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS]
# What a 2026-07-28 client may ask; initialize, ping, logging/setLevel and the subscribe
# pair are gone from the revision and get -32601 like any unknown method.
METHODS = frozenset(
    {
        "server/discover",
        "subscriptions/listen",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "completion/complete",
    }
)
# Results that must carry cache hints; each key sees its own view, so they are private.
CACHEABLE = frozenset(
    {
        "server/discover",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
    }
)
LISTEN_KINDS = {
    "toolsListChanged": "tools",
    "promptsListChanged": "prompts",
    "resourcesListChanged": "resources",
}


def is_modern(version: str | None) -> bool:
    """Whether a request's MCP-Protocol-Version header sends it down this path (any value
    the handshake revisions do not own, so an unknown one is refused by the ladder)."""
    return version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS


def stamped(method: str, result_json: bytes) -> bytes:
    """A result as 2026-07-28 wants it: `resultType`, plus cache hints where cacheable."""
    if result_json.startswith(b'{"resultType"'):
        return result_json
    head = b'{"resultType":"complete"'
    if method in CACHEABLE:
        head += b',"ttlMs":0,"cacheScope":"private"'
    rest = result_json.strip()[1:].lstrip()
    return head + (rest if rest.startswith(b"}") else b"," + rest)


ENVELOPE_KEYS = frozenset(
    {PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, LOG_LEVEL_META_KEY}
)


def downstream_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """The params to send a downstream, which speaks a handshake revision: without the
    2026-07-28 envelope in `_meta` (it would refuse them) and the round-trip fields."""
    sent = {k: v for k, v in (params or {}).items() if k not in ("inputResponses", "requestState")}
    meta = {k: v for k, v in (sent.pop("_meta", None) or {}).items() if k not in ENVELOPE_KEYS}
    if meta:
        sent["_meta"] = meta
    return sent


def reply_for(request_id: JsonRpcId, exc: EdgeError) -> Reply:
    status = ERROR_CODE_HTTP_STATUS.get(exc.code, exc.status if isinstance(exc, LimitedError) else 200)
    return Reply(error_response(request_id, exc.error_object()), status, exc.headers or None)


class ModernEndpoint:
    def __init__(
        self,
        handler: McpHandler,
        catalog: Callable[[], Catalog],
        admission: Admission,
        rounds: InputRounds,
        peers: Peers,
        hub: StreamHub,
        background: Background,
        keepalive_seconds: float,
    ) -> None:
        self._catalog = catalog
        self._admission = admission
        self._background = background
        self._handler = handler
        self._rounds = rounds
        self._peers = peers
        self._hub = hub
        self._keepalive = keepalive_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await guarded(Request(scope, receive), self._route)
        await response(scope, receive, send)

    async def _route(self, request: Request) -> Response:
        self._admission.check(request)
        if request.method != "POST":
            # No GET stream and no session to DELETE in this revision.
            return Response(status_code=405, headers={"allow": "POST"})
        check_post(request)
        body = await self._admission.body(request)
        endpoint = endpoint_name(request.scope["path"])
        view, key_id = self._admission.endpoint_view(self._catalog(), request, endpoint)
        return await self._post(request, body, view, endpoint, key_id)

    async def _post(self, request: Request, body: bytes, view: View, endpoint: str, key_id: str) -> Response:
        messages, is_batch = parse_body(body)
        message = messages[0]
        if is_batch or message.kind == "response":
            raise InvalidRequestError("Invalid Request: a 2026-07-28 body is one request or notification")
        version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER, "")
        if message.kind == "notification":
            # Nothing a 2026-07-28 client notifies changes anything here (cancelling is closing
            # the answer's stream), so a notification is acknowledged and dropped.
            rejection = unsupported_protocol_version_rejection(version)
            if rejection is not None:
                return _json(
                    reply_for(None, EnvelopeError(rejection.code, rejection.message, rejection.data))
                )
            return Response(status_code=202)
        try:
            envelope = self._envelope(request, message)
            caller = _caller(envelope, key_id)
            if message.method not in METHODS:
                raise MethodNotFoundError(f"Method not found: {message.method}")
            if message.method == "subscriptions/listen":
                return await self._listen(message, view, endpoint, key_id)
            if message.method == "tools/call":
                _check_param_headers(request, view, message.params or {})
                return await self._call(message, envelope, view, caller, sender_of(request))
            if message.method == "server/discover":
                return _json(Reply(result_response(message.id, stamped(message.method, self.discover(view)))))
            ctx = CallContext(caller, message.id, view, sender=sender_of(request))
            result = await self._handler.request(ctx, message.method, downstream_params(message.params))
            return _json(Reply(result_response(message.id, stamped(message.method, result))))
        except EdgeError as exc:
            return _json(reply_for(message.id, exc))

    @staticmethod
    def _envelope(request: Request, message: Message) -> dict[str, Any]:
        """The request's `_meta`, once the SDK's ladder has accepted it and the headers."""
        duplicated = find_duplicated_routing_header(request.headers.items())
        if duplicated is not None:
            raise EnvelopeError(HEADER_MISMATCH, f"{duplicated} header appears more than once")
        body = {"method": message.method, "params": message.params}
        verdict = classify_inbound_request(body, headers=request.headers)
        if isinstance(verdict, InboundLadderRejection):
            raise EnvelopeError(verdict.code, verdict.message, verdict.data)
        meta: dict[str, Any] = (message.params or {})["_meta"]
        return meta

    def discover(self, view: View) -> bytes:
        result: dict[str, Any] = {"supportedVersions": SUPPORTED_VERSIONS, "capabilities": view.capabilities}
        if view.instructions:
            result["instructions"] = view.instructions
        return orjson.dumps(result)

    async def _call(
        self, message: Message, envelope: dict[str, Any], view: View, caller: Session, sender: Sender
    ) -> Response:
        params = downstream_params(message.params)
        tool = str(params.get("name"))
        # 2026-07-28 logging is opt-in per request: no level asked for, no log messages.
        level = str(envelope.get(LOG_LEVEL_META_KEY, "off"))
        ctx = CallContext(caller, message.id, view, log_level=level, sender=sender)
        original = message.params or {}
        if "requestState" not in original and not answerable(envelope.get(CLIENT_CAPABILITIES_META_KEY)):
            if "progressToken" in envelope or LOG_LEVEL_META_KEY in envelope:
                ctx.relay = Relay.NOTIFY
            call = await self._handler.open_call(ctx, params)
            if ctx.relay is Relay.NONE:
                return _json(await self._answer(message.id, call.result()))
            return await json_or_events(
                call.messages, self._answer(message.id, call.result()), self._background
            )
        # The call may ask its client for input: it runs in rounds, each one HTTP request
        # whose notifications go out on that request's stream.
        send, notes = anyio.create_memory_object_stream[bytes](CHANNEL_SIZE)

        def sink(note: bytes) -> None:
            with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                send.send_nowait(note)

        result: Awaitable[bytes]
        if "requestState" in original:
            state, responses = original["requestState"], original.get("inputResponses")
            holder = self._rounds.holder(state)
            if holder == self._rounds.edge_id:
                result = self._rounds.carry_on(state, tool, responses, sink)
            else:
                result = self._peers.resume(holder, state, tool, responses)
        else:
            ctx.relay = Relay.NOTIFY | Relay.ASK
            call = await self._handler.open_call(ctx, params)
            result = self._rounds.round(self._rounds.start(tool, call), sink)

        async def round_result() -> bytes:
            with send:
                return await result

        return await json_or_events(notes, self._answer(message.id, round_result()), self._background)

    @staticmethod
    async def _answer(request_id: JsonRpcId, result: Awaitable[bytes]) -> Reply:
        try:
            return Reply(result_response(request_id, stamped("tools/call", await result)))
        except EdgeError as exc:
            return reply_for(request_id, exc)
        except Exception:
            log.exception("unexpected error answering tools/call")
            return reply_for(request_id, InternalError("Internal error"))

    async def _listen(self, message: Message, view: View, endpoint: str, key_id: str) -> Response:
        wanted = (message.params or {}).get("notifications")
        if not isinstance(wanted, dict):
            raise InvalidParamsError('Invalid params: "notifications" must be an object')
        honored: dict[str, Any] = {flag: True for flag in LISTEN_KINDS if wanted.get(flag) is True}
        resources = await self._subscribe(view, wanted.get("resourceSubscriptions"))
        if resources:
            honored["resourceSubscriptions"] = list(resources)
        meta = {SUBSCRIPTION_ID_META_KEY: message.id}
        stream = self._hub.open(
            f"listen-{secrets.token_hex(8)}",
            endpoint,
            kinds=frozenset(LISTEN_KINDS[f] for f in honored if f in LISTEN_KINDS),
            meta=meta,
            resources=frozenset((r.server, r.name) for r in resources.values()),
            key_id=key_id,
        )
        ack = stream.notification("notifications/subscriptions/acknowledged", {"notifications": honored})

        def closing() -> bytes:
            # Closed by the edge, not the client: a graceful end, so the final result.
            final = stamped(message.method, orjson.dumps({"_meta": meta}))
            return sse_event(result_response(message.id, final))

        async def ended() -> None:
            self._hub.close(stream)
            # Not awaited here: the stream may be ending because it was cancelled.
            self._background.start(self._unsubscribe, list(resources.values()))

        return ListenStream(stream.outbox, sse_event(ack), self._keepalive, ended, closing)

    async def _subscribe(self, view: View, uris: object) -> dict[str, Route]:
        """The resources of `uris` the view shows and whose servers took the subscription."""
        honored: dict[str, Route] = {}
        for uri in uris if isinstance(uris, list) else ():
            route = view.resource_route(uri)
            if route is None or uri in honored:
                continue
            try:
                await self._handler.forward(route, "resources/subscribe", {"uri": route.name})
            except EdgeError as exc:
                log.info("listen stream not subscribed to %s: %s", uri, exc.message)
                continue
            honored[uri] = route
        return honored

    async def _unsubscribe(self, routes: list[Route]) -> None:
        for route in routes:
            try:
                await self._handler.forward(route, "resources/unsubscribe", {"uri": route.name})
            except EdgeError as exc:
                log.info("unsubscribing a closed listen stream from %s: %s", route.name, exc.message)


def _check_param_headers(request: Request, view: View, params: dict[str, Any]) -> None:
    """The tool's `x-mcp-header` arguments and their Mcp-Param-* headers must agree (400)."""
    schema = view.header_schemas.get(str(params.get("name")))
    if schema is None:
        return
    arguments = params.get("arguments")
    rejection = validate_mcp_param_headers(
        schema, arguments if isinstance(arguments, dict) else {}, request.headers
    )
    if rejection is not None:
        raise EnvelopeError(rejection.code, rejection.message, rejection.data)


def _json(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=JSON, headers=reply.headers)


def _caller(envelope: dict[str, Any], key_id: str) -> Session:
    """Who calls, for audit: a 2026-07-28 request has a client and a key but no session."""
    info = envelope.get(CLIENT_INFO_META_KEY)
    name = info.get("name") if isinstance(info, dict) else None
    return Session(
        str(envelope.get(PROTOCOL_VERSION_META_KEY)),
        name if isinstance(name, str) else "",
        key_id,
        0,
        "",
        answers=answerable(envelope.get(CLIENT_CAPABILITIES_META_KEY)),
    )
