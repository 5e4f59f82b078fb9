"""Assembling the edge: its HTTP routes over the components that serve them."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import __version__
from services.edge.admission import Admission
from services.edge.auditing import AuditPublisher
from services.edge.console import is_console_path
from services.edge.errors import BodyTooLargeError, EdgeError
from services.edge.execution import PATH as EXECUTE_PATH
from services.edge.execution import ToolExecution
from services.edge.identity.connections import is_connection_path
from services.edge.identity.endpoints import is_oauth_path
from services.edge.legacy import MESSAGES_PATH, LegacySseEndpoint
from services.edge.modern import ModernEndpoint, is_modern
from services.edge.snapshot import SnapshotFollower
from services.edge.streams import StreamHub
from services.edge.transport import StreamableHttpEndpoint
from services.metrics import ServiceMetrics


@dataclass(frozen=True, slots=True)
class EdgeComponents:
    endpoint: StreamableHttpEndpoint
    modern: ModernEndpoint
    legacy: LegacySseEndpoint
    admin: ASGIApp
    # The OAuth authorization server's endpoints (404 unless OAuth is on).
    oauth: ASGIApp
    # Identities connecting their own accounts at per_user_oauth servers (any auth mode).
    connections: ASGIApp
    admission: Admission
    # POST /v1/mcp/tool/execute: the tool calls a model asked for, run under the caller's key.
    execution: ToolExecution
    follower: SnapshotFollower
    audit: AuditPublisher
    hub: StreamHub
    metrics: ServiceMetrics
    # The admin console at /ui (None: off, as when nobody could sign in to it).
    console: ASGIApp | None = None


def create_app(parts: EdgeComponents) -> ASGIApp:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(_: Request) -> JSONResponse:
        ready = parts.follower.loaded.is_set()
        body = {
            "ready": ready,
            "revision": parts.follower.catalog.revision,
            "tools": len(parts.follower.catalog.routes),
            "prompts": len(parts.follower.catalog.aggregate.prompt_routes),
            "servers": sorted(parts.follower.catalog.aggregate.servers),
            "audit_backlog": parts.audit.backlog,
            "streams": parts.hub.open_streams,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        # The Host and Origin rules of /mcp: no page a browser loaded elsewhere reads it.
        try:
            parts.admission.check_declared(request)
        except EdgeError as exc:
            return JSONResponse({"error": {"message": exc.message}}, exc.status)
        body, content_type = await anyio.to_thread.run_sync(parts.metrics.exposition)
        return Response(body, media_type=content_type)

    routes = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route(EXECUTE_PATH, parts.execution.serve, methods=["POST"]),
        ]
    )
    mcp, modern, legacy = parts.endpoint, parts.modern, parts.legacy

    async def guarded(inner: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        # The same Host and Origin rules as /mcp (a page a browser loaded from elsewhere must
        # not drive the admin API or the console), and the body limit before either reads it.
        try:
            parts.admission.check_declared(Request(scope))
        except EdgeError as exc:
            await _refuse(exc, scope, receive, send)
            return
        await within_body_limit(inner, parts.admission.max_body, scope, receive, send)

    async def admin(scope: Scope, receive: Receive, send: Send) -> None:
        await guarded(parts.admin, scope, receive, send)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # The endpoint answers every method and error itself; skipping the router and
        # its middleware for /mcp is measurable on the hot path (make bench).
        path = scope["path"] if scope["type"] == "http" else ""
        if path == "/mcp" or path.startswith("/mcp/"):
            # The revision picks the transport: 2026-07-28 and later, or a handshake one.
            version = Headers(scope=scope).get(MCP_PROTOCOL_VERSION_HEADER)
            await (modern if is_modern(version) else mcp)(scope, receive, send)
        elif path == "/sse" or path.startswith("/sse/") or path == MESSAGES_PATH:
            await legacy(scope, receive, send)
        elif path == "/api" or path.startswith("/api/"):
            await admin(scope, receive, send)
        elif parts.console is not None and is_console_path(path):
            await guarded(parts.console, scope, receive, send)
        elif is_connection_path(path):
            await parts.connections(scope, receive, send)
        elif is_oauth_path(path):
            await parts.oauth(scope, receive, send)
        else:
            await routes(scope, receive, send)

    return app


async def _refuse(exc: EdgeError, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"error": {"message": exc.message}}, exc.status)(scope, receive, send)


async def within_body_limit(inner: ASGIApp, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    """`inner`, but answered 413 once the body it reads passes `limit` bytes, declared or not
    (a chunked body has no Content-Length to check first): nothing more of it is read, `inner`
    is told the client left, and whatever it sends after is dropped."""
    read, refused, started = 0, False, False

    async def receiving() -> Message:
        nonlocal read, refused
        if refused:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            read += len(message.get("body", b""))
            if read > limit:
                refused = True
                if not started:
                    error = BodyTooLargeError(f"Payload Too Large: the limit is {limit} bytes")
                    await _refuse(error, scope, receive, send)
                return {"type": "http.disconnect"}
        return message

    async def sending(message: Message) -> None:
        nonlocal started
        if refused:
            return
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await inner(scope, receiving, sending)
    except Exception:
        # What reading a body that ended early raised in `inner` (its answer is the 413).
        if not refused:
            raise
