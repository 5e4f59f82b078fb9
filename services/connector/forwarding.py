"""Requests (tools/call above all) straight over keep-alive HTTP to a Streamable HTTP downstream.

The SDK session keeps the handshake, the GET stream and list changes. The calls
skip its per-message models, memory streams and httpx layers: the arguments go out
as the bytes the edge received and the result comes back as the downstream wrote
it. This is the connector's hot path (see `make bench`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
import anyio
import mcp_types as types
import orjson
from mcp.shared.dispatcher import ProgressFnT

from services.connector.errors import (
    DownstreamRejectedError,
    DownstreamTimeoutError,
    DownstreamUnavailableError,
)
from services.connector.oauth import TokenSource
from services.connector.relay import CallRelay, unrelayable

log = logging.getLogger(__name__)

CONNECTIONS_PER_SERVER = 100


@dataclass
class HttpEndpoint:
    """Where a Streamable HTTP server lives; `session_id` is filled in by the SDK's handshake."""

    url: str
    headers: dict[str, str]
    session_id: str | None = None
    # Where the bearer token comes from, for a server behind OAuth.
    credentials: TokenSource | None = None


@dataclass(frozen=True, slots=True)
class RawResult:
    """A downstream's CallToolResult as JSON bytes, with its isError flag."""

    json: bytes
    is_error: bool


@dataclass(slots=True)
class _Call:
    id: str
    on_progress: ProgressFnT | None
    relay: CallRelay | None = None


