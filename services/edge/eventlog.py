"""The events of SSE answers, kept on JetStream a while so that a client whose stream broke
can resume it with `Last-Event-ID` on any edge (2025-11-25 resumability).

An event id is `<stream id>.<n>`, and the events of a stream go to
`mcpgw.events.<session>.<stream id>`: a session resumes only its own streams, and a
resumption replays only the stream it names.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from services.bus import EVENTS_STREAM
from services.edge.errors import EventStreamNotFoundError

EVENT_ID = re.compile(r"^([0-9a-f]{16})\.([0-9]{1,9})$")
FINAL = "final"


@dataclass(slots=True)
class StreamRecord:
    """Where one SSE answer's events are logged as they are sent."""

    stream_id: str
    subject: str
    nc: NATS
    sent: int = 0

    def event_id(self, n: int) -> str:
        return f"{self.stream_id}.{n}"

    async def append(self, data: bytes, final: bool = False) -> str:
        """Log the next event; returns its id. Published without waiting for an ack: the
        stream is a convenience for reconnecting clients, not a ledger."""
        self.sent += 1
        headers = {"n": str(self.sent)}
        if final:
            headers[FINAL] = "1"
        await self.nc.publish(self.subject, data, headers=headers)
        return self.event_id(self.sent)


class EventLog:
    def __init__(self, nc: NATS, idle_seconds: float) -> None:
        self._nc = nc
        self._idle = idle_seconds

    def open(self, session_id: str) -> StreamRecord:
        stream_id = secrets.token_hex(8)
        return StreamRecord(stream_id, f"mcpgw.events.{session_id}.{stream_id}", self._nc)

    async def replay(self, session_id: str, last_event_id: str) -> AsyncIterator[tuple[str, bytes] | None]:
        """The events after `last_event_id` of the stream it names, as they are logged, up
        to the stream's final one; None when none came for the idle interval (a keepalive).
        EventStreamNotFoundError when the session logged no such stream or it expired."""
        match = EVENT_ID.match(last_event_id)
        if match is None:
            raise EventStreamNotFoundError(f"Not Found: {last_event_id!r} is no event id of this gateway")
        stream_id, after = match.group(1), int(match.group(2))
        subject = f"mcpgw.events.{session_id}.{stream_id}"
        js = self._nc.jetstream()
        try:
            await js.get_last_msg(EVENTS_STREAM, subject)
        except NotFoundError:
            raise EventStreamNotFoundError(
                "Not Found: no such event stream in this session, or it expired"
            ) from None
        return self._follow(subject, stream_id, after)

    async def _follow(
        self, subject: str, stream_id: str, after: int
    ) -> AsyncIterator[tuple[str, bytes] | None]:
        subscription = await self._nc.jetstream().subscribe(
            subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            while True:
                try:
                    msg = await subscription.next_msg(timeout=self._idle)
                except NatsTimeoutError:
                    yield None
                    continue
                headers = msg.headers or {}
                n = int(headers.get("n", "0"))
                if n > after:
                    yield f"{stream_id}.{n}", msg.data
                if FINAL in headers:
                    return
        finally:
            await subscription.unsubscribe()
