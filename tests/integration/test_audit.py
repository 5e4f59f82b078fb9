"""Audit events over a real JetStream: published by the edge's publisher, exported, acked once."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult

from services import bus
from services.audit.consumer import AuditConsumer
from services.audit.exporters import build_exporter, exported_event_ids
from services.contracts import events_pb2
from services.edge.auditing import AuditPublisher
from services.settings import AuditDelivery, AuditSettings
from services.up.main import free_port
from tests.processes import nats_server

pytestmark = pytest.mark.anyio


def event(n: int) -> events_pb2.OperationEvent:
    now = time.time_ns()
    return events_pb2.OperationEvent(
        event_id=f"event-{n}",
        start_unix_nano=now,
        end_unix_nano=now + 1000,
        server="s",
        tool="t",
        exposed_name="s_t",
        outcome=events_pb2.OUTCOME_OK,
        trace_id="ab" * 16,
        span_id="cd" * 8,
        request_id=str(n),
    )


class FlakyExporter(SpanExporter):
    """Fails its first export, then writes JSON lines like the file exporter."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self._inner = ConsoleSpanExporter(out=self.out, formatter=lambda s: s.to_json(indent=None) + "\n")
        self.failures_left = 1

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.failures_left:
            self.failures_left -= 1
            return SpanExportResult.FAILURE
        return self._inner.export(spans)

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


async def test_every_event_is_exported_once_even_after_a_failed_export(nats_url: str) -> None:
    nc = await bus.connect(nats_url, "test")
    await bus.ensure_audit_stream(nc)
    publisher = AuditPublisher(nc)
    exporter = FlakyExporter()
    consumer = AuditConsumer(nc, exporter, durable="test-audit", batch=10)
    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        tg.start_soon(consumer.run)
        for n in range(25):
            publisher.submit(event(n))
        # A batch published twice (a retry after a lost ack) is deduplicated by JetStream.
        retried = events_pb2.OperationEvents(events=[event(100)])
        for _ in range(2):
            await nc.jetstream().publish(
                bus.TOOL_CALL_SUBJECT, retried.SerializeToString(), headers={"Nats-Msg-Id": "retried-batch"}
            )
        with anyio.fail_after(20):
            while len(exporter.records()) < 26:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    consumer.close()
    records = exporter.records()
    ids = sorted(r["attributes"]["mcpgw.event_id"] for r in records)  # type: ignore[index]
    assert ids == sorted(["event-100", *(f"event-{n}" for n in range(25))])
    first = records[0]
    assert first["name"] == "tools/call s_t"
    assert first["context"]["trace_id"] == "0x" + "ab" * 16  # type: ignore[index]
    # The edge's own span id; the edge started the trace, so no parent.
    assert first["context"]["span_id"] == "0x" + "cd" * 8  # type: ignore[index]
    assert first["parent_id"] is None
    assert exporter.failures_left == 0
    # Acked means gone: nothing is pending for the durable consumer.
    info = await nc.jetstream().consumer_info(bus.AUDIT_STREAM, "test-audit")
    assert info.num_pending == 0 and info.num_ack_pending == 0
    await nc.close()


async def test_events_submitted_while_nats_is_down_are_published_when_it_returns(tmp_path: Path) -> None:
    port = free_port()
    with nats_server(tmp_path, port) as url:
        nc = await bus.connect(url, "test")
        await bus.ensure_audit_stream(nc)
    publisher = AuditPublisher(nc)
    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        with anyio.fail_after(10):
            while nc.is_connected:
                await anyio.sleep(0.05)
        for n in range(5):
            publisher.submit(event(n))
        assert publisher.backlog == 5
        with nats_server(tmp_path, port):
            with anyio.fail_after(20):
                while publisher.published < 5:
                    await anyio.sleep(0.05)
            stored = await nc.jetstream().pull_subscribe(bus.TOOL_CALL_SUBJECT, stream=bus.AUDIT_STREAM)
            messages = await stored.fetch(10, timeout=5)
            events = [e for m in messages for e in events_pb2.OperationEvents.FromString(m.data).events]
            assert [e.event_id for e in events] == [f"event-{n}" for n in range(5)]
            tg.cancel_scope.cancel()
    await nc.close()