async def sse_messages(content: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The JSON `data` of each SSE event in a response body (events without data are skipped)."""
    data: list[bytes] = []
    async for raw in content:
        line = raw.rstrip(b"\r\n")
        if line:
            if line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            continue
        if data:
            message = orjson.loads(b"\n".join(data))
            data = []
            if isinstance(message, dict):
                yield message


def result_of(server: str, message: dict[str, Any]) -> RawResult:
    """The result of a JSON-RPC response, or the DownstreamRejectedError its error means."""
    if "error" in message:
        error = message["error"] if isinstance(message["error"], dict) else {}
        raise DownstreamRejectedError(
            server,
            types.ErrorData(
                code=error.get("code", types.INTERNAL_ERROR),
                message=str(error.get("message", "")),
                data=error.get("data"),
            ),
        )
    result = message.get("result")
    if not isinstance(result, dict):
        raise DownstreamRejectedError(
            server, types.ErrorData(code=types.INTERNAL_ERROR, message="the server answered without a result")
        )
    return RawResult(orjson.dumps(result), result.get("isError") is True)


class HttpForwarder:
    """Sends requests over a pool of keep-alive connections to one server."""

    def __init__(
        self,
        server: str,
        endpoint: HttpEndpoint,
        protocol_version: str,
        *,
        connect_timeout: float,
        on_notification: Callable[[dict[str, Any]], None],
        on_session_lost: Callable[[], None],
    ) -> None:
        self._server = server
        self._endpoint = endpoint
        self._headers = {
            **endpoint.headers,
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "mcp-protocol-version": protocol_version,
        }
        if endpoint.session_id:
            self._headers["mcp-session-id"] = endpoint.session_id
        self._connect_timeout = connect_timeout
        self._on_notification = on_notification
        self._on_session_lost = on_session_lost
        # String ids cannot collide with the integer ids of the SDK session on the same MCP session.
        self._ids = itertools.count(1)
        self._http: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS_PER_SERVER),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
            skip_auto_headers=("User-Agent",),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._background:
            task.cancel()
        if self._http is not None:
            # Shielded: this runs while the connection is being cancelled, and unclosed
            # keep-alive sockets would hold the downstream's graceful shutdown open.
            with anyio.CancelScope(shield=True):
                await self._http.close()

    async def call_tool(
        self,
        tool: str,
        arguments_json: bytes,
        meta: dict[str, Any] | None,
        timeout: float,
        on_progress: ProgressFnT | None,
        relay: CallRelay | None = None,
    ) -> RawResult:
        call = _Call(f"mcpgw-{next(self._ids)}", on_progress, relay)
        if on_progress is not None:
            meta = {**(meta or {}), "progressToken": call.id}
        params = b'{"name":' + orjson.dumps(tool)
        if arguments_json:
            params += b',"arguments":' + arguments_json
        if meta:
            params += b',"_meta":' + orjson.dumps(meta)
        return await self._request(call, "tools/call", params + b"}", timeout)

    async def request(self, method: str, params_json: bytes, timeout: float) -> RawResult:
        """Any other request; `params_json` is its params object or empty."""
        return await self._request(_Call(f"mcpgw-{next(self._ids)}", None), method, params_json, timeout)

    async def _request(self, call: _Call, method: str, params_json: bytes, timeout: float) -> RawResult:
        body = b'{"jsonrpc":"2.0","id":' + orjson.dumps(call.id) + b',"method":' + orjson.dumps(method)
        if params_json:
            body += b',"params":' + params_json
        body += b"}"
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(call, body)
        except TimeoutError:
            self._cancel_downstream(call, "timed out")
            raise DownstreamTimeoutError(
                self._server, f"server {self._server!r} did not answer within {timeout:g}s"
            ) from None
        except asyncio.CancelledError:
            self._cancel_downstream(call, "cancelled by the client")
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise DownstreamUnavailableError(
                self._server, f"server {self._server!r} is unreachable: {exc or type(exc).__name__}"
            ) from None

    async def _authorized(self, refused: str | None = None) -> dict[str, str]:
        """The request headers, with a bearer token for a server behind OAuth (a new one when
        `refused` is the token the server just answered 401 to)."""
        credentials = self._endpoint.credentials
        if credentials is None:
            return self._headers
        return {**self._headers, "authorization": f"Bearer {await credentials.token(stale=refused)}"}

    async def _exchange(self, call: _Call, body: bytes) -> RawResult:
        assert self._http is not None, "use HttpForwarder as an async context manager"
        headers = await self._authorized()
        if self._endpoint.credentials is not None:
            async with self._http.post(self._endpoint.url, data=body, headers=headers) as response:
                if response.status != 401:
                    return await self._answer(call, response)
            headers = await self._authorized(refused=headers["authorization"][len("Bearer ") :])
        async with self._http.post(self._endpoint.url, data=body, headers=headers) as response:
            return await self._answer(call, response)

    async def _answer(self, call: _Call, response: aiohttp.ClientResponse) -> RawResult:
        """The call's result from the server's HTTP answer: JSON, or an SSE stream."""
        if response.status == 404 and self._endpoint.session_id:
            self._on_session_lost()
            raise DownstreamUnavailableError(self._server, f"server {self._server!r} ended the session")
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if response.status >= 400 and kind != "application/json":
            raise DownstreamRejectedError(
                self._server,
                types.ErrorData(code=types.INTERNAL_ERROR, message=f"server answered HTTP {response.status}"),
            )
        if kind == "application/json":
            return result_of(self._server, orjson.loads(await response.read()))
        if kind != "text/event-stream":
            raise DownstreamRejectedError(
                self._server,
                types.ErrorData(code=types.INTERNAL_ERROR, message=f"unexpected content-type {kind!r}"),
            )
        async for message in sse_messages(response.content):
            if message.get("id") == call.id and "method" not in message:
                return result_of(self._server, message)
            await self._on_stream_message(call, message)
        raise DownstreamUnavailableError(
            self._server, f"server {self._server!r} closed the stream without an answer"
        )

    async def _on_stream_message(self, call: _Call, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params")
        if not isinstance(params, dict):
            params = {}
        if "id" in message and isinstance(method, str):
            # A request of the server's (sampling, elicitation, roots): the client of this call answers.
            self._answer_in_background(call, message["id"], method, message.get("params"))
        elif method == "notifications/message" and call.relay is not None:
            await call.relay.notify(message)
        elif method == "notifications/progress" and call.on_progress is not None:
            if params.get("progressToken") == call.id and isinstance(params.get("progress"), int | float):
                total, note = params.get("total"), params.get("message")
                await call.on_progress(
                    params["progress"],
                    total if isinstance(total, int | float) else None,
                    note if isinstance(note, str) else None,
                )
        elif isinstance(method, str):
            self._on_notification(message)

    def _cancel_downstream(self, call: _Call, reason: str) -> None:
        notification = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": call.id, "reason": reason}}  # fmt: skip
        self._post_in_background(orjson.dumps(notification))

    def _answer_in_background(self, call: _Call, request_id: object, method: str, params: object) -> None:
        """Relay a server request to the call's client without holding up the call's stream."""

        async def answer() -> None:
            if call.relay is None:
                response = unrelayable(method)
            else:
                response = await call.relay.ask(method, params if isinstance(params, dict) else None)
            reply = {"jsonrpc": "2.0", "id": request_id, **response}
            self._post_in_background(orjson.dumps(reply))

        task = asyncio.ensure_future(answer())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _post_in_background(self, body: bytes) -> None:
        """Fire-and-forget POSTs (cancellations, replies): the call they belong to is not held up."""

        async def post() -> None:
            assert self._http is not None
            try:
                headers = await self._authorized()
                async with self._http.post(self._endpoint.url, data=body, headers=headers) as response:
                    await response.read()
            except (aiohttp.ClientError, OSError) as exc:
                log.debug("server %s: background POST failed: %s", self._server, exc)

        task = asyncio.ensure_future(post())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
