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
BATCH_LIMIT = 512
PUBLISH_TIMEOUT_SECONDS = 5.0


class AuditPublisher:
    """Events queue in memory and go out in order, batched: after the first event of a
    batch, `linger` seconds collect more, so a busy edge publishes (and audit acks)
    once per batch rather than once per call. A failed publish is retried with the
    same batch and message id (JetStream drops the duplicate if the first got through);
    nothing is dropped unless the spool overflows (then the oldest go, counted in `dropped`).
    """

    def __init__(self, nc: NATS, linger: float = 0.05) -> None:
        self._js = nc.jetstream()
        self._linger = linger
        self._spool: collections.deque[events_pb2.ToolCallEvent] = collections.deque()
        self._batch: events_pb2.ToolCallEvents | None = None
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
        return len(self._spool) + (len(self._batch.events) if self._batch is not None else 0)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        delay = 0.1
        while True:
            await self._pending.wait()
            self._pending = anyio.Event()
            while self._spool or self._batch is not None:
                if self._batch is None:
                    if len(self._spool) < BATCH_LIMIT:
                        await anyio.sleep(self._linger)
                    self._batch = self._take()
                try:
                    await self._publish(self._batch)
                except Exception as exc:  # nats-py raises timeouts and connection errors alike
                    log.warning("audit publish failed (%d spooled): %s", self.backlog, exc)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                self.published += len(self._batch.events)
                self._batch = None
                delay = 0.1
            self._drained.set()
            self._drained = anyio.Event()

    def _take(self) -> events_pb2.ToolCallEvents:
        count = min(len(self._spool), BATCH_LIMIT)
        return events_pb2.ToolCallEvents(events=[self._spool.popleft() for _ in range(count)])

    async def _publish(self, batch: events_pb2.ToolCallEvents) -> None:
        # Event ids are unique, so the first id and the count name the batch.
        batch_id = f"{batch.events[0].event_id}+{len(batch.events)}"
        await self._js.publish(
            bus.TOOL_CALL_SUBJECT,
            batch.SerializeToString(),
            timeout=PUBLISH_TIMEOUT_SECONDS,
            headers={"Nats-Msg-Id": batch_id},
        )

    async def flush(self, timeout: float) -> None:
        """Wait until the spool is empty (used on shutdown)."""
        with anyio.move_on_after(timeout):
            if self.backlog:
                await self._drained.wait()
