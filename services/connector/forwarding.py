"""Requests (tools/call above all) straight over keep-alive HTTP to a Streamable HTTP downstream.

The SDK session keeps the handshake, the GET stream and list changes. The calls
skip its per-message models, memory streams and httpx layers: the arguments go out
as the bytes the edge received and the result comes back as the downstream wrote
it. This is the connector's hot path (see `make bench`).

An answer that comes as an event stream is read by the WHATWG rules (`http.py`); when
the stream breaks before the answer, it is resumed with `Last-Event-ID` after the
server's `retry` delay, as the Streamable HTTP transport prescribes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
import anyio
import anyio.abc
import httpx2
import mcp_types as types
import orjson
from mcp.shared.dispatcher import ProgressFnT

from services.connector.errors import (
    DownstreamProtocolError,
    DownstreamRejectedError,
    DownstreamTimeoutError,
    DownstreamUnavailableError,
)
from services.connector.http import server_events
from services.connector.oauth import TokenSource
from services.connector.relay import CallRelay, unrelayable

log = logging.getLogger(__name__)

# How often a broken answer stream is resumed in a row before the call fails, and how long
# to wait first when the server named no `retry` (the SDK client's defaults).
RESUME_ATTEMPTS = 2
RESUME_DELAY_SECONDS = 1.0


@dataclass
class HttpEndpoint:
    """Where a Streamable HTTP server lives and the pool that reaches it; `session_id` is
    filled in by the SDK's handshake."""

    url: str
    headers: dict[str, str]
    http: aiohttp.ClientSession
    session_id: str | None = None
    # Where the bearer token comes from, for a server behind OAuth.
    credentials: TokenSource | None = None


@dataclass(frozen=True, slots=True)
class RawResult:
    """A downstream's result as JSON bytes, with its isError flag (tools/call)."""

    json: bytes
    is_error: bool


@dataclass(slots=True)
class _Call:
    id: str
    on_progress: ProgressFnT | None
    relay: CallRelay | None = None
    # The W3C trace context the server continues (also in the request's _meta).
    traceparent: str | None = None
    # Where a broken answer stream resumes from, and how long the server asked to wait first.
    last_event_id: str = ""
    retry_seconds: float = RESUME_DELAY_SECONDS
    answer: dict[str, Any] | None = None
    # The server's requests of this call being answered: they end with the call.
    answering: list[anyio.CancelScope] = field(default_factory=list)


def _traced(headers: dict[str, str], call: _Call) -> dict[str, str]:
    return headers if call.traceparent is None else {**headers, "traceparent": call.traceparent}


