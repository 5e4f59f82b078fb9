"""The audit publisher's batches stay under NATS's payload limit whatever the records hold."""

from __future__ import annotations

from typing import Any, cast

from nats.aio.client import Client as NATS

from services.contracts import events_pb2
from services.edge.auditing import BATCH_BYTES, BATCH_LIMIT, EVENT_BYTES, AuditPublisher


class Nats:
    def jetstream(self) -> Any:
        return None


def publisher() -> AuditPublisher:
    return AuditPublisher(cast(NATS, Nats()))


def test_large_records_are_split_across_batches_under_the_byte_bound() -> None:
    audit = publisher()
    # Client-chosen text, non-ASCII, at the bounds a record keeps: ~2.7 KB each.
    for n in range(600):
        audit.submit(events_pb2.OperationEvent(event_id=f"e{n}", method="é" * 200, error_message="ü" * 500))
    sizes = []
    while audit.backlog:
        batch = audit._take()
        sizes.append(len(batch.SerializeToString()))
        assert 1 <= len(batch.events) <= BATCH_LIMIT
    assert max(sizes) <= BATCH_BYTES and len(sizes) > 1


def test_a_record_too_large_alone_loses_its_payloads_not_its_place() -> None:
    audit = publisher()
    big = events_pb2.OperationEvent(event_id="big", arguments_json=b"x" * EVENT_BYTES, result_json=b"y" * 10)
    audit.submit(big)
    (event,) = audit._take().events
    assert event.event_id == "big" and event.arguments_json == b"" and event.result_json == b""
