"""The ASGI response of every long-lived notification stream (a session's GET stream, the
2024-11-05 SSE stream, `subscriptions/listen`): an idle one holds only its own task.

That task waits for the client to leave. What the stream's outbox gets is written by a task
that lives only while there is something to write, and a keepalive comment by a timer: a
task waiting for messages and another for the client cost 11 KiB a stream (bench-scale).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.edge.sse import KEEPALIVE, SSE, SSE_HEADERS, sse_event
from services.edge.streams import Outbox

log = logging.getLogger(__name__)


_HEADERS = [
    *((name.encode(), value.encode()) for name, value in SSE_HEADERS.items()),
    (b"content-type", f"{SSE}; charset=utf-8".encode()),
]


class ListenStream(Response):
    """`outbox`'s messages as SSE events after `opening`, until the client leaves or the edge
    closes the outbox (then what is queued goes, then `closing()`); `ended()` runs however
    it ends, and the outbox is closed with it."""

    media_type = SSE

    def __init__(
        self,
        outbox: Outbox,
        opening: bytes,
        keepalive_seconds: float,
        ended: Callable[[], Awaitable[None]],
        closing: Callable[[], bytes] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        # The same for every stream: built once, not per held stream.
        self.raw_headers = _HEADERS
        self._outbox = outbox
        self._opening = opening
        self._keepalive = keepalive_seconds
        self._ended = ended
        self._closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self._opening, "more_body": True})
            writer = _Writer(self._outbox, send, self._keepalive, self._closing)
            try:
                # The client leaving ends it, and so does the last body the writer sends
                # (ASGI: receive() says http.disconnect once the response is complete).
                while (await receive())["type"] != "http.disconnect":
                    pass
            finally:
                await writer.stop()
        finally:
            self._outbox.close()
            await self._ended()


class _Writer:
    """Writes the outbox's messages as they come, in a task that ends when the outbox is
    empty, and a keepalive comment after `keepalive` seconds without a write."""

    __slots__ = ("_closing", "_done", "_keepalive", "_loop", "_outbox", "_quiet", "_send", "_task", "_timer")

    def __init__(
        self, outbox: Outbox, send: Send, keepalive: float, closing: Callable[[], bytes] | None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._outbox = outbox
        self._send = send
        self._keepalive = keepalive
        self._closing = closing
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._quiet = False
        self._done = False
        self._arm()
        outbox.on_ready(self._wake)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._keepalive, self._went_quiet)

    def _went_quiet(self) -> None:
        self._quiet = True
        self._wake()

    def _wake(self) -> None:
        if self._task is None and not self._done:
            self._task = self._loop.create_task(self._write())

    async def _write(self) -> None:
        try:
            while not self._done:
                message = self._outbox.take()
                if message is not None:
                    body = sse_event(message)
                elif self._quiet:
                    body = KEEPALIVE
                elif self._outbox.closed:
                    # Closed by the edge: a graceful end, with what `closing` says last.
                    self._done = True
                    closing = self._closing() if self._closing is not None else b""
                    await self._send({"type": "http.response.body", "body": closing, "more_body": False})
                    return
                else:
                    return
                await self._send({"type": "http.response.body", "body": body, "more_body": True})
                self._quiet = False
                self._arm()
        except Exception as exc:
            # The connection is going: the client's leaving ends the stream.
            log.debug("a stream's write failed: %s", exc)
            self._done = True
        finally:
            self._task = None

    async def stop(self) -> None:
        self._done = True
        self._outbox.on_ready(None)
        if self._timer is not None:
            self._timer.cancel()
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait((task,))