def parse_message(server: str, data: bytes | str) -> dict[str, Any]:
    """One JSON-RPC message a downstream sent, or the DownstreamProtocolError naming what is wrong."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DownstreamProtocolError(server, f"server {server!r} sent invalid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise DownstreamProtocolError(
            server, f"server {server!r} sent a JSON {type(message).__name__}, not a JSON-RPC message"
        )
    return message


def result_of(server: str, message: dict[str, Any]) -> RawResult:
    """The result of a JSON-RPC response, or the error it means."""
    if "error" in message:
        error = message["error"] if isinstance(message["error"], dict) else {}
        code = error.get("code")
        raise DownstreamRejectedError(
            server,
            types.ErrorData(
                code=code if isinstance(code, int) else types.INTERNAL_ERROR,
                message=str(error.get("message", "")),
                data=error.get("data"),
            ),
        )
    result = message.get("result")
    if not isinstance(result, dict):
        raise DownstreamProtocolError(server, f"server {server!r} answered without a result object")
    return RawResult(orjson.dumps(result), result.get("isError") is True)


class HttpForwarder:
    """Sends requests over the endpoint's pool of keep-alive connections to one server."""

    def __init__(
        self,
        server: str,
        endpoint: HttpEndpoint,
        protocol_version: str,
        *,
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
        self._on_notification = on_notification
        self._on_session_lost = on_session_lost
        # String ids cannot collide with the integer ids of the SDK session on the same MCP session.
        self._ids = itertools.count(1)
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Self:
        # Replies and cancellations sent in the background: owned here, cancelled on exit.
        self._tg = await anyio.create_task_group().__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)

    async def call_tool(
        self,
        tool: str,
        arguments_json: bytes,
        meta: dict[str, Any] | None,
        timeout: float,
        on_progress: ProgressFnT | None,
        relay: CallRelay | None = None,
        task_json: bytes = b"",
        traceparent: str | None = None,
    ) -> RawResult:
        call = _Call(f"mcpgw-{next(self._ids)}", on_progress, relay, traceparent)
        if on_progress is not None:
            meta = {**(meta or {}), "progressToken": call.id}
        params = b'{"name":' + orjson.dumps(tool)
        if arguments_json:
            params += b',"arguments":' + arguments_json
        if meta:
            params += b',"_meta":' + orjson.dumps(meta)
        if task_json:
            params += b',"task":' + task_json
        return await self._request(call, "tools/call", params + b"}", timeout)

    async def request(
        self, method: str, params_json: bytes, timeout: float, traceparent: str | None = None
    ) -> RawResult:
        """Any other request; `params_json` is its params object or empty."""
        call = _Call(f"mcpgw-{next(self._ids)}", None, traceparent=traceparent)
        return await self._request(call, method, params_json, timeout)

    async def _request(self, call: _Call, method: str, params_json: bytes, timeout: float) -> RawResult:
        body = b'{"jsonrpc":"2.0","id":' + orjson.dumps(call.id) + b',"method":' + orjson.dumps(method)
        if params_json:
            body += b',"params":' + params_json
        body += b"}"
        try:
            # A bare scope rather than fail_after: half the cost on the hot path.
            with anyio.CancelScope(deadline=anyio.current_time() + timeout):
                return await self._exchange(call, body)
            self._cancel_downstream(call, "timed out")
            raise DownstreamTimeoutError(
                self._server, f"server {self._server!r} did not answer within {timeout:g}s"
            )
        except anyio.get_cancelled_exc_class():
            self._cancel_downstream(call, "cancelled by the client")
            raise
        except (aiohttp.ClientError, httpx2.HTTPError, OSError) as exc:
            raise DownstreamUnavailableError(
                self._server, f"server {self._server!r} is unreachable: {exc or type(exc).__name__}"
            ) from None
        except RuntimeError:
            # aiohttp's "Session is closed": the connection to the server ended under the call.
            if not self._endpoint.http.closed:
                raise
            raise DownstreamUnavailableError(
                self._server, f"server {self._server!r} disconnected during the call"
            ) from None
        finally:
            for scope in call.answering:
                scope.cancel()

    async def _authorized(self, refused: str | None = None) -> dict[str, str]:
        """The request headers, with a bearer token for a server behind OAuth (a new one when
        `refused` is the token the server just answered 401 to)."""
        credentials = self._endpoint.credentials
        if credentials is None:
            return self._headers
        return {**self._headers, "authorization": f"Bearer {await credentials.token(stale=refused)}"}

    async def _exchange(self, call: _Call, body: bytes) -> RawResult:
        http = self._endpoint.http
        headers = _traced(await self._authorized(), call)
        if self._endpoint.credentials is not None:
            async with http.post(self._endpoint.url, data=body, headers=headers) as response:
                if response.status != 401:
                    return await self._answer(call, response)
            refused = headers["authorization"][len("Bearer ") :]
            headers = _traced(await self._authorized(refused=refused), call)
        async with http.post(self._endpoint.url, data=body, headers=headers) as response:
            return await self._answer(call, response)

    async def _answer(self, call: _Call, response: aiohttp.ClientResponse) -> RawResult:
        """The call's result from the server's HTTP answer: JSON, or an event stream."""
        if response.status == 404 and self._endpoint.session_id:
            self._on_session_lost()
            raise DownstreamUnavailableError(self._server, f"server {self._server!r} ended the session")
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if response.status >= 400 and kind != "application/json":
            raise DownstreamProtocolError(
                self._server, f"server {self._server!r} answered HTTP {response.status} ({kind or 'no body'})"
            )
        if kind == "application/json":
            return result_of(self._server, parse_message(self._server, await response.read()))
        if kind != "text/event-stream":
            raise DownstreamProtocolError(
                self._server, f"server {self._server!r} answered with content-type {kind!r}"
            )
        await self._read_events(call, response)
        for _ in range(RESUME_ATTEMPTS):
            if call.answer is not None or not call.last_event_id:
                break
            await anyio.sleep(call.retry_seconds)
            await self._resume(call)
        if call.answer is None:
            raise DownstreamUnavailableError(
                self._server, f"server {self._server!r} closed the event stream before answering"
            )
        return result_of(self._server, call.answer)

    async def _resume(self, call: _Call) -> None:
        """Ask for the rest of a broken answer stream, from the event after the last one read."""
        headers = {**await self._authorized(), "last-event-id": call.last_event_id}
        headers.pop("content-type")
        headers["accept"] = "text/event-stream"
        log.info(
            "server %s: resuming the answer to %s after event %s", self._server, call.id, call.last_event_id
        )
        try:
            async with self._endpoint.http.get(self._endpoint.url, headers=headers) as response:
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if response.status == 200 and kind == "text/event-stream":
                    await self._read_events(call, response)
        except (aiohttp.ClientError, httpx2.HTTPError, OSError) as exc:
            log.info("server %s: resuming the answer to %s failed: %s", self._server, call.id, exc)

    async def _read_events(self, call: _Call, response: aiohttp.ClientResponse) -> None:
        """Handle a stream's events until the call's answer (kept in `call.answer`) or its end;
        a stream that breaks mid-way just ends, to be resumed."""
        try:
            async for event in server_events(response):
                if event.id:
                    call.last_event_id = event.id
                if event.retry is not None:
                    call.retry_seconds = max(event.retry, 0) / 1000
                if not event.data:
                    continue  # e.g. the priming event: an id to resume from, no message
                message = parse_message(self._server, event.data)
                if message.get("id") == call.id and "method" not in message:
                    call.answer = message
                    return
                await self._on_stream_message(call, message)
        except httpx2.SSEError as exc:
            # Not a broken stream (resuming would read the same event again): an event too large.
            raise DownstreamProtocolError(self._server, f"server {self._server!r} sent {exc}") from None
        except (aiohttp.ClientError, httpx2.TransportError, OSError) as exc:
            log.info("server %s: the answer stream to %s broke: %s", self._server, call.id, exc)

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

        scope = anyio.CancelScope()
        call.answering.append(scope)

        async def answer() -> None:
            with scope:
                if call.relay is None:
                    response = unrelayable(method)
                else:
                    response = await call.relay.ask(method, params if isinstance(params, dict) else None)
                reply = {"jsonrpc": "2.0", "id": request_id, **response}
                await self._post(orjson.dumps(reply))

        assert self._tg is not None, "use HttpForwarder as an async context manager"
        self._tg.start_soon(answer)

    def _post_in_background(self, body: bytes) -> None:
        """Fire-and-forget POSTs (cancellations): the call they belong to is not held up."""
        assert self._tg is not None, "use HttpForwarder as an async context manager"
        self._tg.start_soon(self._post, body)

    async def _post(self, body: bytes) -> None:
        try:
            headers = await self._authorized()
            async with self._endpoint.http.post(self._endpoint.url, data=body, headers=headers) as response:
                await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            log.debug("server %s: background POST failed: %s", self._server, exc)
