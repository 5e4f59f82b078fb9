"""Stand-ins for the edge's audit publisher, shared by the unit tests of what records."""

from __future__ import annotations

import anyio

from services.contracts import events_pb2


class Audit:
    """The publisher's two calls: events are numbered; `stored` holds confirmations back."""

    def __init__(self) -> None:
        self.events: list[events_pb2.OperationEvent] = []
        self.stored = anyio.Event()
        self.stored.set()
        self.awaited: list[int] = []

    def submit(self, event: events_pb2.OperationEvent) -> int:
        self.events.append(event)
        return len(self.events)

    async def confirmed(self, number: int) -> bool:
        self.awaited.append(number)
        await self.stored.wait()
        return True
