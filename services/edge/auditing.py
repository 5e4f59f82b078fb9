"""Audit events to JetStream: group-committed, and confirmed before a call answers.

A call's answer waits until its event is stored in JetStream, so a result that reached a
client is in the audit whatever dies next (the edge included). Waiting costs one publish
round trip, shared: events submitted while a batch is in flight go out together in the
next one (group commit), so a busy edge publishes once per round trip, not once per call.
With `MCPGW_AUDIT_DELIVERY=batched` nobody waits and a batch gathers 50 ms of events: about
0.5 ms less CPU per call across edge, NATS and audit, for up to 50 ms of records a killed
edge takes with it.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

import anyio
import anyio.abc
from nats.aio.client import Client as NATS

from services import bus
from services.contracts import events_pb2
from services.settings import AuditDelivery

log = logging.getLogger(__name__)

SPOOL_LIMIT = 100_000
BATCH_LIMIT = 512
# The most bytes of events one message carries: well under NATS's default 1 MiB payload
# limit, so a batch of large records (payloads on, long names) is split, never refused.
BATCH_BYTES = 512 * 1024
# A single event past this loses its recorded payloads (nothing else of it is that large).
EVENT_BYTES = 64 * 1024
# A publish that hears nothing for this long is sent again (same message id: no duplicate).
PUBLISH_TIMEOUT_SECONDS = 2.0
# The longest pause between failed publishes: short, so the spool drains soon after
# JetStream is back (a new stream leader elected), not seconds later.
RETRY_MOST_SECONDS = 1.0
# How long a batched delivery's first event waits for company before it is published.
BATCH_LINGER_SECONDS = 0.05


class AuditPublisher:
    """Events queue in memory and go out in order, in batches. A failed publish is retried
    with the same batch and message id (JetStream drops the duplicate if the first got
    through); nothing is dropped unless the spool overflows (then the oldest go, counted
    in `dropped`). `confirmed()` waits for an event to be stored, at most `confirm_timeout`:
    while JetStream is away, answers are late by that much, never stopped, and the events
    stay spooled until it returns.
    """

    def __init__(
        self,
        nc: NATS,
        confirm_timeout: float = 2.0,
        delivery: AuditDelivery = AuditDelivery.CONFIRMED,
        observe: Callable[[events_pb2.OperationEvent], None] | None = None,
    ) -> None:
        self._js = nc.jetstream()
        # Told of every record as it is submitted (the edge's metrics).
        self._observe = observe
        self._confirm_timeout = confirm_timeout
        # Batched: nobody waits, so a batch gathers what comes in BATCH_LINGER_SECONDS.
        self._confirming = delivery is AuditDelivery.CONFIRMED
        self._spool: collections.deque[events_pb2.OperationEvent] = collections.deque()
        self._batch: events_pb2.OperationEvents | None = None
        self._pending = anyio.Event()
        self._drained = anyio.Event()
        # Events are numbered as submitted; every one up to `_stored` is in JetStream (or
        # was dropped), and `_left` have left the spool (into a batch, or dropped).
        self._submitted = 0
        self._left = 0
        self._stored = 0
        self._batch_last = 0
        self._progress = anyio.Event()
        # The publish in flight (or its pause before a retry), cut short by `reconnected()`.
        self._attempt: anyio.CancelScope | None = None
        self.published = 0
        self.dropped = 0
        self.unconfirmed = 0

    def submit(self, event: events_pb2.OperationEvent) -> int:
        """Queue an event; its number, for `confirmed()`."""
        if len(self._spool) >= SPOOL_LIMIT:
            self._spool.popleft()
            self._left += 1
            self.dropped += 1
        self._spool.append(event)
        self._submitted += 1
        self._pending.set()
        if self._observe is not None:
            try:
                self._observe(event)
            except Exception:
                # Metrics must never cost a record, nor the call its answer.
                log.exception("counting an audit record failed")
        return self._submitted

    async def confirmed(self, number: int) -> bool:
        """Whether event `number` was stored within the confirm timeout (batched delivery: at
        once, whether it was or not)."""
        if not self._confirming:
            return self._stored >= number
        with anyio.move_on_after(self._confirm_timeout):
            while self._stored < number:
                await self._progress.wait()
            return True
        self.unconfirmed += 1
        if self.unconfirmed == 1 or self.unconfirmed % 1000 == 0:
            log.warning(
                "audit: %d answers went out before JetStream confirmed their records (%d spooled)",
                self.unconfirmed,
                self.backlog,
            )
        return False

    def reconnected(self) -> None:
        """NATS is back on a new connection: a publish still waiting for its answer on the
        old one (which never comes) is sent again now, not after its timeout."""
        if self._attempt is not None:
            self._attempt.cancel()

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
                    if not self._confirming and len(self._spool) < BATCH_LIMIT:
                        await anyio.sleep(BATCH_LINGER_SECONDS)
                    self._batch = self._take()
                published = False
                with anyio.CancelScope() as self._attempt:
                    try:
                        await self._publish(self._batch)
                        published = True
                    except Exception as exc:  # nats-py raises timeouts and connection errors alike
                        log.warning("audit publish failed (%d spooled): %s", self.backlog, exc)
                        await anyio.sleep(delay)
                        delay = min(delay * 2, RETRY_MOST_SECONDS)
                if not published:
                    continue
                self.published += len(self._batch.events)
                self._batch = None
                self._stored = self._batch_last
                self._progress.set()
                self._progress = anyio.Event()
                delay = 0.1
            self._drained.set()
            self._drained = anyio.Event()

    def _take(self) -> events_pb2.OperationEvents:
        """The next batch: up to BATCH_LIMIT events and BATCH_BYTES, at least one."""
        taken: list[events_pb2.OperationEvent] = []
        size = 0
        while self._spool and len(taken) < BATCH_LIMIT:
            event = self._spool[0]
            if event.ByteSize() > EVENT_BYTES:
                event.ClearField("arguments_json")
                event.ClearField("result_json")
            size += event.ByteSize() + 8
            if taken and size > BATCH_BYTES:
                break
            taken.append(self._spool.popleft())
        self._left += len(taken)
        self._batch_last = self._left
        return events_pb2.OperationEvents(events=taken)

    async def _publish(self, batch: events_pb2.OperationEvents) -> None:
        # Event ids are unique, so the first id and the count name the batch.
        batch_id = f"{batch.events[0].event_id}+{len(batch.events)}"
        ack = await self._js.publish(
            bus.TOOL_CALL_SUBJECT,
            batch.SerializeToString(),
            timeout=PUBLISH_TIMEOUT_SECONDS,
            headers={"Nats-Msg-Id": batch_id},
        )
        if ack is not None and ack.duplicate:
            log.info("audit batch %s was already stored (seq %s)", batch_id, ack.seq)

    async def flush(self, timeout: float) -> None:
        """Wait until the spool is empty (used on shutdown)."""
        with anyio.move_on_after(timeout):
            if self.backlog:
                await self._drained.wait()
