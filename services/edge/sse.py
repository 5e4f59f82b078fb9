"""Server-Sent Events framing, and answering one request as JSON or as an event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.responses import Response, StreamingResponse

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
