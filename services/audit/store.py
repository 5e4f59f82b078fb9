"""The queryable audit: every record stored once by event id, in its writer's hash chain,
with retention (SQLAlchemy async: SQLite under `mcpgw up`, PostgreSQL in deploy/).

The record's bytes (its OperationEvent, serialized once) are what is hashed; the columns
beside them repeat what queries filter on, and verification checks they still agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import alembic.command
import alembic.config
from sqlalchemy import (
    BigInteger,
    Connection,
    Float,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy import event as sql_events
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.audit.chain import GENESIS, Finding, Link, Start, Walker, link_hash
from services.contracts import events_pb2
from services.operations import method_of, outcome_name

MIGRATIONS = Path(__file__).with_name("migrations")
# Alembic's bookkeeping table of this store: registry and audit may share a database.
VERSION_TABLE = "audit_alembic_version"
MAX_PAGE = 1000
ID_CHUNK = 500


class Base(DeclarativeBase):
    pass


class RecordRow(Base):
    __tablename__ = "audit_records"
    __table_args__ = (UniqueConstraint("chain", "position", name="audit_records_chain_position"),)

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    chain: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(BigInteger)
    ended_unix_nano: Mapped[int] = mapped_column(BigInteger)
    duration_ms: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(200))
    server: Mapped[str] = mapped_column(String(64))
    tool: Mapped[str] = mapped_column(String(1024))
    virtual_key_id: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChainStartRow(Base):
    """Where a chain begins once retention removed its first records."""

    __tablename__ = "audit_chain_starts"

    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))


@dataclass(frozen=True, slots=True)
class RecordFilter:
    since_unix_nano: int = 0
    until_unix_nano: int = 0
    virtual_key_id: str | None = None
    server: str | None = None
    tool: str | None = None
    method: str | None = None
    outcome: str | None = None
    min_duration_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class StoredRecord:
    seq: int
    chain: str
    position: int
    event: events_pb2.OperationEvent
    cost: float
    hash: str


@dataclass(slots=True)
class Usage:
    """Calls, errors, latency and cost of one group (key, server, tool: those grouped by)."""

    group: dict[str, str]
    calls: int = 0
    errors: int = 0
    cost: float = 0.0
    durations_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """The nearest-rank percentile of the durations (0 with none)."""
        if not self.durations_ms:
            return 0.0
        ordered = sorted(self.durations_ms)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _fit(text: str, width: int) -> str:
    """Text as a column holds it: no NUL (PostgreSQL text cannot), at most `width` long."""
    return text.replace("\x00", "")[:width]


def _columns(event: events_pb2.OperationEvent) -> dict[str, Any]:
    """What a record's columns say: derived from its event by a fixed rule, so verification
    can check them against it (what a client sent may be any string; the body keeps it all)."""
    return {
        "event_id": _fit(event.event_id, 64),
        "ended_unix_nano": event.end_unix_nano,
        "duration_ms": max(0, event.end_unix_nano - event.start_unix_nano) / 1e6,
        "method": _fit(method_of(event), 200),
        "server": _fit(event.server, 64),
        "tool": _fit(event.tool, 1024),
        "virtual_key_id": _fit(event.virtual_key_id, 64),
        "outcome": outcome_name(event),
        "cost": event.cost,
    }


def _agrees(row: Any) -> bool:
    try:
        event = events_pb2.OperationEvent.FromString(row.body)
    except Exception:  # protobuf raises DecodeError, and worse for garbage
        return False
    return all(getattr(row, name) == value for name, value in _columns(event).items())


class AuditStore:
    """Records in, by one writer's chain; queries, usage and verification out."""

    def __init__(self, engine: AsyncEngine, chain: str) -> None:
        self._engine = engine
        self._chain = chain
        # The writer's chain head: its last position and hash (read once, then kept).
        self._head: tuple[int, str] | None = None

    @classmethod
    async def open(cls, url: str, chain: str = "audit", **engine_options: Any) -> AuditStore:
        engine = create_async_engine(url, **engine_options)
        if engine.dialect.name == "sqlite":
            # WAL: a long verification reads while records are written; NORMAL: one fsync
            # per checkpoint, not per batch (a crash loses no committed batch in WAL mode).
            sql_events.listen(engine.sync_engine, "connect", _sqlite_wal)
        async with engine.begin() as conn:
            await conn.run_sync(_migrate)
        return cls(engine, chain)

    async def close(self) -> None:
        await self._engine.dispose()

    async def _chain_head(self) -> tuple[int, str]:
        """This writer's last position and hash: its last record's, or where retention left it."""
        if self._head is None:
            async with self._engine.connect() as conn:
                last = (
                    await conn.execute(
                        select(RecordRow.position, RecordRow.hash)
                        .where(RecordRow.chain == self._chain)
                        .order_by(RecordRow.position.desc())
                        .limit(1)
                    )
                ).first()
                start = (
                    await conn.execute(select(ChainStartRow).where(ChainStartRow.chain == self._chain))
                ).first()
            if last is not None:
                self._head = (last.position, last.hash)
            elif start is not None:
                self._head = (start.position - 1, start.prev_hash)
            else:
                self._head = (0, GENESIS)
        return self._head

    async def append(self, events: Iterable[events_pb2.OperationEvent]) -> int:
        """Store the events not stored yet (by event id), each linked into this writer's
        chain, in one transaction; how many were new."""
        events = list(events)
        if not events:
            return 0
        head = await self._chain_head()
        try:
            try:
                # Most batches are new: insert without looking first (a statement less).
                return await self._append(events, head, look=False)
            except IntegrityError:
                # One was stored before (a batch redelivered after its commit): skip those.
                return await self._append(events, head, look=True)
        except BaseException:
            # The commit may have happened anyway (a connection lost on the way back): read
            # the chain's head again rather than trust the one kept.
            self._head = None
            raise

    async def _append(
        self, events: list[events_pb2.OperationEvent], head: tuple[int, str], *, look: bool
    ) -> int:
        async with self._engine.begin() as conn:
            ids = [_fit(e.event_id, 64) for e in events]
            known: set[str] = set()
            # In chunks: databases bound the parameters of one statement (SQLite 32766).
            for start in range(0, len(ids) if look else 0, ID_CHUNK):
                chunk = ids[start : start + ID_CHUNK]
                found = await conn.execute(select(RecordRow.event_id).where(RecordRow.event_id.in_(chunk)))
                known.update(found.scalars())
            rows = []
            position, prev = head
            for event, event_id in zip(events, ids, strict=True):
                if event_id in known:
                    continue
                known.add(event_id)
                body = event.SerializeToString(deterministic=True)
                position += 1
                digest = link_hash(prev, body)
                rows.append(
                    {**_columns(event), "chain": self._chain, "position": position, "body": body,
                     "prev_hash": prev, "hash": digest}
                )  # fmt: skip
                prev = digest
            if rows:
                await conn.execute(insert(RecordRow), rows)
        # Advanced only once the rows are committed.
        self._head = (position, prev)
        return len(rows)

    def _where(self, query: Any, filt: RecordFilter) -> Any:
        if filt.since_unix_nano:
            query = query.where(RecordRow.ended_unix_nano >= filt.since_unix_nano)
        if filt.until_unix_nano:
            query = query.where(RecordRow.ended_unix_nano < filt.until_unix_nano)
        for column, wanted in (
            (RecordRow.virtual_key_id, filt.virtual_key_id),
            (RecordRow.server, filt.server),
            (RecordRow.tool, filt.tool),
            (RecordRow.method, filt.method),
            (RecordRow.outcome, filt.outcome),
        ):
            if wanted is not None:
                query = query.where(column == wanted)
        if filt.min_duration_ms:
            query = query.where(RecordRow.duration_ms >= filt.min_duration_ms)
        return query

    async def records(self, filt: RecordFilter, after_seq: int = 0, limit: int = 100) -> list[StoredRecord]:
        """A page of records in the order they were stored, after `after_seq` (a cursor)."""
        query = self._where(select(RecordRow), filt).where(RecordRow.seq > after_seq)
        query = query.order_by(RecordRow.seq).limit(max(1, min(limit, MAX_PAGE)))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            StoredRecord(
                r.seq, r.chain, r.position, events_pb2.OperationEvent.FromString(r.body), r.cost, r.hash
            )
            for r in rows
        ]

    async def usage(self, filt: RecordFilter, by: tuple[str, ...]) -> list[Usage]:
        """Calls, errors, p50/p95 latency and cost per group of `by` (columns of
        virtual_key_id, server, tool), busiest first."""
        columns = [getattr(RecordRow, name) for name in by]
        query = self._where(
            select(*columns, RecordRow.outcome, RecordRow.duration_ms, RecordRow.cost), filt
        ).where(RecordRow.method == "tools/call")
        groups: dict[tuple[str, ...], Usage] = {}
        async with self._engine.connect() as conn:
            async for row in await conn.stream(query):
                key = tuple(row[: len(by)])
                usage = groups.get(key) or groups.setdefault(key, Usage(dict(zip(by, key, strict=True))))
                usage.calls += 1
                usage.errors += row.outcome != "ok"
                usage.cost += row.cost
                usage.durations_ms.append(row.duration_ms)
        return sorted(groups.values(), key=lambda u: (-u.calls, tuple(u.group.values())))

    async def heads(self) -> dict[str, tuple[int, str]]:
        """Each chain's last position and hash: kept elsewhere, they catch a rewritten tail."""
        query = select(RecordRow.chain, func.max(RecordRow.position)).group_by(RecordRow.chain)
        async with self._engine.connect() as conn:
            lasts = (await conn.execute(query)).all()
            heads = {}
            for chain, position in lasts:
                found = select(RecordRow.hash).where(RecordRow.chain == chain, RecordRow.position == position)
                heads[chain] = (position, (await conn.execute(found)).scalar_one())
        return heads

    async def verify(self) -> tuple[int, Finding | None]:
        """Walk every chain as it streams from the database, in one snapshot (retention may
        run meanwhile); how many records hold, and the first that does not."""
        async with self._engine.connect() as conn:
            if self._engine.dialect.name == "postgresql":
                await conn.execution_options(isolation_level="REPEATABLE READ")
            await conn.begin()
            starts = (await conn.execute(select(ChainStartRow))).all()
            walker = Walker({r.chain: Start(r.position, r.prev_hash) for r in starts})
            query = select(RecordRow).order_by(RecordRow.chain, RecordRow.position)
            async for row in await conn.stream(query):
                link = Link(
                    row.chain, row.position, row.event_id, row.prev_hash, row.hash, row.body, _agrees(row)
                )
                finding = walker.check(link)
                if finding is not None:
                    return walker.checked, finding
        return walker.checked, None

    async def prune(self, before_unix_nano: int) -> int:
        """Remove the records that ended before a time (retention), as a prefix of each chain
        (clocks of different edges disagree a little: a record is kept while a later one of
        its chain is); each chain then starts at its first record left, which verification
        trusts from here on. How many were removed."""
        removed = 0
        async with self._engine.begin() as conn:
            old = RecordRow.ended_unix_nano < before_unix_nano
            chains = (await conn.execute(select(RecordRow.chain).where(old).distinct())).scalars().all()
            for chain in chains:
                mine = RecordRow.chain == chain
                kept = (
                    await conn.execute(
                        select(RecordRow.position, RecordRow.prev_hash)
                        .where(mine, RecordRow.ended_unix_nano >= before_unix_nano)
                        .order_by(RecordRow.position)
                        .limit(1)
                    )
                ).first()
                if kept is None:
                    last = (
                        await conn.execute(
                            select(RecordRow.position, RecordRow.hash)
                            .where(mine)
                            .order_by(RecordRow.position.desc())
                            .limit(1)
                        )
                    ).one()
                    start = Start(last.position + 1, last.hash)
                else:
                    start = Start(kept.position, kept.prev_hash)
                cut = delete(RecordRow).where(mine, RecordRow.position < start.position)
                result = await conn.execute(cut)
                removed += int(getattr(result, "rowcount", 0) or 0)
                await conn.execute(delete(ChainStartRow).where(ChainStartRow.chain == chain))
                await conn.execute(
                    insert(ChainStartRow),
                    {"chain": chain, "position": start.position, "prev_hash": start.prev_hash},
                )
        return removed


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _migrate(connection: Connection) -> None:
    """Bring the schema to the newest migration (the same ones for SQLite and PostgreSQL)."""
    config = alembic.config.Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    alembic.command.upgrade(config, "head")
