"""Server-Sent Events framing, and answering one request as JSON or as an event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.edge.background import Background
from services.edge.eventlog import StreamRecord

JSON = "application/json"
SSE = "text/event-stream"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class Reply(NamedTuple):
    """One JSON-RPC response and the HTTP status it goes out with when sent as JSON."""

    body: bytes
    status: int = 200
    # Headers it goes out with when sent as JSON (Retry-After of a limited call).
    headers: dict[str, str] | None = None


# How long a client whose answer stream broke waits before it resumes (SSE `retry`, ms).
RETRY_MS = 1000
# Events a resumable answer holds for a client that is slow to read, and how long it waits
# for one that stopped reading before ending its stream (the client resumes from the log).
LIVE_BUFFER = 64
LIVE_WAIT_SECONDS = 5.0


def sse_event(data: bytes, event_id: str | None = None) -> bytes:
    if event_id is None:
        return b"event: message\ndata: " + data + b"\n\n"
    return b"id: " + event_id.encode() + b"\nevent: message\ndata: " + data + b"\n\n"


KEEPALIVE = b": keepalive\n\n"


class ListenStream(Response):
    """A long-lived stream of notifications: `opening`, each message of `messages` as an event
    (a keepalive comment when none came for `keepalive_seconds`, so proxies keep it open),
    then `closing()` if the edge ended it; `ended()` runs however it ends.

    One task watches for the client leaving, where StreamingResponse spends three tasks and
    two generators: a held stream is the edge's largest per-client cost."""

    media_type = SSE

    def __init__(
        self,
        messages: MemoryObjectReceiveStream[bytes],
        opening: bytes,
        keepalive_seconds: float,
        ended: Callable[[], Awaitable[None]],
        closing: Callable[[], bytes] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(SSE_HEADERS)
        self._messages = messages
        self._opening = opening
        self._keepalive = keepalive_seconds
        self._ended = ended
        self._closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self._opening, "more_body": True})
            async with anyio.create_task_group() as watching:
                watching.start_soon(_cancel_on_disconnect, receive, watching.cancel_scope)
                await self._relay(send)
                # The edge closed the stream: a graceful end.
                closing = self._closing() if self._closing is not None else b""
                await send({"type": "http.response.body", "body": closing, "more_body": False})
                watching.cancel_scope.cancel()
        finally:
            await self._ended()

    async def _relay(self, send: Send) -> None:
        with self._messages:
            while True:
                with anyio.move_on_after(self._keepalive) as idle:
                    try:
                        message = await self._messages.receive()
                    except anyio.EndOfStream:
                        return
                event = KEEPALIVE if idle.cancelled_caught else sse_event(message)
                await send({"type": "http.response.body", "body": event, "more_body": True})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def priming_event(event_id: str) -> bytes:
    """An event with an id and no data: tells the client it may resume from here."""
    return f"id: {event_id}\nretry: {RETRY_MS}\ndata: \n\n".encode()


async def json_or_events(
    messages: MemoryObjectReceiveStream[bytes],
    answer: Awaitable[Reply],
    background: Background,
    record: StreamRecord | None = None,
) -> Response:
    """JSON when `answer` comes before any message; an SSE stream of the messages and then
    the answer once a message comes first, so a quiet call costs no stream. `messages` ends
    (its sender closes) before `answer` does.

    Without a `record`, a client that leaves cancels the answer. With one, the stream is
    resumable: it opens with a priming event, every event is logged under its id, and the
    answer runs to its end even if the client goes away.
    """
    replies: list[Reply] = []
    answered = anyio.Event()
    scope = anyio.CancelScope()

    async def run() -> None:
        with scope:
            try:
                replies.append(await answer)
            finally:
                answered.set()

    background.start(run)
    try:
        first = await messages.receive()
    except anyio.EndOfStream:
        messages.close()
        await answered.wait()
        return _reply(replies)
    except BaseException:
        scope.cancel()
        raise

    async def rest() -> AsyncIterator[tuple[bytes, bool]]:
        """The messages after the first, then the answer's body, marked final (if it was
        not cancelled)."""
        with messages:
            async for data in messages:
                yield data, False
        await answered.wait()
        if replies:
            yield replies[0].body, True

    if record is None:

        async def events() -> AsyncIterator[bytes]:
            try:
                yield sse_event(first)
                async for data, _ in rest():
                    yield sse_event(data)
            finally:
                scope.cancel()

        return StreamingResponse(events(), media_type=SSE, headers=SSE_HEADERS)

    live_send, live = anyio.create_memory_object_stream[bytes](LIVE_BUFFER)

    async def pump() -> None:
        """Log every event, and pass it to the client while it is there and keeping up."""
        with live_send:
            event_id = await record.append(first)
            streaming = await _offer(live_send, sse_event(first, event_id))
            async for data, final in rest():
                event_id = await record.append(data, final)
                streaming = streaming and await _offer(live_send, sse_event(data, event_id))

    background.start(pump)

    async def resumable() -> AsyncIterator[bytes]:
        with live:
            yield priming_event(record.event_id(0))
            async for event in live:
                yield event

    return StreamingResponse(resumable(), media_type=SSE, headers=SSE_HEADERS)


def _reply(replies: list[Reply]) -> Response:
    if not replies:
        # The answer was cancelled before it came (the edge is stopping).
        return Response(status_code=503)
    body, status, headers = replies[0]
    return Response(body, status_code=status, media_type=JSON, headers=headers)


async def _offer(live: MemoryObjectSendStream[bytes], event: bytes) -> bool:
    """Pass an event to the client's stream; False once the client left or fell behind by
    more than LIVE_WAIT_SECONDS (its stream then ends, and it resumes from the log)."""
    with anyio.move_on_after(LIVE_WAIT_SECONDS):
        try:
            await live.send(event)
            return True
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
    live.close()
    return False
