"""Server-Sent Events framing, and answering one request as JSON or as an event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import NamedTuple

from starlette.responses import Response, StreamingResponse

JSON = "application/json"
SSE = "text/event-stream"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class Reply(NamedTuple):
    """One JSON-RPC response and the HTTP status it goes out with when sent as JSON."""

    body: bytes
    status: int = 200


def sse_event(data: bytes) -> bytes:
    return b"event: message\ndata: " + data + b"\n\n"


async def json_or_events(notes: asyncio.Queue[bytes], answer: Awaitable[Reply]) -> Response:
    """JSON when `answer` comes before any note; an SSE stream of the notes and then the
    answer once a note comes first, so a quiet call costs no stream."""
    answering = asyncio.ensure_future(answer)
    first = asyncio.ensure_future(notes.get())
    await asyncio.wait({answering, first}, return_when=asyncio.FIRST_COMPLETED)
    if not first.done():
        first.cancel()
        body, status = answering.result()
        return Response(body, status_code=status, media_type=JSON)

    async def events() -> AsyncIterator[bytes]:
        try:
            yield sse_event(first.result())
            while not answering.done():
                note = asyncio.ensure_future(notes.get())
                await asyncio.wait({answering, note}, return_when=asyncio.FIRST_COMPLETED)
                if note.done():
                    yield sse_event(note.result())
                else:
                    note.cancel()
            while not notes.empty():
                yield sse_event(notes.get_nowait())
            yield sse_event(answering.result().body)
        finally:
            answering.cancel()

    return StreamingResponse(events(), media_type=SSE, headers=SSE_HEADERS)
