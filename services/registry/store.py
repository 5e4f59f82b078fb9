"""Persistence of servers, what they offer and the revision counter (SQLAlchemy async).

Every write that changes what edges or connectors see bumps the revision in the same
transaction; a write that changes nothing leaves it alone, so repeated reports of an
unchanged catalog never wake the fleet.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import alembic.command
import alembic.config
import orjson
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.registry.config import ClientConfig, GatewayConfig, HealthMonitorConfig
from services.registry.sealing import Sealer

MIGRATIONS = Path(__file__).with_name("migrations")
# The PostgreSQL advisory lock registries take to migrate (any constant; "mcpgw" in ASCII).
MIGRATION_LOCK = 0x6D63706777
STARTUP_LOCK = MIGRATION_LOCK + 1


class Base(DeclarativeBase):
    pass


class ServerRow(Base):
    __tablename__ = "servers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    config_json: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="connecting")
    error: Mapped[str] = mapped_column(Text, default="")
    capabilities_json: Mapped[str] = mapped_column(Text, default="{}")
    instructions: Mapped[str] = mapped_column(Text, default="")


class ItemRow(Base):
    """One tool, prompt, resource or resource template of a server, as it defined it."""

    __tablename__ = "catalog_items"

    server: Mapped[str] = mapped_column(ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    definition_json: Mapped[str] = mapped_column(Text)


class ConnectorStateRow(Base):
    """What one connector replica last reported of one server."""

    __tablename__ = "connector_states"

    server: Mapped[str] = mapped_column(ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True)
    connector_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_unix: Mapped[float] = mapped_column(Float, default=0.0)


class ConnectorRow(Base):
    """When a connector replica was last heard from, and whether it heartbeats (a replica
    from before heartbeats never does: it is not judged by silence)."""

    __tablename__ = "connectors"

    connector_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    alive_unix: Mapped[float] = mapped_column(Float)
    heartbeats: Mapped[bool] = mapped_column(Boolean, default=False)


def _alive_since(since: float) -> ColumnElement[bool]:
    return or_(ConnectorRow.alive_unix >= since, ConnectorRow.heartbeats.is_(False))


@dataclass(frozen=True)
class ReplicaReport:
    """What one connector replica says of one server (ReportCatalog)."""

    server: str
    connector_id: str
    state: str
    error: str = ""
    items: list[StoredItem] = field(default_factory=list)
    capabilities_json: str = "{}"
    instructions: str = ""
    attempts: int = 0
    next_attempt_unix: float = 0.0


class MetaRow(Base):
    __tablename__ = "registry_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def client_name(server: str) -> str:
    """The kept secret holding what was discovered and registered for a server's OAuth."""
    return f"oauth-client:{server}"


def refresh_token_name(server: str) -> str:
    """The kept secret holding the operator's grant for a server."""
    return f"oauth-refresh:{server}"


def credentials_name(server: str, key_id: str) -> str:
    """The kept secret holding one key's own headers for a per_user server."""
    return f"credentials:{server}:{key_id}"


def _reach(config_json: str) -> tuple[object, ...]:
    """What a server's tokens were issued for: a change makes them another server's."""
    config = orjson.loads(config_json)
    return (config.get("connection_string"), config.get("oauth"), config.get("per_user_oauth"))


async def _forget_authorizations(session: AsyncSession, server: str, removed: bool) -> None:
    """Drop the OAuth client, the operator's grant and every identity's for a server whose
    address or OAuth changed (tokens must not reach another server), and when it is
    `removed`, its keys' credentials too."""
    names = [f"secret:{client_name(server)}", f"secret:{refresh_token_name(server)}"]
    await session.execute(delete(MetaRow).where(MetaRow.key.in_(names)))
    if removed:
        prefix = f"secret:{credentials_name(server, '')}"
        await session.execute(delete(MetaRow).where(MetaRow.key.startswith(prefix, autoescape=True)))
    else:
        user_tokens = Base.metadata.tables["user_tokens"]
        await session.execute(delete(user_tokens).where(user_tokens.c.server == server))


