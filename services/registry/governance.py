"""Who may call what, persisted: virtual keys (hashed), tool groups, the global blocklist,
the require-key switch and tools switched off, each write bumping the revision.

Refusals are typed: `InvalidFieldError` names the field (the API's 422), `ConflictError`
a name in use (409), `MissingError` what is not there (404).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import orjson
from google.protobuf import json_format
from sqlalchemy import BigInteger, Boolean, ForeignKey, String, Text, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services import virtual_keys
from services.auth_modes import AUTH_MODES
from services.contracts import registry_pb2
from services.naming import server_name_problem
from services.registry.config import GatewayConfig, limits_message
from services.registry.store import Base, RegistryStore, ServerRow, bump, read_meta, write_meta
from services.selections import selection_dict, selection_message
from services.settings import ConfigurationError
from services.tool_modes import TOOL_MODES, tool_mode_name
from services.windows import Window

TOOL_NAME = re.compile(r"^[A-Za-z0-9_./:-]{1,128}$")
BLOCK_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}(\*)?$")


class InvalidFieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ConflictError(Exception):
    """A name already in use."""


class MissingError(LookupError):
    """No key, group, server or tool by that name."""


class KeyRow(Base):
    __tablename__ = "virtual_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    secret_prefix: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    rotated_at: Mapped[int] = mapped_column(BigInteger)
    mcp_configs_json: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    identities_json: Mapped[str] = mapped_column(Text, default="[]")
    # The key's Limits message as JSON ("{}": none).
    limits_json: Mapped[str] = mapped_column(Text, default="{}")
    # classic | code | search
    tool_mode: Mapped[str] = mapped_column(String(16), default="classic")


class GroupRow(Base):
    __tablename__ = "tool_groups"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    tools_json: Mapped[str] = mapped_column(Text)
    # The group's RequestLimit as JSON ("{}": none).
    rate_limit_json: Mapped[str] = mapped_column(Text, default="{}")
    tool_mode: Mapped[str] = mapped_column(String(16), default="classic")


class KeyGroupRow(Base):
    __tablename__ = "key_groups"

    key_id: Mapped[str] = mapped_column(ForeignKey("virtual_keys.id", ondelete="CASCADE"), primary_key=True)
    group_name: Mapped[str] = mapped_column(
        ForeignKey("tool_groups.name", ondelete="CASCADE"), primary_key=True
    )


class DisabledToolRow(Base):
    __tablename__ = "disabled_tools"

    server: Mapped[str] = mapped_column(ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True)
    tool: Mapped[str] = mapped_column(String(1024), primary_key=True)


def _selections_json(selections: Any) -> str:
    return orjson.dumps([selection_dict(s) for s in selections]).decode()


def _selections(text: str) -> list[registry_pb2.ToolSelection]:
    return [selection_message(s) for s in orjson.loads(text)]


async def _check_selections(session: AsyncSession, selections: Any, field: str) -> None:
    servers = set((await session.scalars(select(ServerRow.name))).all())
    for index, selection in enumerate(selections):
        if selection.mcp_client_name not in servers:
            raise InvalidFieldError(
                f"{field}[{index}].mcp_client_name", f"no server named {selection.mcp_client_name!r}"
            )
        for position, tool in enumerate(selection.tools_to_execute):
            if tool != "*" and not TOOL_NAME.match(tool):
                raise InvalidFieldError(
                    f"{field}[{index}].tools_to_execute[{position}]",
                    f'{tool!r} is neither a tool name nor "*"',
                )
        selected = set(selection.tools_to_execute)
        for position, tool in enumerate(selection.auto_execute.tools):
            # Bifrost's rule: what runs at once is among what may run.
            if tool not in selected and "*" not in selected:
                raise InvalidFieldError(
                    f"{field}[{index}].tools_to_auto_execute[{position}]",
                    f"{tool!r} is not in tools_to_execute",
                )


def _hashed(secret: str) -> tuple[str, str]:
    """What is stored of a secret: its hash, and the prefix people tell keys apart by."""
    return virtual_keys.digest(secret), virtual_keys.shown_prefix(secret)


def _key_message(row: KeyRow, groups: list[str], with_hash: bool = False) -> registry_pb2.VirtualKey:
    return registry_pb2.VirtualKey(
        id=row.id,
        name=row.name,
        description=row.description,
        active=row.active,
        expires_at=row.expires_at,
        mcp_configs=_selections(row.mcp_configs_json),
        groups=sorted(groups),
        secret_hash=row.secret_hash if with_hash else "",
        secret_prefix=row.secret_prefix,
        created_at=row.created_at,
        rotated_at=row.rotated_at,
        identities=orjson.loads(row.identities_json or "[]"),
        limits=json_format.Parse(row.limits_json or "{}", registry_pb2.Limits()),
        tool_mode=TOOL_MODES.get(row.tool_mode, registry_pb2.TOOL_MODE_CLASSIC),
    )


def _group_message(row: GroupRow) -> registry_pb2.ToolGroup:
    group = registry_pb2.ToolGroup(
        name=row.name,
        description=row.description,
        tools=_selections(row.tools_json),
        tool_mode=TOOL_MODES.get(row.tool_mode, registry_pb2.TOOL_MODE_CLASSIC),
    )
    if row.rate_limit_json and row.rate_limit_json != "{}":
        group.rate_limit.CopyFrom(json_format.Parse(row.rate_limit_json, registry_pb2.RequestLimit()))
    return group


def _limits_json(limits: registry_pb2.Limits | registry_pb2.RequestLimit) -> str:
    return json_format.MessageToJson(limits, indent=None, sort_keys=True)


def _check_request_limit(field: str, limit: registry_pb2.RequestLimit) -> None:
    if limit.max_requests < 1:
        raise InvalidFieldError(f"{field}.max_requests", "must be at least 1")
    try:
        Window.parse(limit.reset_duration)
    except ValueError as exc:
        raise InvalidFieldError(f"{field}.reset_duration", str(exc)) from None


def _check_limits(limits: registry_pb2.Limits) -> None:
    """Each window a reset duration, each number in range (InvalidFieldError naming it)."""
    requests = [("limits.rate_limit", limits.rate_limit)] if limits.HasField("rate_limit") else []
    requests += [(f"limits.tool_rate_limits[{t!r}]", r) for t, r in limits.tool_rate_limits.items()]
    for field, limit in requests:
        _check_request_limit(field, limit)
    if limits.HasField("budget"):
        if not 0 < limits.budget.max_limit < float("inf"):
            raise InvalidFieldError("limits.budget.max_limit", "must be a positive amount")
        try:
            Window.parse(limits.budget.reset_duration)
        except ValueError as exc:
            raise InvalidFieldError("limits.budget.reset_duration", str(exc)) from None
    for field in ("max_concurrency", "max_queue"):
        if getattr(limits, field) < 0:
            raise InvalidFieldError(f"limits.{field}", "must not be negative")


def _identities_json(identities: Any) -> str:
    return orjson.dumps(sorted({virtual_keys.identity(i) for i in identities})).decode()


class GovernanceStore:
    def __init__(self, store: RegistryStore) -> None:
        self._sessions = store.sessions

    # Keys

    async def create_key(
        self, spec: registry_pb2.VirtualKey, secret: str | None = None, source: str = "api"
    ) -> registry_pb2.IssuedKey:
        secret = secret or virtual_keys.mint()
        now = int(time.time())
        async with self._sessions.begin() as session:
            await self._check_key(session, spec, None)
            row = KeyRow(
                id=spec.id or f"vk-{secrets.token_hex(8)}",
                name=spec.name,
                description=spec.description,
                secret_hash=_hashed(secret)[0],
                secret_prefix=_hashed(secret)[1],
                active=spec.active,
                expires_at=spec.expires_at,
                created_at=now,
                rotated_at=now,
                mcp_configs_json=_selections_json(spec.mcp_configs),
                source=source,
                identities_json=_identities_json(spec.identities),
                limits_json=_limits_json(spec.limits),
                tool_mode=tool_mode_name(spec.tool_mode),
            )
            if await session.get(KeyRow, row.id) is not None:
                raise ConflictError(f"a key with id {row.id!r} exists")
            session.add(row)
            await session.flush()
            session.add_all(KeyGroupRow(key_id=row.id, group_name=g) for g in set(spec.groups))
            await bump(session)
            return registry_pb2.IssuedKey(key=_key_message(row, list(spec.groups)), secret=secret)

    async def update_key(
        self, spec: registry_pb2.VirtualKey, secret: str | None = None
    ) -> registry_pb2.VirtualKey:
        """Replace a key's policy and details; its secret stays unless one is given."""
        async with self._sessions.begin() as session:
            row = await session.get(KeyRow, spec.id)
            if row is None:
                raise MissingError(f"no key with id {spec.id!r}")
            await self._check_key(session, spec, row.id)
            row.name, row.description, row.active = spec.name, spec.description, spec.active
            row.expires_at, row.mcp_configs_json = spec.expires_at, _selections_json(spec.mcp_configs)
            row.identities_json = _identities_json(spec.identities)
            row.limits_json = _limits_json(spec.limits)
            row.tool_mode = tool_mode_name(spec.tool_mode)
            if secret is not None:
                row.secret_hash, row.secret_prefix = _hashed(secret)
            await session.execute(delete(KeyGroupRow).where(KeyGroupRow.key_id == row.id))
            session.add_all(KeyGroupRow(key_id=row.id, group_name=g) for g in set(spec.groups))
            await bump(session)
            return _key_message(row, list(spec.groups))

    async def rotate_key(self, key_id: str) -> registry_pb2.IssuedKey:
        """A new secret for a key, same policy; the old secret stops working."""
        secret = virtual_keys.mint()
        async with self._sessions.begin() as session:
            row = await session.get(KeyRow, key_id)
            if row is None:
                raise MissingError(f"no key with id {key_id!r}")
            row.secret_hash, row.secret_prefix = (
                virtual_keys.digest(secret),
                virtual_keys.shown_prefix(secret),
            )
            row.rotated_at = int(time.time())
            await bump(session)
            groups = await self._groups_of(session, row.id)
            return registry_pb2.IssuedKey(key=_key_message(row, groups), secret=secret)

    async def delete_key(self, key_id: str) -> int:
        return await self._delete(KeyRow, key_id, f"no key with id {key_id!r}")

    async def _delete(self, model: type[Base], key: str, missing: str) -> int:
        async with self._sessions.begin() as session:
            row = await session.get(model, key)
            if row is None:
                raise MissingError(missing)
            await session.delete(row)
            return await bump(session)

    async def keys(self, with_hash: bool = False) -> list[registry_pb2.VirtualKey]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(KeyRow).order_by(KeyRow.name))).all()
            links = (await session.execute(select(KeyGroupRow.key_id, KeyGroupRow.group_name))).all()
            groups: dict[str, list[str]] = {}
            for key_id, group in links:
                groups.setdefault(key_id, []).append(group)
            return [_key_message(r, groups.get(r.id, []), with_hash) for r in rows]

    async def _check_key(
        self, session: AsyncSession, spec: registry_pb2.VirtualKey, own_id: str | None
    ) -> None:
        if not 1 <= len(spec.name) <= 128:
            raise InvalidFieldError("name", "must be 1 to 128 characters")
        if spec.expires_at < 0:
            raise InvalidFieldError("expires_at", "must be a Unix time, or 0 for never")
        named = await session.scalar(select(KeyRow).where(KeyRow.name == spec.name))
        if named is not None and named.id != own_id:
            raise ConflictError(f"a key named {spec.name!r} exists")
        await _check_selections(session, spec.mcp_configs, "mcp_configs")
        known = set((await session.scalars(select(GroupRow.name))).all())
        for index, group in enumerate(spec.groups):
            if group not in known:
                raise InvalidFieldError(f"groups[{index}]", f"no tool group named {group!r}")
        await self._check_identities(session, spec.identities, own_id)
        _check_limits(spec.limits)

    @staticmethod
    async def _check_identities(session: AsyncSession, identities: Any, own_id: str | None) -> None:
        """Each identity well formed and no other key's: one sign-in maps to one key."""
        for index, text in enumerate(identities):
            problem = virtual_keys.identity_problem(text)
            if problem:
                raise InvalidFieldError(f"identities[{index}]", problem)
        wanted = {virtual_keys.identity(i) for i in identities}
        if not wanted:
            return
        rows = await session.execute(select(KeyRow.id, KeyRow.name, KeyRow.identities_json))
        for key_id, name, text in rows.all():
            taken = wanted.intersection(orjson.loads(text or "[]"))
            if key_id != own_id and taken:
                raise ConflictError(f"the identity {min(taken)!r} belongs to the key {name!r}")

    @staticmethod
    async def _groups_of(session: AsyncSession, key_id: str) -> list[str]:
        rows = await session.scalars(select(KeyGroupRow.group_name).where(KeyGroupRow.key_id == key_id))
        return list(rows.all())

    # Groups

    async def put_group(self, group: registry_pb2.ToolGroup, create: bool) -> registry_pb2.ToolGroup:
        async with self._sessions.begin() as session:
            problem = server_name_problem(group.name, await read_meta(session, "tool_separator", "_"))
            if problem:
                raise InvalidFieldError("name", problem)
            if await session.get(ServerRow, group.name) is not None:
                raise ConflictError(
                    f"{group.name!r} names a server; /mcp/{{name}} serves both, so it is taken"
                )
            await _check_selections(session, group.tools, "tools")
            if group.HasField("rate_limit"):
                _check_request_limit("rate_limit", group.rate_limit)
            row = await session.get(GroupRow, group.name)
            if create and row is not None:
                raise ConflictError(f"a tool group named {group.name!r} exists")
            if not create and row is None:
                raise MissingError(f"no tool group named {group.name!r}")
            if row is None:
                row = GroupRow(name=group.name)
                session.add(row)
            row.description, row.tools_json = group.description, _selections_json(group.tools)
            row.rate_limit_json = _limits_json(group.rate_limit) if group.HasField("rate_limit") else "{}"
            row.tool_mode = tool_mode_name(group.tool_mode)
            await bump(session)
            return group

    async def delete_group(self, name: str) -> int:
        return await self._delete(GroupRow, name, f"no tool group named {name!r}")

    async def groups(self) -> list[registry_pb2.ToolGroup]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(GroupRow).order_by(GroupRow.name))).all()
            return [_group_message(r) for r in rows]

    # Blocklist, settings, tools switched off

    async def set_blocklist(self, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            if not BLOCK_PATTERN.match(pattern):
                raise InvalidFieldError(
                    f"patterns[{index}]", f"{pattern!r} is neither an exposed tool name nor <server><sep>*"
                )
        unique = sorted(set(patterns))
        async with self._sessions.begin() as session:
            if await write_meta(session, "blocklist", orjson.dumps(unique).decode()):
                await bump(session)
        return unique

    async def blocklist(self) -> list[str]:
        async with self._sessions() as session:
            return list(orjson.loads(await read_meta(session, "blocklist", "[]")))

    async def set_settings(
        self, settings: registry_pb2.GovernanceSettings
    ) -> registry_pb2.GovernanceSettings:
        async with self._sessions.begin() as session:
            changed = await write_meta(session, "require_key", "1" if settings.require_key else "0")
            mode = registry_pb2.AuthMode.Name(settings.auth_mode)
            if await write_meta(session, "auth_mode", mode) or changed:
                await bump(session)
        return settings

    async def settings(self) -> registry_pb2.GovernanceSettings:
        async with self._sessions() as session:
            mode = await read_meta(session, "auth_mode", "AUTH_MODE_UNSPECIFIED")
            return registry_pb2.GovernanceSettings(
                require_key=await read_meta(session, "require_key", "0") == "1",
                auth_mode=registry_pb2.AuthMode.Value(mode),
            )

    async def set_tool_enabled(self, server: str, tool: str, enabled: bool) -> int:
        async with self._sessions.begin() as session:
            if await session.get(ServerRow, server) is None:
                raise MissingError(f"no server named {server!r}")
            row = await session.get(DisabledToolRow, (server, tool))
            if enabled and row is not None:
                await session.delete(row)
            elif not enabled and row is None:
                session.add(DisabledToolRow(server=server, tool=tool))
            else:
                return int(await read_meta(session, "revision", "0"))
            return await bump(session)

    async def disabled_tools(self) -> set[tuple[str, str]]:
        async with self._sessions() as session:
            return {(r.server, r.tool) for r in (await session.scalars(select(DisabledToolRow))).all()}

    async def apply_config(self, config: GatewayConfig) -> None:
        """Make the file's keys exactly the file-sourced keys, and its switch the setting."""
        wanted = {k.id or f"file-{k.name}": k for k in config.governance.virtual_keys}
        for index, (key_id, key) in enumerate(wanted.items()):
            spec = registry_pb2.VirtualKey(
                id=key_id,
                name=key.name,
                description=key.description,
                active=key.is_active,
                mcp_configs=[selection_message(c.model_dump()) for c in key.mcp_configs],
                identities=key.identities,
                limits=limits_message(key, key.budget),
                tool_mode=TOOL_MODES[key.tool_mode],
            )
            try:
                await self._put_file_key(spec, key.value)
            except (InvalidFieldError, ConflictError) as exc:
                raise ConfigurationError(f"governance.virtual_keys[{index}]: {exc}") from None
        async with self._sessions.begin() as session:
            stale = (
                await session.scalars(select(KeyRow).where(KeyRow.source == "file", KeyRow.id.not_in(wanted)))
            ).all()
            for row in stale:
                await session.delete(row)
            if stale:
                await bump(session)
        mode = config.client.mcp_server_auth_mode
        if config.require_key is not None or mode is not None:
            settings = await self.settings()
            if config.require_key is not None:
                settings.require_key = config.require_key
            if mode is not None:
                settings.auth_mode = AUTH_MODES[mode]
            await self.set_settings(settings)

    async def _put_file_key(self, spec: registry_pb2.VirtualKey, secret: str) -> None:
        async with self._sessions() as session:
            row = await session.get(KeyRow, spec.id)
        if row is None:
            await self.create_key(spec, secret, source="file")
            return
        wanted = (
            spec.name,
            spec.description,
            spec.active,
            _selections_json(spec.mcp_configs),
            _identities_json(spec.identities),
            _limits_json(spec.limits),
            tool_mode_name(spec.tool_mode),
        )
        stored = (
            row.name,
            row.description,
            row.active,
            row.mcp_configs_json,
            row.identities_json,
            row.limits_json,
            row.tool_mode,
        )
        if wanted != stored or (row.secret_hash != virtual_keys.digest(secret)):
            await self.update_key(spec, secret)

    async def governance(self) -> registry_pb2.Governance:
        """Everything edges enforce, secrets as hashes."""
        return registry_pb2.Governance(
            settings=await self.settings(),
            keys=await self.keys(with_hash=True),
            groups=await self.groups(),
            blocklist=await self.blocklist(),
        )
