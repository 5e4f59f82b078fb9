"""The durable JetStream consumer: fetch a batch, export it, ack only what was exported."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from services import bus
from services.audit.exporters import SpanBuilder
from services.audit.store import AuditStore
from services.contracts import events_pb2
from services.metrics import ServiceMetrics, gauge, total
from services.settings import AUDIT_GATHER_SECONDS

log = logging.getLogger(__name__)

SCOPE = "mcpgw.audit"
FETCH_WAIT_SECONDS = 1.0
# How many exported event ids are remembered against redelivery (a redelivered batch is at
# most what was fetched but not acked when the consumer died: a few batches).
RECENT_EVENTS = 100_000
RETRY_DELAY_SECONDS = 2.0


class RecentEvents:
    """The ids of the last `limit` events exported, so a batch redelivered after its export
    (the ack lost to a crash) is not exported twice."""

    def __init__(self, ids: Iterable[str] = (), limit: int = RECENT_EVENTS) -> None:
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._limit = limit
        self.add(ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, ids: Iterable[str]) -> None:
        for event_id in ids:
            self._ids[event_id] = None
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)


class AuditConsumer:
    def __init__(
        self,
        nc: NATS,
        exporter: SpanExporter,
        durable: str,
        batch: int,
        exported: Iterable[str] = (),
        metrics: ServiceMetrics | None = None,
        store: AuditStore | None = None,
        traces: SpanProcessor | None = None,
        gather_seconds: float = AUDIT_GATHER_SECONDS,
    ) -> None:
        self._js = nc.jetstream()
        # Seeded with what the exporter already holds (the file's last records), so a restart
        # after a crash between export and ack does not export the redelivered batch again.
        self._recent = RecentEvents(exported)
        self._exporter = exporter
        # The queryable audit: records go there first, then to the exporter.
        self._store = store
        # Sampled spans to OTLP beside a file or console trail (best effort, as traces are).
        self._traces = traces
        self._durable = durable
        self._batch = batch
        self._gather = gather_seconds
        self._spans = SpanBuilder()
        # One thread: exporters block on I/O and need not be thread-safe; owned here so
        # close() can end it (a pooled idle worker would hold the process up on exit).
        self._export_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-export")
        self.exported = 0
        # Records stored but not yet fetched, as of the last fetch (a metric).
        self.pending = 0
        self._lag = None
        if metrics is not None:
            meter = metrics.meter(SCOPE)
            self._lag = metrics.durations(
                SCOPE, "mcpgw.audit.export.lag", "from an operation's end to its record's export"
            )
            total(meter, "mcpgw.audit.exported", "audit records exported", lambda: [(self.exported, {})])
            pending = "audit records stored, not yet exported"
            gauge(meter, "mcpgw.audit.pending", pending, lambda: [(self.pending, {})])

    def close(self) -> None:
        self._export_thread.shutdown(wait=True)
        if self._traces is not None:
            self._traces.shutdown()

    async def run(self) -> None:
        subscription = await self._js.pull_subscribe(
            bus.TOOL_CALL_SUBJECT, durable=self._durable, stream=bus.AUDIT_STREAM
        )
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                messages = await subscription.fetch(self._batch, timeout=FETCH_WAIT_SECONDS)
            except TimeoutError:
                self.pending = 0
                continue  # nothing to audit for a second (nats-py raises the builtin type)
            except nats.errors.Error as exc:
                log.warning("audit fetch failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                continue
            await self.handle(messages)
            self.pending = messages[-1].metadata.num_pending if messages else 0
            if len(messages) < self._batch:
                # Caught up: let the next batch gather rather than fetch each message as it
                # lands (a fetch per tool call cost audit and NATS more than the call itself).
                # The wait counts from this fetch, so the time the batch took to store and
                # export is not added to every record's lag.
                await asyncio.sleep(max(0.0, began + self._gather - loop.time()))

    async def handle(self, messages: list[Msg]) -> None:
        events: list[events_pb2.OperationEvent] = []
        decoded: list[Msg] = []
        for message in messages:
            try:
                events.extend(events_pb2.OperationEvents.FromString(message.data).events)
                decoded.append(message)
            except DecodeError:
                log.error("audit message %s is not OperationEvents; terminated", message.metadata.sequence)
                await message.term()
        # Once each: a batch republished after NATS lost its ack (and with it the dedup
        # window) may arrive beside its first copy, in this very fetch.
        fresh: dict[str, events_pb2.OperationEvent] = {}
        for event in events:
            if event.event_id not in self._recent:
                fresh.setdefault(event.event_id, event)
        events = list(fresh.values())
        if not events:
            for message in decoded:
                await message.ack()
            return
        if self._store is not None:
            try:
                await self._store.append(events)
            except Exception as exc:  # the database's errors are many and driver-specific
                log.warning("storing %d audit records failed, they will be redelivered: %s", len(events), exc)
                for message in decoded:
                    await message.nak(delay=RETRY_DELAY_SECONDS)
                return
        spans = self._spans.build(events)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._export_thread, self._exporter.export, spans)
        if result is not SpanExportResult.SUCCESS:
            log.warning("export of %d audit records failed; they will be redelivered", len(spans))
            for message in decoded:
                await message.nak(delay=RETRY_DELAY_SECONDS)
            return
        self._recent.add(e.event_id for e in events)
        if self._traces is not None:
            for span in spans:
                self._traces.on_end(span)
        for message in decoded:
            await message.ack()
        self.exported += len(events)
        if self._lag is not None:
            now = time.time_ns()
            for event in events:
                self._lag.record(max(0, now - event.end_unix_nano) / 1e9, (), dict)
