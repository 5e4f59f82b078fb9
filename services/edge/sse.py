"""Server-Sent Events framing, and answering one request as JSON or as an event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.responses import Response, StreamingResponse

from services.edge.eventlog import StreamRecord

JSON = "application/json"
SSE = "text/event-stream"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class Reply(NamedTuple):
    """One JSON-RPC response and the HTTP status it goes out with when sent as JSON."""

    body: bytes
    status: int = 200


# How long a client whose answer stream broke waits before it resumes (SSE `retry`, ms).
RETRY_MS = 1000
# Answers still running after their client left, kept referenced until they finish.
_unattended: set[asyncio.Task[None]] = set()


def sse_event(data: bytes, event_id: str | None = None) -> bytes:
    if event_id is None:
        return b"event: message\ndata: " + data + b"\n\n"
    return b"id: " + event_id.encode() + b"\nevent: message\ndata: " + data + b"\n\n"


KEEPALIVE = b": keepalive\n\n"


async def keepalive_events(
    receive: MemoryObjectReceiveStream[bytes], keepalive_seconds: float
) -> AsyncIterator[bytes]:
    """Each message of `receive` as an SSE event, with a comment whenever none came for
    `keepalive_seconds` (so proxies keep the stream open); ends when the sender closes."""
    while True:
        with anyio.move_on_after(keepalive_seconds) as idle:
            try:
                message = await receive.receive()
            except anyio.EndOfStream:
                return
        yield KEEPALIVE if idle.cancelled_caught else sse_event(message)


def priming_event(event_id: str) -> bytes:
    """An event with an id and no data: tells the client it may resume from here."""
    return f"id: {event_id}\nretry: {RETRY_MS}\ndata: \n\n".encode()


async def json_or_events(
    notes: asyncio.Queue[bytes], answer: Awaitable[Reply], record: StreamRecord | None = None
) -> Response:
    """JSON when `answer` comes before any note; an SSE stream of the notes and then the
    answer once a note comes first, so a quiet call costs no stream.

    With a `record`, the stream is resumable: it opens with a priming event, every event
    is logged under its id, and the call runs to its end even if the client goes away.
    """
    answering = asyncio.ensure_future(answer)
    first = asyncio.ensure_future(notes.get())
    await asyncio.wait({answering, first}, return_when=asyncio.FIRST_COMPLETED)
    if not first.done():
        first.cancel()
        body, status = answering.result()
        return Response(body, status_code=status, media_type=JSON)
    messages = _messages(first.result(), notes, answering)
    if record is None:

        async def events() -> AsyncIterator[bytes]:
            try:
                async for data, _ in messages:
                    yield sse_event(data)
            finally:
                answering.cancel()

        return StreamingResponse(events(), media_type=SSE, headers=SSE_HEADERS)

    relay: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for data, final in messages:
                relay.put_nowait(sse_event(data, await record.append(data, final)))
        finally:
            relay.put_nowait(None)

    task = asyncio.ensure_future(pump())
    _unattended.add(task)
    task.add_done_callback(_unattended.discard)

    async def resumable() -> AsyncIterator[bytes]:
        yield priming_event(record.event_id(0))
        while (event := await relay.get()) is not None:
            yield event

    return StreamingResponse(resumable(), media_type=SSE, headers=SSE_HEADERS)


async def _messages(
    first: bytes, notes: asyncio.Queue[bytes], answering: asyncio.Future[Reply]
) -> AsyncIterator[tuple[bytes, bool]]:
    """The call's notes in the order they came, then its answer (marked final)."""
    yield first, False
    while not answering.done():
        note: asyncio.Future[Any] = asyncio.ensure_future(notes.get())
        await asyncio.wait({answering, note}, return_when=asyncio.FIRST_COMPLETED)
        if note.done():
            yield note.result(), False
        else:
            note.cancel()
    while not notes.empty():
        yield notes.get_nowait(), False
    yield answering.result().body, True
