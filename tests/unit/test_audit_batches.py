"""The audit publisher: batches under NATS's payload limit whatever the records hold, and a
publish lost with its connection sent again at once."""

from __future__ import annotations

from typing import Any, cast

import anyio
import pytest
from nats.aio.client import Client as NATS

from services.contracts import events_pb2
from services.edge.auditing import (
    BATCH_BYTES,
    BATCH_LIMIT,
    EVENT_BYTES,
    PUBLISH_TIMEOUT_SECONDS,
    AuditPublisher,
)


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


class LostThenAnswered:
    """JetStream as an edge sees it across a NATS node's death: the first publish never
    hears back (its connection died with the node), the next is stored."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.first_sent = anyio.Event()

    def jetstream(self) -> Any:
        return self

    async def publish(self, subject: str, payload: bytes, timeout: float, headers: dict[str, str]) -> None:
        self.sent.append(headers["Nats-Msg-Id"])
        if len(self.sent) == 1:
            self.first_sent.set()
            await anyio.sleep_forever()


@pytest.mark.anyio
async def test_a_publish_lost_with_its_connection_is_sent_again_once_nats_is_back() -> None:
    nats = LostThenAnswered()
    audit = AuditPublisher(cast(NATS, nats), confirm_timeout=60)
    async with anyio.create_task_group() as tg:
        await tg.start(audit.run)
        number = audit.submit(events_pb2.OperationEvent(event_id="e1"))
        await nats.first_sent.wait()
        audit.reconnected()
        # Well inside the publish timeout: the retry did not wait for it.
        with anyio.fail_after(PUBLISH_TIMEOUT_SECONDS / 2):
            assert await audit.confirmed(number)
        tg.cancel_scope.cancel()
    # The same message id both times: JetStream drops the copy if the first got through.
    assert nats.sent == ["e1+1", "e1+1"]
