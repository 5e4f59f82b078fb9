"""Bulkheads alone: slots, the bounded queue behind them, the wait's deadline, and a
changed capacity getting a fresh bulkhead."""

from __future__ import annotations

import asyncio

import pytest

from services.connector.bulkheads import Bulkhead, BulkheadFullError, Bulkheads, Capacity

pytestmark = pytest.mark.anyio


async def test_calls_beyond_the_limit_wait_and_run_when_a_slot_frees() -> None:
    bulkhead = Bulkhead(Capacity(limit=1, queue=1, timeout=5), "server 's'")
    release = asyncio.Event()
    order: list[str] = []

    async def hold(name: str) -> None:
        await bulkhead.acquire("s")
        try:
            order.append(name)
            await release.wait()
        finally:
            bulkhead.release()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(hold("first"))
        while bulkhead.in_flight < 1:
            await asyncio.sleep(0)
        tasks.create_task(hold("second"))
        while bulkhead.waiting < 1:
            await asyncio.sleep(0)
        assert order == ["first"] and bulkhead.in_flight == 1
        release.set()
    assert order == ["first", "second"]
    assert bulkhead.in_flight == 0


async def test_a_full_queue_refuses_at_once_and_names_whose_bulkhead() -> None:
    bulkhead = Bulkhead(Capacity(limit=1, queue=0, timeout=5), "key 'k'")
    await bulkhead.acquire("s")
    with pytest.raises(BulkheadFullError) as refused:
        await bulkhead.acquire("s")
    assert "key 'k' has 1 calls in flight and 0 waiting" in str(refused.value)
    assert refused.value.server == "s" and refused.value.retry_after == 1.0
    bulkhead.release()
    await bulkhead.acquire("s")
    assert bulkhead.in_flight == 1


async def test_a_wait_past_the_timeout_is_refused_and_leaves_the_queue() -> None:
    bulkhead = Bulkhead(Capacity(limit=1, queue=1, timeout=0.05), "server 's'")
    await bulkhead.acquire("s")
    with pytest.raises(BulkheadFullError, match=r"no free slot of its 1 within 0\.05s"):
        await bulkhead.acquire("s")
    # The timed-out waiter left the queue: the next one may wait again.
    assert bulkhead.waiting == 0
    with pytest.raises(BulkheadFullError, match="within"):
        await bulkhead.acquire("s")


async def test_a_cancelled_holder_gives_its_slot_back() -> None:
    bulkhead = Bulkhead(Capacity(limit=1))
    entered = asyncio.Event()

    async def hold() -> None:
        await bulkhead.acquire("s")
        try:
            entered.set()
            await asyncio.Event().wait()
        finally:
            bulkhead.release()

    task = asyncio.create_task(hold())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bulkhead.in_flight == 0


def test_bulkheads_are_kept_by_name_and_replaced_when_the_capacity_changes() -> None:
    bulkheads = Bulkheads()
    first = bulkheads.of("server", "a", Capacity(2))
    assert first is not None and bulkheads.of("server", "a", Capacity(2)) is first
    assert first.whose == "server 'a'"
    second = bulkheads.of("server", "a", Capacity(3))
    assert second is not None and second is not first and second.capacity.limit == 3
    assert bulkheads.of("server", "a", None) is None
    assert bulkheads.of("server", "a", Capacity(0)) is None
    assert bulkheads.of("server", "a", Capacity(3)) is not second
