"""What every MCP request to the edge passes before its transport reads it: the Host and
Origin allowlists (DNS-rebinding protection), the media types, the body size limit, and
the view its virtual key has of the endpoint it names. Each transport calls these."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from services.edge.catalog import Catalog, View
from services.edge.errors import (
    BadRequestError,
    BodyTooLargeError,
    EdgeError,
    EndpointNotFoundError,
    ForbiddenHostError,
    ForbiddenOriginError,
    InternalError,
    NotAcceptableError,
    UnsupportedMediaTypeError,
    error_response,
)
from services.edge.identity.credentials import Credentials
from services.edge.policy import KeyPolicy
from services.edge.records import Sender
from services.edge.sse import JSON, SSE

log = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def accepts(header: str, media_type: str) -> bool:
    """Whether an Accept header admits `media_type` (wildcards included; absent admits all)."""
    major = media_type.split("/")[0]
    for part in header.split(","):
        offered = part.split(";")[0].strip().lower()
        if offered in (media_type, f"{major}/*", "*/*"):
            return True
    return False


def check_post(request: Request) -> None:
    """A Streamable HTTP POST accepts JSON and event streams and sends JSON (406, 415)."""
    accept = request.headers.get("accept", "*/*")
    if not (accepts(accept, JSON) and accepts(accept, SSE)):
        raise NotAcceptableError("Not Acceptable: Accept must include application/json and text/event-stream")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != JSON:
        raise UnsupportedMediaTypeError("Unsupported Media Type: Content-Type must be application/json")


def check_stream(request: Request) -> None:
    """A GET that opens an event stream must accept one (406)."""
    if not accepts(request.headers.get("accept", ""), SSE):
        raise NotAcceptableError("Not Acceptable: Accept must include text/event-stream")


def sender_of(request: Request) -> Sender:
    """Who sent `request`, and the W3C trace context of its headers."""
    client = request.scope.get("client")
    headers = request.headers
    return Sender(
        address=client[0] if client else "",
        port=client[1] if client else 0,
        http_version=request.scope.get("http_version", ""),
        traceparent=headers.get("traceparent"),
        tracestate=headers.get("tracestate"),
        llm_request_id=headers.get("x-llm-request-id"),
        host=headers.get("host") or "",
        scheme=request.scope.get("scheme", "http"),
    )


def endpoint_name(path: str) -> str:
    """The server or group a path names: "" for /mcp, "a" for /mcp/a (a trailing slash allowed)."""
    return path[len("/mcp/") :].rstrip("/") if path.startswith("/mcp/") else ""


def _hostname(url: str) -> str | None:
    """The host a URL names, None when it names none or cannot be parsed (e.g. "[::1")."""
    try:
        # urlsplit caches its results, so the same header is parsed once.
        return urlsplit(url).hostname
    except ValueError:
        return None


class Admission:
    def __init__(
        self,
        max_body_bytes: int,
        allowed_origins: frozenset[str] = frozenset(),
        allowed_hosts: frozenset[str] | None = frozenset(),
        credentials: Credentials | None = None,
    ) -> None:
        self._max_body = max_body_bytes
        self._credentials = credentials or Credentials()
        self._allowed_origins = allowed_origins
        # None admits any Host; otherwise loopback names and these.
        self._allowed_hosts = None if allowed_hosts is None else LOCAL_HOSTS | allowed_hosts

    @property
    def max_body(self) -> int:
        return self._max_body

    def key_of(self, catalog: Catalog, request: Request) -> KeyPolicy | None:
        """The key the request acts under (None: none where none is needed); 401 or 403 else."""
        return self._credentials.key_of(catalog.governance, request)

    def endpoint_view(self, catalog: Catalog, request: Request, endpoint: str) -> tuple[View, str]:
        """What the request's key (if any) sees at the endpoint, and the key's id ("" for none);
        EndpointNotFoundError when it sees nothing there."""
        key = self.key_of(catalog, request)
        view = catalog.view_for(endpoint, key)
        if view is None:
            raise EndpointNotFoundError(f"Not Found: no connected server or tool group named {endpoint!r}")
        return view, "" if key is None else key.id

    def check(self, request: Request) -> None:
        """ForbiddenHostError or ForbiddenOriginError unless both are allowed; BadRequestError
        for more than one Host (which one a proxy and this check read would differ)."""
        self.check_host(request)
        origin = request.headers.get("origin")
        if origin is None or origin in self._allowed_origins:
            return
        if _hostname(origin) not in LOCAL_HOSTS:
            raise ForbiddenOriginError(f"Forbidden: origin {origin[:100]!r} is not allowed")

    def check_host(self, request: Request) -> None:
        """ForbiddenHostError unless the Host is allowed; BadRequestError for more than one."""
        hosts = request.headers.getlist("host")
        if len(hosts) > 1:
            raise BadRequestError("Bad Request: more than one Host header")
        if self._allowed_hosts is not None:
            host = hosts[0] if hosts else ""
            if _hostname(f"//{host}") not in self._allowed_hosts:
                raise ForbiddenHostError(f"Forbidden: host {host[:100]!r} is not allowed")

    def check_declared(self, request: Request) -> None:
        """`check`, and a declared Content-Length within the limit (413) or 400."""
        self.check(request)
        self._within_limit(request)

    def _within_limit(self, request: Request) -> None:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequestError("Bad Request: invalid Content-Length")
            if int(declared) > self._max_body:
                raise BodyTooLargeError(f"Payload Too Large: the limit is {self._max_body} bytes")

    async def body(self, request: Request) -> bytes:
        """The request body, refused with 413 once it passes the limit (before it is all read)."""
        self._within_limit(request)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                raise BodyTooLargeError(f"Payload Too Large: the limit is {self._max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


async def guarded(request: Request, serve: Callable[[Request], Awaitable[Response]]) -> Response:
    """`serve`'s response, or the refusal its EdgeError means; anything else is logged with
    its trace and answered as an internal error, never with the trace."""
    try:
        return await serve(request)
    except EdgeError as exc:
        return refusal(exc)
    except ClientDisconnect:
        # It sent less than its Content-Length and left: nobody reads an answer.
        log.info("client left during %s %s before sending its whole body", request.method, request.url.path)
        return Response(status_code=400)
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return refusal(InternalError("Internal error"))


def refusal(exc: EdgeError) -> Response:
    """The answer to a request refused before any JSON-RPC id was read."""
    return Response(
        error_response(None, exc.error_object()),
        exc.status,
        headers=exc.headers,
        media_type="application/json",
    )
