"""The audit store on SQLite and PostgreSQL: once per event id, hash chains that name the
record a direct edit of the database changed, removed or moved, retention, usage figures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from services.audit.chain import Problem
from services.audit.store import AuditStore, RecordFilter
from services.contracts import events_pb2
from tests.integration.conftest import postgres_schema

pytestmark = pytest.mark.anyio

SECOND = 1_000_000_000


def event(
    n: int, *, key: str = "key-a", server: str = "alpha", tool: str = "search", **fields: object
) -> events_pb2.OperationEvent:
    base: dict[str, object] = {
        "event_id": f"event-{n}",
        "method": "tools/call",
        "start_unix_nano": 1_000 * SECOND + n * SECOND,
        "end_unix_nano": 1_000 * SECOND + n * SECOND + 10_000_000 * (n % 5 + 1),
        "server": server,
        "tool": tool,
        "exposed_name": f"{server}_{tool}",
        "virtual_key_id": key,
        "outcome": events_pb2.OUTCOME_OK,
    }
    return events_pb2.OperationEvent(**{**base, **fields})  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, object]]]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}", {}
        return
    async with postgres_schema() as where:
        yield where


async def opened(url: tuple[str, dict[str, object]], chain: str = "audit") -> AuditStore:
    return await AuditStore.open(url[0], chain, **url[1])


async def tamper(store: AuditStore, statement: str) -> None:
    async with store._engine.begin() as conn:
        await conn.execute(text(statement))


async def test_each_event_is_stored_once_however_often_it_comes(url: tuple[str, dict[str, object]]) -> None:
    store = await opened(url)
    try:
        assert await store.append([event(n) for n in range(5)]) == 5
        assert await store.append([event(n) for n in range(3, 8)]) == 3  # 3 and 4 again
        records = await store.records(RecordFilter())
        assert [r.event.event_id for r in records] == [f"event-{n}" for n in range(8)]
        assert [r.position for r in records] == list(range(1, 9))
        assert await store.verify() == (8, None)
    finally:
        await store.close()


async def test_a_restarted_writer_continues_its_chain(url: tuple[str, dict[str, object]]) -> None:
    store = await opened(url)
    await store.append([event(n) for n in range(3)])
    await store.close()
    store = await opened(url)
    other = await opened(url, chain="audit-2")
    try:
        await store.append([event(n) for n in range(3, 6)])
        await other.append([event(n) for n in range(6, 9)])
        assert await store.verify() == (9, None)
    finally:
        await store.close()
        await other.close()


@pytest.mark.parametrize(
    ("statement", "named", "problem"),
    [
        # A column changed: the record disagrees with what was hashed.
        ("UPDATE audit_records SET outcome = 'error' WHERE event_id = 'event-3'", "event-3", Problem.CHANGED),
        ("UPDATE audit_records SET cost = 99 WHERE event_id = 'event-4'", "event-4", Problem.CHANGED),
        # The hashed bytes themselves changed (one byte of the body, flipped).
        ("flip a byte of event-2", "event-2", Problem.CHANGED),
        # A record removed: the next one no longer follows.
        ("DELETE FROM audit_records WHERE event_id = 'event-5'", "event-6", Problem.BROKEN),
        # Two records swapped in their chain.
        (
            "UPDATE audit_records SET position = CASE position WHEN 3 THEN 4 ELSE 3 END "
            "WHERE position IN (3, 4)",
            "event-3",
            Problem.BROKEN,
        ),
        # A record rewritten with its own hash recomputed: the one after it names it.
        (
            "UPDATE audit_records SET hash = 'ff' || substr(hash, 3) WHERE event_id = 'event-1'",
            "event-1",
            Problem.CHANGED,
        ),
    ],
)
async def test_verify_names_the_first_record_a_direct_edit_broke(
    url: tuple[str, dict[str, object]], statement: str, named: str, problem: Problem
) -> None:
    store = await opened(url)
    try:
        await store.append([event(n) for n in range(10)])
        if statement.startswith("flip"):
            async with store._engine.begin() as conn:
                body = (
                    await conn.execute(text("SELECT body FROM audit_records WHERE event_id = 'event-2'"))
                ).scalar_one()
                flipped = bytes([body[0] ^ 1]) + bytes(body[1:])
                await conn.execute(
                    text("UPDATE audit_records SET body = :body WHERE event_id = 'event-2'"),
                    {"body": flipped},
                )
        elif "CASE position" in statement:
            # Positions are unique: move one aside first, as someone reordering rows would.
            await tamper(store, "UPDATE audit_records SET position = -1 WHERE position = 3")
            await tamper(store, "UPDATE audit_records SET position = 3 WHERE position = 4")
            await tamper(store, "UPDATE audit_records SET position = 4 WHERE position = -1")
        else:
            await tamper(store, statement)
        checked, finding = await store.verify()
        assert finding is not None and (finding.event_id, finding.problem) == (named, problem)
        assert checked < 10
    finally:
        await store.close()


async def test_retention_removes_a_prefix_and_the_chain_still_verifies(
    url: tuple[str, dict[str, object]],
) -> None:
    store = await opened(url)
    try:
        await store.append([event(n) for n in range(10)])
        cutoff = event(6).end_unix_nano
        assert await store.prune(cutoff) == 6
        assert [r.event.event_id for r in await store.records(RecordFilter())] == [
            f"event-{n}" for n in range(6, 10)
        ]
        await store.append([event(n) for n in range(10, 12)])
        assert await store.verify() == (6, None)
        # Everything pruned, then a new writer of the same chain carries on from where it was.
        assert await store.prune(event(99).end_unix_nano) == 6
        await store.close()
        store = await opened(url)
        await store.append([event(20)])
        assert await store.verify() == (1, None)
        assert (await store.records(RecordFilter()))[0].position == 13
    finally:
        await store.close()


async def test_filters_and_pages(url: tuple[str, dict[str, object]]) -> None:
    store = await opened(url)
    try:
        await store.append(
            [
                event(n, key="key-a" if n % 2 else "key-b", server="alpha" if n < 6 else "beta")
                for n in range(10)
            ]
        )
        by_key = await store.records(RecordFilter(virtual_key_id="key-b"))
        assert [r.event.event_id for r in by_key] == [f"event-{n}" for n in (0, 2, 4, 6, 8)]
        window = RecordFilter(
            since_unix_nano=event(3).end_unix_nano, until_unix_nano=event(7).end_unix_nano, server="beta"
        )
        assert [r.event.event_id for r in await store.records(window)] == ["event-6"]
        slow = await store.records(RecordFilter(min_duration_ms=45))
        assert {r.event.event_id for r in slow} == {"event-4", "event-9"}
        first = await store.records(RecordFilter(), limit=4)
        rest = await store.records(RecordFilter(), after_seq=first[-1].seq, limit=100)
        assert [r.event.event_id for r in first + rest] == [f"event-{n}" for n in range(10)]
    finally:
        await store.close()


async def test_usage_by_key_server_and_tool(url: tuple[str, dict[str, object]]) -> None:
    store = await opened(url)
    try:
        await store.append(
            [
                event(1, key="key-a", server="alpha", tool="search", cost=0.01),
                event(
                    2,
                    key="key-a",
                    server="alpha",
                    tool="search",
                    cost=0.01,
                    outcome=events_pb2.OUTCOME_TOOL_ERROR,
                ),
                event(3, key="key-b", server="alpha", tool="search", cost=0.01),
                event(4, key="key-b", server="beta", tool="fetch", cost=0.5),
                event(
                    5, key="key-b", server="", tool="", outcome=events_pb2.OUTCOME_ERROR, error_code=-32602
                ),
                event(6, key="key-b", method="tools/list", server="", tool=""),
            ]
        )
        by_key = {
            u.group["virtual_key_id"]: u for u in await store.usage(RecordFilter(), ("virtual_key_id",))
        }
        assert (by_key["key-a"].calls, by_key["key-a"].errors, round(by_key["key-a"].cost, 6)) == (2, 1, 0.02)
        # Lists are no calls; a refused call is a call and an error.
        assert (by_key["key-b"].calls, by_key["key-b"].errors, round(by_key["key-b"].cost, 6)) == (3, 1, 0.51)
        rows = await store.usage(RecordFilter(), ("server", "tool"))
        assert [(u.group["server"], u.group["tool"], u.calls) for u in rows] == [
            ("alpha", "search", 3),
            ("", "", 1),
            ("beta", "fetch", 1),
        ]
        search = rows[0]
        # Durations 20, 30, 40 ms (n % 5 + 1 tens of ms): nearest-rank p50 and p95.
        assert (search.percentile(0.5), search.percentile(0.95)) == (30.0, 40.0)
    finally:
        await store.close()
