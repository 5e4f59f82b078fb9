"""Bulkheads: at most N calls in flight to a server (and per key), a bounded queue behind
them, and a wait that ends in a named refusal, so one noisy key or a slow backend cannot
take every slot. Held by the connector, which every call to a downstream passes through."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.connector.errors import DownstreamError


class BulkheadFullError(DownstreamError):
    """A call refused by a bulkhead: its queue was full, or its wait timed out."""

    def __init__(self, server: str, message: str, retry_after: float) -> None:
        super().__init__(server, message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Capacity:
    """How many calls run at once, how many may wait, and for how long."""

    limit: int
    queue: int = 0
    timeout: float = 30.0


class Bulkhead:
    def __init__(self, capacity: Capacity, whose: str = "the bulkhead") -> None:
        self.capacity = capacity
        # Who it holds slots for, as a refusal names them ("server 'search'").
        self.whose = whose
        self._slots = asyncio.Semaphore(capacity.limit)
        self._waiting = 0

    @property
    def in_flight(self) -> int:
        return self.capacity.limit - self._slots._value

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self, server: str) -> None:
        """Take a slot (give it back with `release`); BulkheadFullError when none frees in time."""
        capacity, whose = self.capacity, self.whose
        if not self._slots.locked():
            # A free slot is taken at once: no wait, so no timer.
            await self._slots.acquire()
            return
        if self._waiting >= capacity.queue:
            raise BulkheadFullError(
                server,
                f"mcpgw: {whose} has {capacity.limit} calls in flight and {self._waiting} waiting, "
                f"its most; retry shortly",
                1.0,
            )
        self._waiting += 1
        try:
            async with asyncio.timeout(capacity.timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise BulkheadFullError(
                server,
                f"mcpgw: {whose} had no free slot of its {capacity.limit} within {capacity.timeout:g}s; "
                f"retry shortly",
                capacity.timeout,
            ) from None
        finally:
            self._waiting -= 1

    def release(self) -> None:
        self._slots.release()


class Bulkheads:
    """The bulkheads of servers and keys, by name; a changed capacity gets a new one (the
    calls holding the old one finish on it)."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], Bulkhead] = {}

    def of(self, kind: str, name: str, capacity: Capacity | None) -> Bulkhead | None:
        """The bulkhead of a `kind` ("server", "key") named `name`, None with no capacity."""
        held = self._held.get((kind, name))
        if held is not None and held.capacity is capacity:
            return held  # the same snapshot's capacity: nothing to compare
        if capacity is None or capacity.limit <= 0:
            self._held.pop((kind, name), None)
            return None
        if held is None or held.capacity != capacity:
            held = self._held[(kind, name)] = Bulkhead(capacity, f"{kind} {name!r}")
        else:
            held.capacity = capacity
        return held