# Authorization flows waiting for their callback, at most (each is good for minutes).
MAX_PENDING = 10_000


def _pending_key(expires: float, state: str) -> str:
    """A waiting flow's row: its expiry first (zero-padded, so expired rows sort first),
    then a digest of its state, which is never kept itself."""
    digest = hashlib.sha256(state.encode()).hexdigest()[:32] if state else ""
    return f"pending:{int(expires):012d}:{digest}"


class TooManyPendingError(Exception):
    """More authorization flows are waiting than the store keeps."""


class UnknownServerError(LookupError):
    """A report or lookup named a server the registry does not hold."""


class ServerExistsError(Exception):
    """A server by that name is already held."""


@dataclass(frozen=True, slots=True)
class StoredServer:
    config: ClientConfig
    state: str
    error: str
    capabilities_json: str = "{}"
    # file | api
    source: str = "file"
    instructions: str = ""


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """How connectors watch and bring back every server: the health monitor and auto-reconnect."""

    health: HealthMonitorConfig = field(default_factory=HealthMonitorConfig)
    auto_reconnect: bool = True

    def to_json(self) -> str:
        return orjson.dumps(
            {"health": self.health.model_dump(), "auto_reconnect": self.auto_reconnect}
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> Lifecycle:
        if not text:
            return cls()
        value = orjson.loads(text)
        return cls(HealthMonitorConfig.model_validate(value["health"]), bool(value["auto_reconnect"]))


@dataclass(frozen=True, slots=True)
class StoredItem:
    """`kind` is tool | prompt | resource | template; `key` its name, URI or URI template."""

    server: str
    kind: str
    key: str
    definition_json: str


@dataclass(frozen=True, slots=True)
class CatalogState:
    revision: int
    separator: str
    servers: list[StoredServer]
    items: list[StoredItem]
    tools: ToolOffer = field(default_factory=lambda: ToolOffer())


@dataclass(frozen=True, slots=True)
class ToolOffer:
    """How every view offers tools ("": as keys and groups say), and what one Code Mode stub
    file holds (server | tool)."""

    mode: str = ""
    binding: str = "server"

    def to_json(self) -> str:
        return orjson.dumps({"mode": self.mode, "binding": self.binding}).decode()

    @classmethod
    def from_json(cls, text: str) -> ToolOffer:
        if not text:
            return cls()
        value = orjson.loads(text)
        return cls(str(value["mode"]), str(value["binding"]))


def _owner_only(database: str | None) -> None:
    """The SQLite file readable by its owner only (it holds sealed credentials and key
    hashes); its journal files take the same mode from it."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    path.touch(mode=0o600)
    path.chmod(0o600)


class RegistryStore:
    def __init__(self, engine: AsyncEngine, sealer: Sealer) -> None:
        self.engine = engine
        self.sealer = sealer
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, sealer: Sealer | None = None, **engine_options: Any) -> RegistryStore:
        """The store at `url`, migrated; server configs sealed with `sealer` (a random key
        when none is given: fine for tests, useless across restarts)."""
        engine = create_async_engine(url, **engine_options)
        if engine.dialect.name == "sqlite":
            # SQLite ignores foreign keys (and so ON DELETE CASCADE) unless asked per connection.
            event.listen(engine.sync_engine, "connect", _sqlite_foreign_keys)
            _owner_only(engine.url.database)
        async with engine.begin() as conn:
            await conn.run_sync(_migrate)
        return cls(engine, sealer or Sealer(secrets.token_urlsafe(32)))

    def _stored(self, row: ServerRow) -> StoredServer:
        return StoredServer(
            ClientConfig.model_validate_json(self.sealer.open(row.config_json)),
            row.state,
            row.error,
            row.capabilities_json,
            row.source,
            row.instructions,
        )

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def exclusively(self) -> AsyncIterator[None]:
        """One registry at a time in the block (on PostgreSQL; SQLite has a single writer):
        replicas starting together apply the config file one after the other."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK})
            try:
                yield
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK})

    async def revision(self) -> int:
        async with self.sessions() as session:
            return int(await read_meta(session, "revision", "0"))

    async def apply_config(self, config: GatewayConfig) -> tuple[int, bool]:
        """Make the file-sourced servers exactly those of `config`; returns (revision, changed)."""
        wanted = {c.name: c for c in config.mcp.client_configs if not c.disabled}
        async with self.sessions.begin() as session:
            changed = await write_meta(session, "tool_separator", config.mcpgw.tool_separator)
            lifecycle = Lifecycle(config.mcp.health_monitor_config, config.mcpgw.auto_reconnect)
            changed = await write_meta(session, "lifecycle", lifecycle.to_json()) or changed
            offer = ToolOffer(
                config.mcpgw.tool_mode or "", config.mcp.tool_manager_config.code_mode_binding_level
            )
            changed = await write_meta(session, "tool_offer", offer.to_json()) or changed
            rows = {r.name: r for r in (await session.scalars(select(ServerRow))).all()}
            for name, row in rows.items():
                if row.source == "file" and name not in wanted:
                    await session.delete(row)
                    await _forget_authorizations(session, name, removed=True)
                    changed = True
            for position, (name, client) in enumerate(wanted.items()):
                config_json = client.model_dump_json()
                existing = rows.get(name)
                if existing is None:
                    session.add(
                        ServerRow(
                            name=name,
                            position=position,
                            source="file",
                            config_json=self.sealer.seal(config_json),
                            state="connecting",
                            error="",
                        )
                    )
                    changed = True
                elif (before := self.sealer.open(existing.config_json)) != config_json or (
                    existing.position != position
                ):
                    if _reach(before) != _reach(config_json):
                        await _forget_authorizations(session, name, removed=False)
                    existing.config_json, existing.position = self.sealer.seal(config_json), position
                    changed = True
            revision = await bump(session) if changed else int(await read_meta(session, "revision", "0"))
        return revision, changed

    async def put_server(self, config: ClientConfig, create: bool) -> StoredServer:
        """Add (`create`) or replace a server the API manages; a file server replaced here
        becomes the API's. ServerExistsError / UnknownServerError when it is (not) there."""
        async with self.sessions.begin() as session:
            row = await session.get(ServerRow, config.name)
            if create and row is not None:
                raise ServerExistsError(config.name)
            if not create and row is None:
                raise UnknownServerError(config.name)
            if row is None:
                last = await session.scalar(select(func.max(ServerRow.position)))
                row = ServerRow(
                    name=config.name,
                    position=(last or 0) + 1,
                    state="connecting",
                    error="",
                    capabilities_json="{}",
                )
                session.add(row)
            elif _reach(self.sealer.open(row.config_json)) != _reach(config.model_dump_json()):
                await _forget_authorizations(session, config.name, removed=False)
            row.source, row.config_json = "api", self.sealer.seal(config.model_dump_json())
            await bump(session)
            return self._stored(row)

    async def remove_server(self, name: str) -> int:
        async with self.sessions.begin() as session:
            row = await session.get(ServerRow, name)
            if row is None:
                raise UnknownServerError(name)
            await session.delete(row)
            await _forget_authorizations(session, name, removed=True)
            return await bump(session)

    async def put_secret(self, name: str, value: str, announce: bool = True) -> int:
        """Keep a credential (sealed) that connectors need; bumps the revision unless it is
        not to be `announce`d (a rotated token, which the connector that rotated it holds)."""
        async with self.sessions.begin() as session:
            await write_meta(session, f"secret:{name}", self.sealer.seal(value))
            return await bump(session) if announce else int(await read_meta(session, "revision", "0"))

    async def secret_version(self, name: str) -> str | None:
        """A kept credential as stored (sealed): the version `swap_secret` compares."""
        async with self.sessions() as session:
            row = await session.get(MetaRow, f"secret:{name}")
        return None if row is None or not row.value else row.value

    async def swap_secret(self, name: str, version: str, value: str | None) -> str | None:
        """Replace a kept credential (None: drop it) only while it is still `version`, with no
        new revision: its new version ("" when dropped), or None when another write came first."""
        where = (MetaRow.key == f"secret:{name}", MetaRow.value == version)
        sealed = "" if value is None else self.sealer.seal(value)
        async with self.sessions.begin() as session:
            if value is None:
                done = await session.execute(delete(MetaRow).where(*where))
            else:
                done = await session.execute(update(MetaRow).where(*where).values(value=sealed))
        return sealed if done.rowcount == 1 else None  # type: ignore[attr-defined]

    async def put_pending(self, state: str, flow: str, expires: float) -> None:
        """Keep an authorization flow (sealed) until its callback, for whichever registry
        that reaches; expired ones go first."""
        async with self.sessions.begin() as session:
            pending = MetaRow.key.startswith("pending:")
            await session.execute(delete(MetaRow).where(pending, MetaRow.key < _pending_key(time.time(), "")))
            if ((await session.scalar(select(func.count()).where(pending))) or 0) >= MAX_PENDING:
                raise TooManyPendingError(f"{MAX_PENDING} authorizations are waiting already")
            session.add(MetaRow(key=_pending_key(expires, state), value=self.sealer.seal(flow)))

    async def take_pending(self, state: str) -> str | None:
        """A waiting flow, once (whoever deletes it has it); None when unknown or expired."""
        digest = _pending_key(0, state).rpartition(":")[2]
        async with self.sessions.begin() as session:
            row = await session.scalar(select(MetaRow).where(MetaRow.key.like(f"pending:%:{digest}")))
            if row is None:
                return None
            taken = await session.execute(delete(MetaRow).where(MetaRow.key == row.key))
            if taken.rowcount != 1 or row.key < _pending_key(time.time(), ""):  # type: ignore[attr-defined]
                return None
            return self.sealer.open(row.value)

    async def secrets(self) -> dict[str, str]:
        """Every kept credential by name, opened: one read, however many there are."""
        async with self.sessions() as session:
            rows = (await session.scalars(select(MetaRow).where(MetaRow.key.startswith("secret:")))).all()
            return {r.key[len("secret:") :]: self.sealer.open(r.value) for r in rows if r.value}

    async def separator(self) -> str:
        async with self.sessions() as session:
            return await read_meta(session, "tool_separator", "_")

    async def lifecycle(self) -> Lifecycle:
        async with self.sessions() as session:
            return Lifecycle.from_json(await read_meta(session, "lifecycle", ""))

    async def servers(self) -> tuple[int, list[StoredServer]]:
        async with self.sessions() as session:
            revision = int(await read_meta(session, "revision", "0"))
            rows = (await session.scalars(select(ServerRow).order_by(ServerRow.position))).all()
            return revision, [self._stored(r) for r in rows]

    async def report_replica(self, report: ReplicaReport, now: float, alive_since: float) -> tuple[int, bool]:
        """Keep what one connector replica reports of a server (and that it is alive), and
        apply it to the server, in one transaction with the server's row locked: a replica
        that lost the server changes nothing while another heard from since `alive_since`
        still holds it."""
        async with self.sessions.begin() as session:
            row = await session.get(ServerRow, report.server, with_for_update=True)
            if row is None:
                raise UnknownServerError(report.server)
            values = {
                "state": report.state,
                "attempts": report.attempts,
                "next_attempt_unix": report.next_attempt_unix,
            }
            keys = {"server": report.server, "connector_id": report.connector_id}
            await self._upsert(session, ConnectorStateRow, keys, values)
            await self._alive(session, report.connector_id, now, heartbeat=False)
            if report.state != "connected" and await self._held(session, report.server, alive_since):
                return int(await read_meta(session, "revision", "0")), False
            changed = await self._apply(session, row, report)
            revision = await bump(session) if changed else int(await read_meta(session, "revision", "0"))
        return revision, changed

    async def unsettled(self, alive_since: float) -> list[str]:
        """The servers whose state is not what the replicas heard from since `alive_since`
        say (`settle` makes it so), read in one transaction that writes nothing."""
        held = (
            select(ConnectorStateRow.server)
            .join(ConnectorRow, ConnectorRow.connector_id == ConnectorStateRow.connector_id)
            .where(ConnectorStateRow.state == "connected", _alive_since(alive_since))
            .distinct()
        )
        async with self.sessions() as session:
            held_now = set(await session.scalars(held))
            rows = await session.execute(select(ServerRow.name, ServerRow.state).order_by(ServerRow.position))
            return [name for name, state in rows if (state == "connected") != (name in held_now)]

    async def settle(self, server: str, alive_since: float, lost_error: str) -> tuple[int, bool]:
        """Make the server's state what its replicas heard from since `alive_since` say:
        disconnected when none holds it, connected again (its catalog kept) when one does."""
        async with self.sessions.begin() as session:
            row = await session.get(ServerRow, server, with_for_update=True)
            if row is None:
                raise UnknownServerError(server)
            held = await self._held(session, server, alive_since)
            changed = False
            if row.state == "connected" and not held:
                row.state, row.error, changed = "disconnected", lost_error, True
            elif row.state != "connected" and held:
                row.state, row.error, changed = "connected", "", True
            revision = await bump(session) if changed else int(await read_meta(session, "revision", "0"))
        return revision, changed

    async def mark_alive(self, connector_id: str, now: float) -> float | None:
        """A connector replica's heartbeat; when it was heard from before (None: never)."""
        async with self.sessions.begin() as session:
            before = await session.scalar(
                select(ConnectorRow.alive_unix).where(ConnectorRow.connector_id == connector_id)
            )
            await self._alive(session, connector_id, now, heartbeat=True)
            return before

    async def connections(self, alive_since: float) -> dict[str, dict[str, ConnectorStateRow]]:
        """Per server, what each replica alive since `alive_since` last reported of it."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(ConnectorStateRow)
                .join(ConnectorRow, ConnectorRow.connector_id == ConnectorStateRow.connector_id)
                .where(_alive_since(alive_since))
            )
            found: dict[str, dict[str, ConnectorStateRow]] = {}
            for row in rows:
                found.setdefault(row.server, {})[row.connector_id] = row
            return found

    async def forget_connectors(self, silent_since: float) -> None:
        """Drop the replicas silent since before `silent_since`, and what they reported."""
        # Only replicas that heartbeat: one from before heartbeats is never judged by silence.
        gone = (ConnectorRow.alive_unix < silent_since, ConnectorRow.heartbeats.is_(True))
        silent = select(ConnectorRow.connector_id).where(*gone)
        async with self.sessions.begin() as session:
            await session.execute(delete(ConnectorStateRow).where(ConnectorStateRow.connector_id.in_(silent)))
            await session.execute(delete(ConnectorRow).where(*gone))

    async def _held(self, session: AsyncSession, server: str, alive_since: float) -> bool:
        """Whether a replica heard from since `alive_since` reports `server` connected."""
        found = await session.scalar(
            select(ConnectorStateRow.connector_id)
            .join(ConnectorRow, ConnectorRow.connector_id == ConnectorStateRow.connector_id)
            .where(
                ConnectorStateRow.server == server,
                ConnectorStateRow.state == "connected",
                _alive_since(alive_since),
            )
            .limit(1)
        )
        return found is not None

    async def _alive(self, session: AsyncSession, connector_id: str, now: float, heartbeat: bool) -> None:
        """A replica heard from at `now`; never earlier than already kept (registries'
        clocks differ a little)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        values: dict[str, Any] = {"alive_unix": now, "heartbeats": heartbeat}
        statement = dialect.insert(ConnectorRow).values(connector_id=connector_id, **values)
        # SQLite's two-argument max() is PostgreSQL's greatest().
        later = func.greatest if self.engine.dialect.name == "postgresql" else func.max
        kept: dict[str, Any] = {"alive_unix": later(ConnectorRow.alive_unix, statement.excluded.alive_unix)}
        if heartbeat:
            kept["heartbeats"] = True
        await session.execute(statement.on_conflict_do_update(index_elements=["connector_id"], set_=kept))

    async def _upsert(
        self, session: AsyncSession, row: type[Base], keys: dict[str, Any], values: dict[str, Any]
    ) -> None:
        """Insert or update one row in one statement, so replicas racing on it both succeed."""
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(row).values(**keys, **values)
        await session.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=values))

    async def report_catalog(
        self,
        server: str,
        state: str,
        error: str,
        items: list[StoredItem],
        capabilities_json: str = "{}",
        instructions: str = "",
    ) -> tuple[int, bool]:
        """Record a connector's view of `server`: its state, capabilities and what it offers."""
        report = ReplicaReport(server, "", state, error, items, capabilities_json, instructions)
        async with self.sessions.begin() as session:
            row = await session.get(ServerRow, server, with_for_update=True)
            if row is None:
                raise UnknownServerError(server)
            changed = await self._apply(session, row, report)
            revision = await bump(session) if changed else int(await read_meta(session, "revision", "0"))
        return revision, changed

    async def _apply(self, session: AsyncSession, row: ServerRow, report: ReplicaReport) -> bool:
        """A report's state, capabilities and catalog on the server's row; whether it changed."""
        changed = row.state != report.state or row.error != report.error
        row.state, row.error = report.state, report.error
        # A server that is not connected keeps its last catalog: it returns as it was.
        if report.state == "connected":
            if (row.capabilities_json, row.instructions) != (report.capabilities_json, report.instructions):
                row.capabilities_json, row.instructions = report.capabilities_json, report.instructions
                changed = True
            current = (
                await session.scalars(
                    select(ItemRow).where(ItemRow.server == row.name).order_by(ItemRow.kind, ItemRow.position)
                )
            ).all()
            wanted = sorted(report.items, key=lambda i: i.kind)
            if [(r.kind, r.key, r.definition_json) for r in current] != [
                (i.kind, i.key, i.definition_json) for i in wanted
            ]:
                await session.execute(delete(ItemRow).where(ItemRow.server == row.name))
                session.add_all(
                    ItemRow(
                        server=row.name,
                        kind=item.kind,
                        key=item.key,
                        position=position,
                        definition_json=item.definition_json,
                    )
                    for position, item in enumerate(report.items)
                )
                changed = True
        return changed

    async def catalog(self) -> CatalogState:
        async with self.sessions() as session:
            revision = int(await read_meta(session, "revision", "0"))
            separator = await read_meta(session, "tool_separator", "_")
            servers = (await session.scalars(select(ServerRow).order_by(ServerRow.position))).all()
            items = (await session.scalars(select(ItemRow).order_by(ItemRow.server, ItemRow.position))).all()
            return CatalogState(
                revision=revision,
                separator=separator,
                servers=[self._stored(r) for r in servers],
                items=[StoredItem(i.server, i.kind, i.key, i.definition_json) for i in items],
                tools=ToolOffer.from_json(await read_meta(session, "tool_offer", "")),
            )


def _migrate(connection: Connection) -> None:
    """Bring the schema to the newest migration (the same ones for SQLite and PostgreSQL)."""
    if connection.dialect.name == "postgresql":
        # Registries starting together migrate one at a time; the lock ends with the transaction.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    config = alembic.config.Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    tables = set(inspect(connection).get_table_names())
    if "servers" in tables and "alembic_version" not in tables:
        # A registry from before migrations: its tables are those of the first one.
        alembic.command.stamp(config, "0001")
    alembic.command.upgrade(config, "head")


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def read_meta(session: AsyncSession, key: str, default: str) -> str:
    row = await session.get(MetaRow, key)
    return default if row is None else row.value


async def write_meta(session: AsyncSession, key: str, value: str) -> bool:
    row = await session.get(MetaRow, key)
    if row is None:
        session.add(MetaRow(key=key, value=value))
        return True
    if row.value == value:
        return False
    row.value = value
    return True


async def bump(session: AsyncSession) -> int:
    row = await session.get(MetaRow, "revision", with_for_update=True)
    if row is None:
        row = MetaRow(key="revision", value="0")
        session.add(row)
    revision = int(row.value) + 1
    row.value = str(revision)
    return revision
