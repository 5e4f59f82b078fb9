"""One HTTP client stack per downstream: aiohttp's connection pool under everything.

The SDK's session speaks httpx2, the forwarder's hot path speaks aiohttp directly (an
httpx2 client costs about 0.25 ms more CPU per request here). `AiohttpTransport` lets
the SDK's httpx2 client ride the forwarder's `aiohttp.ClientSession`, so both share
one pool, one connect timeout and one set of headers. Server-Sent Events are read by
httpx2's `EventSource` (a maintained parser derived from httpx-sse) on both paths.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx2

BOM = b"\xef\xbb\xbf"
# One event (one JSON-RPC message) at most: as large as a result the gRPC hop can carry.
MAX_EVENT_BYTES = 64 * 1024 * 1024


def client_session(connect_timeout: float, connections: int) -> aiohttp.ClientSession:
    """The pool a downstream's requests share; reads are bounded by each call's own timeout."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        # httpx2 decodes content encodings itself; aiohttp adds no headers of its own.
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
    )


class _Body(httpx2.AsyncByteStream):
    """An aiohttp response body as httpx2 reads one; a leading UTF-8 BOM is dropped, as
    the event-stream rules say to (the body is only ever JSON or an event stream)."""

    def __init__(self, response: aiohttp.ClientResponse, *, events: bool = False) -> None:
        self._response = response
        self._events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # The body's first bytes, held until they are known to be a BOM or not (a BOM may
        # arrive split across reads).
        head: bytes | None = b""
        last = b""
        try:
            async for chunk in self._response.content.iter_any():
                if head is not None:
                    head += chunk
                    if len(head) < len(BOM) and BOM.startswith(head):
                        continue
                    chunk, head = head.removeprefix(BOM), None
                if chunk:
                    last = chunk
                    yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            # The server closed or broke the body mid-way: httpx2's readers expect its own error.
            raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc
        if head:
            # A body shorter than a BOM that starts like one.
            last = head
            yield head
        if self._events and last.endswith(b"\r"):
            # httpx2 flushes a final CR as a blank line and so dispatches an unterminated event;
            # CRLF is the same one line end by the WHATWG rules, and httpx2 reads that right.
            yield b"\n"

    async def aclose(self) -> None:
        self._response.release()


def as_httpx(
    response: aiohttp.ClientResponse, request: httpx2.Request | None = None, *, events: bool = False
) -> httpx2.Response:
    """An aiohttp response as an httpx2 one (streamed, nothing read yet)."""
    return httpx2.Response(
        response.status, headers=response.raw_headers, stream=_Body(response, events=events), request=request
    )


async def server_events(response: aiohttp.ClientResponse) -> AsyncIterator[httpx2.ServerSentEvent]:
    """The events of an event-stream response, parsed by the WHATWG rules."""
    request = httpx2.Request(response.method, str(response.url))
    body = as_httpx(response, request, events=True)
    # An event stream is UTF-8 whatever charset its content-type names.
    body.encoding = "utf-8"
    async for event in httpx2.EventSource(body, max_event_size=MAX_EVENT_BYTES):
        yield event


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """httpx2 requests sent over an `aiohttp.ClientSession` the caller owns."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        try:
            response = await self._session.request(
                request.method, str(request.url), headers=headers, data=body, allow_redirects=False
            )
        except aiohttp.ServerTimeoutError as exc:
            raise httpx2.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise httpx2.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx2.TransportError(str(exc) or type(exc).__name__, request=request) from exc
        return as_httpx(response, request)
