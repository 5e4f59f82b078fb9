"""Per-user OAuth to downstreams: each identity (virtual key) connects its own account at a
per_user_oauth server, and its calls reach that server as that account.

A call from an identity that has not connected answers with the URL to connect at: a URL
elicitation (-32042) for a client that declared it, else an error naming the URL. The URL
carries a ticket signed over the key and the server, good for `TICKET_SECONDS`; its page
asks for that key (the link alone, seen or sent elsewhere, connects nothing), then starts
the server's authorization code flow, whose callback registry completes, keeping the
identity's grant sealed. The same person can list and remove their connections.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import time
from collections.abc import Callable
from urllib.parse import parse_qs, quote, urlsplit

import grpc
import mcp_types as types
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from services.contracts import registry_pb2, registry_pb2_grpc
from services.edge.admission import Admission
from services.edge.catalog import Catalog
from services.edge.errors import ConnectionRequiredError, EdgeError, UnauthorizedError
from services.edge.identity.consent import page
from services.edge.identity.credentials import base_of, base_url
from services.edge.records import Sender
from services.edge.sessions import URL_ELICITATION, Session
from services.edge.signing import Signer, TokenKind, b64, unb64

CONNECT_PREFIX = "/oauth/connect/"
CALLBACK_PATH = "/oauth/callback"
# The operator's authorization comes back to the admin API's callback.
ADMIN_CALLBACK_PATH = "/api/oauth/callback"
CONNECTIONS_PATH = "/oauth/connections"
# How long a connect URL handed out in an error stays good.
TICKET_SECONDS = 900
# Binds the callback to the browser that started the flow: a cookie per flow (named by
# its state's digest), so two flows open in one browser do not undo each other.
COOKIE_PREFIX = "mcpgw-connect-"
REGISTRY_SECONDS = 10.0
# Starting a flow may discover and register the gateway first, which registry bounds to 20 s.
AUTHORIZE_SECONDS = 30.0


def is_connection_path(path: str) -> bool:
    return path.startswith((CONNECT_PREFIX, CONNECTIONS_PATH + "/")) or path in (
        CALLBACK_PATH,
        CONNECTIONS_PATH,
    )


def callbacks(base: str) -> list[str]:
    """Every URL an upstream authorization server sends people back to (registered together)."""
    return [base + ADMIN_CALLBACK_PATH, base + CALLBACK_PATH]


class Connections:
    def __init__(
        self,
        signer: Signer,
        registry: registry_pb2_grpc.RegistryStub,
        admission: Admission,
        catalog: Callable[[], Catalog],
        public_url: str = "",
    ) -> None:
        self._signer = signer
        self._registry = registry
        self._admission = admission
        self._catalog = catalog
        self._public_url = public_url

    # What a call that needs a connection answers

    def url(self, sender: Sender, server: str, key_id: str) -> str:
        """Where the identity `key_id` connects `server`, as the client reached the gateway."""
        claims = {"k": key_id, "s": server, "e": int(time.time()) + TICKET_SECONDS}
        ticket = self._signer.sign(TokenKind.CONNECT, b64(orjson.dumps(claims)))
        base = base_of(sender.scheme, sender.host, self._public_url)
        return f"{base}{CONNECT_PREFIX}{quote(server, safe='')}?ticket={ticket}"

    def required(self, session: Session | None, sender: Sender, server: str) -> ConnectionRequiredError:
        """The error a request to `server` answers while its caller has not connected it."""
        if session is None or not session.key_id:
            message = f"Server {server!r} is reached with your own account: call with a virtual key"
            return ConnectionRequiredError(types.INVALID_REQUEST, message, {"server": server})
        url = self.url(sender, server, session.key_id)
        if URL_ELICITATION in session.answers:
            elicitation = types.ElicitRequestURLParams(
                message=f"Connect your {server} account to the MCP gateway",
                url=url,
                elicitation_id=elicitation_id(session.id, server),
            )
            data = {
                "elicitations": [elicitation.model_dump(by_alias=True, exclude_none=True)],
                "server": server,
                "connect_url": url,
            }
            return ConnectionRequiredError(
                types.URL_ELICITATION_REQUIRED, "URL elicitation required: connect your account", data
            )
        message = f"Server {server!r} needs your own account: open {url} to connect it, then call again"
        return ConnectionRequiredError(types.INVALID_REQUEST, message, {"server": server, "connect_url": url})

    # The endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            self._admission.check_host(request)
            response = await self._route(request)
        except EdgeError as exc:
            response = JSONResponse({"error": {"message": exc.message}}, exc.status, headers=exc.headers)
        await response(scope, receive, send)

    async def _route(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        if path.startswith(CONNECT_PREFIX) and method == "GET":
            return self._ask(request, path[len(CONNECT_PREFIX) :])
        if path.startswith(CONNECT_PREFIX) and method == "POST":
            return await self._connect(request, path[len(CONNECT_PREFIX) :])
        if path == CALLBACK_PATH and method == "GET":
            return await self._callback(request)
        if path == CONNECTIONS_PATH and method == "GET":
            return await self._list(request)
        if path.startswith(CONNECTIONS_PATH + "/") and method == "DELETE":
            return await self._disconnect(request, path[len(CONNECTIONS_PATH) + 1 :])
        allowed = "DELETE" if path.startswith(CONNECTIONS_PATH + "/") else "GET, POST"
        return Response(status_code=405, headers={"allow": allowed})

    def _ask(self, request: Request, server: str, problem: str = "") -> Response:
        """The link's page: the person proves the identity the link was issued to with its
        key, so a link that reached someone else (or was sent to someone) connects nothing."""
        ticket = request.query_params.get("ticket", "")
        if self._ticket(ticket, server) is None:
            return _expired()
        error = f'<p class="error">{_text(problem)}</p>' if problem else ""
        body = (
            f"<p>Connect your <strong>{_text(server)}</strong> account to the MCP gateway. Its calls "
            f"will reach {_text(server)} as you.</p>{error}"
            '<form method="post"><label for="key">Your virtual key</label>'
            '<input id="key" name="key" type="password" autocomplete="off" required autofocus>'
            f'<input type="hidden" name="ticket" value="{_text(ticket)}">'
            "<button>Continue</button></form>"
        )
        return page("Connect an account", body)

    async def _connect(self, request: Request, server: str) -> Response:
        """Check the ticket and the key, start the server's authorization for that key, and
        send the person on."""
        base = base_url(request, self._public_url)
        # A form another site submits in the person's browser would connect their account to
        # the submitter's key: only this origin's own page may post it.
        if request.headers.get("origin") != base:
            return page("Not connected", "<p>This form must be sent from the gateway's own page.</p>", 403)
        form = await request.form(max_files=0, max_fields=4)
        ticket = str(form.get("ticket", ""))
        key_id = self._ticket(ticket, server)
        if key_id is None:
            return _expired()
        try:
            key = self._catalog().governance.authenticate(str(form.get("key", "")).strip() or None)
        except UnauthorizedError:
            key = None
        if key is None or not hmac.compare_digest(key.id.encode(), key_id.encode()):
            request.scope["query_string"] = f"ticket={ticket}".encode()
            return self._ask(request, server, "That is not the key this link was issued to.")
        base = base_url(request, self._public_url)
        start = registry_pb2.StartAuthorizationRequest(
            server=server, redirect_uri=base + CALLBACK_PATH, key_id=key_id, redirect_uris=callbacks(base)
        )
        try:
            started = await self._registry.StartAuthorization(start, timeout=AUTHORIZE_SECONDS)
        except grpc.aio.AioRpcError as exc:
            return _failed(exc)
        state = parse_qs(urlsplit(started.authorization_url).query).get("state", [""])[0]
        response = RedirectResponse(started.authorization_url, 302, headers={"cache-control": "no-store"})
        response.set_cookie(
            cookie_name(state),
            state,
            max_age=TICKET_SECONDS,
            path=CALLBACK_PATH,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    def _ticket(self, ticket: str, server: str) -> str | None:
        """The key a connect ticket was issued to, for `server`, if it is good."""
        encoded = self._signer.verify(TokenKind.CONNECT, ticket)
        if encoded is None:
            return None
        try:
            claims = orjson.loads(unb64(encoded))
            key_id, named, expires = str(claims["k"]), str(claims["s"]), int(claims["e"])
        except (ValueError, KeyError, TypeError):
            return None
        return key_id if named == server and expires >= time.time() else None

    async def _callback(self, request: Request) -> Response:
        query = request.query_params
        state, code, error = query.get("state", ""), query.get("code", ""), query.get("error", "")
        if error or not state or not code:
            problem = error or "the server sent no code"
            return page("Not connected", f"<p>The authorization did not complete: {_text(problem)}.</p>", 400)
        started = request.cookies.get(cookie_name(state), "")
        if not hmac.compare_digest(started.encode(), state.encode()):
            return page(
                "Not connected", "<p>This browser did not start this connection: start it again.</p>", 400
            )
        complete = registry_pb2.CompleteAuthorizationRequest(state=state, code=code, identity=True)
        try:
            done = await self._registry.CompleteAuthorization(complete, timeout=REGISTRY_SECONDS)
        except grpc.aio.AioRpcError as exc:
            return _failed(exc)
        what = f"your {_text(done.server)} account" if done.key_id else _text(done.server)
        response = page("Connected", f"<p>The gateway reaches {what} now. You can close this window.</p>")
        response.delete_cookie(cookie_name(state), path=CALLBACK_PATH)
        return response

    def _key(self, request: Request) -> str:
        key = self._admission.key_of(self._catalog(), request)
        if key is None:
            raise UnauthorizedError("Unauthorized: connections belong to a virtual key; send one")
        return key.id

    async def _list(self, request: Request) -> Response:
        """The per_user_oauth servers the caller's identity connected, and those it has not."""
        key_id = self._key(request)
        try:
            listed = await self._registry.ListUserTokens(
                registry_pb2.UserTokenRequest(key_id=key_id), timeout=REGISTRY_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            return _failed(exc)
        return JSONResponse({"connected": sorted(t.server for t in listed.tokens)})

    async def _disconnect(self, request: Request, server: str) -> Response:
        key_id = self._key(request)
        try:
            await self._registry.DeleteUserToken(
                registry_pb2.UserTokenRequest(server=server, key_id=key_id), timeout=REGISTRY_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            return _failed(exc)
        return Response(status_code=204)


def _text(text: str) -> str:
    return html.escape(text[:200])


def _expired() -> Response:
    return page(
        "Link expired", "<p>This link is not valid any more: call the tool again for a new one.</p>", 400
    )


def _failed(exc: grpc.aio.AioRpcError) -> Response:
    status = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 422}.get(exc.code(), 502)
    detail = (exc.details() or exc.code().name) if status != 502 else "the registry did not answer"
    return page("Not connected", f"<p>{_text(detail)}.</p>", status)


def cookie_name(state: str) -> str:
    """The cookie that holds one flow's state in the browser that started it."""
    return COOKIE_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:16]


def elicitation_id(session_id: str, server: str) -> str:
    """The id of the URL elicitation asking a session to connect a server: derived, so any
    edge can say it completed without having issued it."""
    return b64(hashlib.sha256(f"{session_id}\0{server}".encode()).digest()[:12])
