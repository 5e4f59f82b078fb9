"""What every MCP request to the edge passes before its transport reads it: the Host and
Origin allowlists (DNS-rebinding protection) and the body size limit."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from services.edge.errors import (
    BadRequestError,
    BodyTooLargeError,
    EdgeError,
    ForbiddenHostError,
    ForbiddenOriginError,
    error_response,
)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class Admission:
    def __init__(
        self,
        max_body_bytes: int,
        allowed_origins: frozenset[str] = frozenset(),
        allowed_hosts: frozenset[str] | None = frozenset(),
    ) -> None:
        self._max_body = max_body_bytes
        self._allowed_origins = allowed_origins
        # None admits any Host; otherwise loopback names and these.
        self._allowed_hosts = None if allowed_hosts is None else LOCAL_HOSTS | allowed_hosts

    def check(self, request: Request) -> None:
        """ForbiddenHostError or ForbiddenOriginError unless both are allowed."""
        if self._allowed_hosts is not None:
            host = request.headers.get("host", "")
            # urlsplit caches its results, so the same Host header is parsed once.
            if urlsplit(f"//{host}").hostname not in self._allowed_hosts:
                raise ForbiddenHostError(f"Forbidden: host {host!r} is not allowed")
        origin = request.headers.get("origin")
        if origin is None or origin in self._allowed_origins:
            return
        if urlsplit(origin).hostname not in LOCAL_HOSTS:
            raise ForbiddenOriginError(f"Forbidden: origin {origin} is not allowed")

    async def body(self, request: Request) -> bytes:
        """The request body, refused with 413 once it passes the limit (before it is all read)."""
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequestError("Bad Request: invalid Content-Length")
            if int(declared) > self._max_body:
                raise BodyTooLargeError(f"Payload Too Large: the limit is {self._max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                raise BodyTooLargeError(f"Payload Too Large: the limit is {self._max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def refusal(exc: EdgeError) -> Response:
    """The answer to a request refused before any JSON-RPC id was read."""
    return Response(
        error_response(None, exc.error_object()),
        exc.status,
        headers=exc.headers,
        media_type="application/json",
    )
