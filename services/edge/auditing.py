"""Publishing audit events to JetStream off the response path, spooling while NATS is away."""

from __future__ import annotations

import collections
import logging

import anyio
import anyio.abc
from nats.aio.client import Client as NATS

from services import bus
from services.contracts import events_pb2

log = logging.getLogger(__name__)

SPOOL_LIMIT = 100_000
PUBLISH_TIMEOUT_SECONDS = 5.0


class AuditPublisher:
    """Events queue in memory and go out in order; a failed publish is retried, never dropped
    unless the spool overflows (then the oldest go, counted in `dropped`)."""

    def __init__(self, nc: NATS) -> None:
        self._js = nc.jetstream()
        self._spool: collections.deque[events_pb2.ToolCallEvent] = collections.deque()
        self._pending = anyio.Event()
        self._drained = anyio.Event()
        self.published = 0
        self.dropped = 0

    def submit(self, event: events_pb2.ToolCallEvent) -> None:
        if len(self._spool) >= SPOOL_LIMIT:
            self._spool.popleft()
            self.dropped += 1
        self._spool.append(event)
        self._pending.set()

    @property
    def backlog(self) -> int:
        return len(self._spool)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        delay = 0.1
        while True:
            await self._pending.wait()
            self._pending = anyio.Event()
            while self._spool:
                event = self._spool[0]
                try:
                    await self._js.publish(
                        bus.TOOL_CALL_SUBJECT,
                        event.SerializeToString(),
                        timeout=PUBLISH_TIMEOUT_SECONDS,
                        headers={"Nats-Msg-Id": event.event_id},
                    )
                except Exception as exc:  # nats-py raises timeouts and connection errors alike
                    log.warning("audit publish failed (%d spooled): %s", len(self._spool), exc)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                self._spool.popleft()
                self.published += 1
                delay = 0.1
            self._drained.set()
            self._drained = anyio.Event()

    async def flush(self, timeout: float) -> None:
        """Wait until the spool is empty (used on shutdown)."""
        with anyio.move_on_after(timeout):
            if self._spool:
                await self._drained.wait()