async def test_a_confirmed_event_is_stored_and_concurrent_ones_share_a_publish(nats_url: str) -> None:
    nc = await bus.connect(nats_url, "test")
    await bus.ensure_audit_stream(nc)
    js = nc.jetstream()
    before = (await js.stream_info(bus.AUDIT_STREAM)).state.messages
    publisher = AuditPublisher(nc, confirm_timeout=10)
    confirmed: list[bool] = []

    async def call(n: int) -> None:
        confirmed.append(await publisher.confirmed(publisher.submit(event(1000 + n))))

    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        async with anyio.create_task_group() as calls:
            for n in range(200):
                calls.start_soon(call, n)
        # Every confirmation means stored: the stream holds all 200 already.
        assert confirmed == [True] * 200 and publisher.published == 200
        stored = (await js.stream_info(bus.AUDIT_STREAM)).state.messages - before
        # Group commit: far fewer publishes than events.
        assert 1 <= stored <= 20, stored
        tg.cancel_scope.cancel()
    await nc.close()


async def test_while_nats_is_away_answers_wait_only_the_confirm_timeout(tmp_path: Path) -> None:
    port = free_port()
    with nats_server(tmp_path, port) as url:
        nc = await bus.connect(url, "test")
        await bus.ensure_audit_stream(nc)
    publisher = AuditPublisher(nc, confirm_timeout=0.5)
    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        with anyio.fail_after(10):
            while nc.is_connected:
                await anyio.sleep(0.05)
        started = time.monotonic()
        assert await publisher.confirmed(publisher.submit(event(1))) is False
        assert 0.4 <= time.monotonic() - started < 2.0
        assert publisher.unconfirmed == 1 and publisher.backlog == 1
        with nats_server(tmp_path, port):
            with anyio.fail_after(20):
                while publisher.published < 1:
                    await anyio.sleep(0.05)
            assert await publisher.confirmed(publisher.submit(event(2))) is True
            tg.cancel_scope.cancel()
    await nc.close()


async def test_a_batch_redelivered_after_its_export_is_not_exported_again(
    nats_url: str, tmp_path: Path
) -> None:
    # The audit service died after exporting a batch and before its ack: it comes again
    # (here as a second copy the next consumer reads, with the first one's file behind it).
    nc = await bus.connect(nats_url, "test")
    await bus.ensure_audit_stream(nc)
    settings = AuditSettings(audit_exporter="file", audit_file=tmp_path / "spans.jsonl")
    batch = events_pb2.OperationEvents(events=[event(n) for n in range(2000, 2010)])
    for attempt in range(2):
        # Each time twice over, as a republished batch NATS no longer deduplicates arrives.
        for copy in range(2):
            await nc.jetstream().publish(
                bus.TOOL_CALL_SUBJECT,
                batch.SerializeToString(),
                headers={"Nats-Msg-Id": f"delivery-{attempt}-{copy}"},
            )
        exporter = build_exporter(settings)
        durable = f"redelivered-{attempt}"
        consumer = AuditConsumer(nc, exporter, durable, 50, exported_event_ids(settings))
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run)
            with anyio.fail_after(20):
                while not await _drained(nc, durable):
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        consumer.close()
        exporter.shutdown()
    exported = Counter(
        json.loads(line)["attributes"]["mcpgw.event_id"]
        for line in settings.audit_file.read_text().splitlines()
    )
    assert all(exported[e.event_id] == 1 for e in batch.events), exported
    await nc.close()


async def _drained(nc: NATS, durable: str) -> bool:
    try:
        info = await nc.jetstream().consumer_info(bus.AUDIT_STREAM, durable)
    except nats.js.errors.NotFoundError:
        return False  # not subscribed yet
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


def test_exported_ids_are_read_from_the_files_tail_even_a_cut_one(tmp_path: Path) -> None:
    settings = AuditSettings(audit_exporter="file", audit_file=tmp_path / "spans.jsonl")
    record = '{"attributes": {"mcpgw.event_id": "%s"}}\n'
    settings.audit_file.write_text("".join(record % n for n in range(100)) + '{"attributes": {"mcpg')
    assert exported_event_ids(settings) == [str(n) for n in range(100)]
    assert exported_event_ids(settings, tail_bytes=120) == ["98", "99"]
    assert exported_event_ids(AuditSettings(audit_exporter="console", audit_file=settings.audit_file)) == []


async def test_batched_delivery_answers_at_once_and_publishes_soon_after(nats_url: str) -> None:
    nc = await bus.connect(nats_url, "test")
    await bus.ensure_audit_stream(nc)
    publisher = AuditPublisher(nc, confirm_timeout=10, delivery=AuditDelivery.BATCHED)
    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        numbers = [publisher.submit(event(3000 + n)) for n in range(20)]
        started = time.monotonic()
        assert [await publisher.confirmed(n) for n in numbers] == [False] * 20
        assert time.monotonic() - started < 0.05
        with anyio.fail_after(10):
            while publisher.published < 20:
                await anyio.sleep(0.01)
        assert await publisher.confirmed(numbers[-1]) is True
        tg.cancel_scope.cancel()
    await nc.close()
