"""Persistence of servers, their discovered tools and the revision counter (SQLAlchemy async).

Every write that changes what edges or connectors see bumps the revision in the same
transaction; a write that changes nothing leaves it alone, so repeated reports of an
unchanged catalog never wake the fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, delete, event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.registry.config import ClientConfig, GatewayConfig


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


class ToolRow(Base):
    __tablename__ = "tools"

    server: Mapped[str] = mapped_column(ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    definition_json: Mapped[str] = mapped_column(Text)


class MetaRow(Base):
    __tablename__ = "registry_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class UnknownServerError(LookupError):
    """A report or lookup named a server the registry does not hold."""


@dataclass(frozen=True, slots=True)
class StoredServer:
    config: ClientConfig
    state: str
    error: str


@dataclass(frozen=True, slots=True)
class StoredTool:
    server: str
    name: str
    definition_json: str


@dataclass(frozen=True, slots=True)
class CatalogState:
    revision: int
    separator: str
    servers: list[StoredServer]
    tools: list[StoredTool]


class RegistryStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, **engine_options: Any) -> RegistryStore:
        engine = create_async_engine(url, **engine_options)
        if engine.dialect.name == "sqlite":
            # SQLite ignores foreign keys (and so ON DELETE CASCADE) unless asked per connection.
            event.listen(engine.sync_engine, "connect", _sqlite_foreign_keys)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def revision(self) -> int:
        async with self._sessions() as session:
            return int(await _meta(session, "revision", "0"))

    async def apply_config(self, config: GatewayConfig) -> tuple[int, bool]:
        """Make the file-sourced servers exactly those of `config`; returns (revision, changed)."""
        wanted = {c.name: c for c in config.mcp.client_configs if not c.disabled}
        async with self._sessions.begin() as session:
            changed = await _set_meta(session, "tool_separator", config.mcpgw.tool_separator)
            rows = {r.name: r for r in (await session.scalars(select(ServerRow))).all()}
            for name, row in rows.items():
                if row.source == "file" and name not in wanted:
                    await session.delete(row)
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
                            config_json=config_json,
                            state="connecting",
                            error="",
                        )
                    )
                    changed = True
                elif existing.config_json != config_json or existing.position != position:
                    existing.config_json, existing.position = config_json, position
                    changed = True
            revision = await _bump(session) if changed else int(await _meta(session, "revision", "0"))
        return revision, changed

    async def servers(self) -> tuple[int, list[StoredServer]]:
        async with self._sessions() as session:
            revision = int(await _meta(session, "revision", "0"))
            rows = (await session.scalars(select(ServerRow).order_by(ServerRow.position))).all()
            return revision, [_stored(r) for r in rows]

    async def report_catalog(
        self, server: str, state: str, error: str, tools: list[tuple[str, str]]
    ) -> tuple[int, bool]:
        """Record a connector's view of `server`: its state and its (name, definition) tools."""
        async with self._sessions.begin() as session:
            row = await session.get(ServerRow, server)
            if row is None:
                raise UnknownServerError(server)
            changed = row.state != state or row.error != error
            row.state, row.error = state, error
            current = (
                await session.scalars(
                    select(ToolRow).where(ToolRow.server == server).order_by(ToolRow.position)
                )
            ).all()
            # A server that is not connected keeps its last catalog: it returns as it was.
            if state == "connected" and [(t.name, t.definition_json) for t in current] != tools:
                await session.execute(delete(ToolRow).where(ToolRow.server == server))
                session.add_all(
                    ToolRow(server=server, name=name, position=i, definition_json=definition)
                    for i, (name, definition) in enumerate(tools)
                )
                changed = True
            revision = await _bump(session) if changed else int(await _meta(session, "revision", "0"))
        return revision, changed

    async def catalog(self) -> CatalogState:
        async with self._sessions() as session:
            revision = int(await _meta(session, "revision", "0"))
            separator = await _meta(session, "tool_separator", "_")
            servers = (await session.scalars(select(ServerRow).order_by(ServerRow.position))).all()
            tools = (await session.scalars(select(ToolRow).order_by(ToolRow.server, ToolRow.position))).all()
            return CatalogState(
                revision=revision,
                separator=separator,
                servers=[_stored(r) for r in servers],
                tools=[StoredTool(t.server, t.name, t.definition_json) for t in tools],
            )


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _stored(row: ServerRow) -> StoredServer:
    return StoredServer(ClientConfig.model_validate_json(row.config_json), row.state, row.error)


async def _meta(session: AsyncSession, key: str, default: str) -> str:
    row = await session.get(MetaRow, key)
    return default if row is None else row.value


async def _set_meta(session: AsyncSession, key: str, value: str) -> bool:
    row = await session.get(MetaRow, key)
    if row is None:
        session.add(MetaRow(key=key, value=value))
        return True
    if row.value == value:
        return False
    row.value = value
    return True


async def _bump(session: AsyncSession) -> int:
    row = await session.get(MetaRow, "revision", with_for_update=True)
    if row is None:
        row = MetaRow(key="revision", value="0")
        session.add(row)
    revision = int(row.value) + 1
    row.value = str(revision)
    return revision
