"""Quota leases against a real nats-server: two edges' quotas on one counter, spending
concurrently, never pass the limit together (overshoot measured: zero) and use all of it;
leases shrink near the limit; a bucket that goes away leaves each edge counting alone."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client as NATS

from services.edge.limits.quota import SHARE, Quota, QuotaStore, counter_name
from services.windows import Window
from tests.processes import nats_server

pytestmark = pytest.mark.anyio
HOUR = Window.parse("1h")


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    with nats_server(tmp_path) as url:
        yield url


@pytest.fixture
async def connections(nats_url: str) -> AsyncIterator[list[NATS]]:
    opened = [await nats.connect(nats_url) for _ in range(2)]
    yield opened
    for nc in opened:
        await nc.close()


async def quotas(connections: list[NATS], limit: int, scope: str) -> tuple[list[Quota], list[int]]:
    """One quota per edge on the same scope, and a list each lease renewal is counted in."""
    renewals: list[int] = []
    spawned: list[Quota] = []
    for nc in connections:
        store = QuotaStore(nc)
        await store.open()
        spawned.append(Quota(store, scope, limit, HOUR, lambda task: renewals.append(1)))
    return spawned, renewals


async def test_two_edges_spending_at_once_get_exactly_the_limit(connections: list[NATS]) -> None:
    (one, two), _ = await quotas(connections, 1000, "key:vk-many")
    granted = [0, 0]

    async def spend(index: int, quota: Quota) -> None:
        for _ in range(800):
            if await quota.take(1, time.time()):
                granted[index] += 1

    async with anyio.create_task_group() as tg:
        for index, quota in enumerate((one, two)):
            for _ in range(4):
                tg.start_soon(spend, index, quota)
    # 6,400 asked for, 1,000 allowed: no overshoot, and both edges got a share.
    assert sum(granted) == 1000
    assert min(granted) > 0
    await one.flush()
    await two.flush()
    assert await one.used(time.time()) == 1000


async def test_leases_take_a_share_of_what_remains_and_shrink_near_the_limit(connections: list[NATS]) -> None:
    (one, two), _ = await quotas(connections, 64, "key:vk-share")
    store = QuotaStore(connections[0])
    await store.open()
    leased = counter_name("key:vk-share", HOUR, HOUR.bounds(time.time())[0])
    assert await one.take(1, time.time())
    # One lease took an eighth of 64; the other edge's first lease takes an eighth of the rest.
    assert await store.read(leased) == 64 // SHARE
    assert await two.take(1, time.time())
    assert await store.read(leased) == 8 + (64 - 8) // SHARE
    # Spent is what was taken, not leased.
    await one.flush()
    await two.flush()
    assert await one.used(time.time()) == 2
    for _ in range(200):
        await one.take(1, time.time())
        await two.take(1, time.time())
    assert await store.read(leased) == 64


async def test_units_of_a_call_that_did_not_run_are_spent_again_on_the_edge(connections: list[NATS]) -> None:
    (one, _), _ = await quotas(connections, 5, "budget:vk-back")
    assert await one.take(5, time.time())
    assert not await one.take(1, time.time())
    one.give_back(2)
    assert await one.used(time.time()) == 3
    assert await one.take(2, time.time())
    await one.flush()
    assert await one.used(time.time()) == 5


async def test_a_lowered_limit_holds_at_once_and_a_window_starts_afresh(connections: list[NATS]) -> None:
    (one, _), _ = await quotas(connections, 100, "key:vk-lowered")
    assert await one.take(1, time.time())
    one.configure(1, HOUR)
    assert not await one.take(1, time.time())
    later = time.time() + 3600
    assert await one.take(1, later)


async def test_without_the_bucket_each_edge_counts_alone_against_the_whole_limit(
    connections: list[NATS], nats_url: str
) -> None:
    (one, _), _ = await quotas(connections, 3, "key:vk-alone")
    await connections[0].close()
    allowed = [await one.take(1, time.time()) for _ in range(5)]
    assert allowed == [True, True, True, False, False]
