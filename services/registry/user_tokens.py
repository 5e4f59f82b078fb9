"""Each identity's OAuth grant for a per_user_oauth server (`Grant`, as JSON), sealed at rest.

Registry alone renews them (`access_tokens.py`); every write of one is a compare-and-set on
its stored version, none bumps the revision (it changes no snapshot), and a key or server
removed takes its tokens with it (ON DELETE CASCADE). The operator's grant for a server is
a kept secret, read and swapped the same way (key id "").
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from sqlalchemy import BigInteger, ForeignKey, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from services.registry.governance import KeyRow, MissingError
from services.registry.store import Base, RegistryStore, ServerRow, refresh_token_name

# Renew an access token this long before it expires, or at a tenth of a short lifetime.
REFRESH_MARGIN_SECONDS = 30.0
# How long a token that never expires is used before it is looked at again.
YEAR_SECONDS = 365 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Grant:
    """What an authorization left, as registry renewed it since: the refresh token (from a
    server that issues one), the latest access token, when it expires (0: never) and for how
    long it was issued."""

    refresh_token: str = ""
    access_token: str = ""
    expires_at: float = 0.0
    # When the person authorized (Unix seconds); renewals keep it.
    authorized_at: int = 0
    lifetime: float = 0.0
    # Until when a registry is refreshing it (Unix seconds): no other one does meanwhile.
    lease_until: float = 0.0

    def to_json(self) -> str:
        kept = {
            "authorized_at": self.authorized_at,
            "refresh_token": self.refresh_token,
            "access_token": self.access_token,
            "expires_at": self.expires_at,
            "lifetime": self.lifetime,
            "lease_until": self.lease_until,
        }
        return orjson.dumps({k: v for k, v in kept.items() if v}).decode()

    @classmethod
    def from_json(cls, text: str) -> Grant:
        """A grant as `to_json` wrote it; anything else is a bare refresh token (as kept before)."""
        if not text.startswith("{"):
            return cls(refresh_token=text)
        stored = orjson.loads(text)
        return cls(
            str(stored.get("refresh_token", "")),
            str(stored.get("access_token", "")),
            float(stored.get("expires_at", 0.0)),
            int(stored.get("authorized_at", 0)),
            float(stored.get("lifetime", 0.0)),
            float(stored.get("lease_until", 0.0)),
        )

    @classmethod
    def of(cls, tokens: dict[str, object], now: float | None = None) -> Grant | None:
        """The grant of a token endpoint's answer, or None when it holds no token."""
        now = time.time() if now is None else now
        return cls(authorized_at=int(now)).renewed(tokens, now)

    def renewed(self, tokens: dict[str, object], now: float) -> Grant | None:
        """This grant after a token endpoint's answer: its access token, and the refresh token
        it rotated to (or the one it keeps); None when the answer holds no token."""
        refresh, access, lifetime = (
            tokens.get("refresh_token"),
            tokens.get("access_token"),
            tokens.get("expires_in"),
        )
        refresh = refresh if isinstance(refresh, str) and refresh else self.refresh_token
        access = access if isinstance(access, str) else ""
        if not refresh and not access:
            return None
        seconds = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 0.0
        return Grant(refresh, access, now + seconds if seconds else 0.0, self.authorized_at, seconds)

    def refresh_in(self, now: float, stale: str = "") -> float:
        """How long its access token may still be handed out (0: renew it now): to a margin
        before it expires, or for a grant that cannot be renewed, to the end."""
        if not self.access_token or self.access_token == stale:
            return 0.0
        if not self.expires_at:
            return YEAR_SECONDS
        margin = min(REFRESH_MARGIN_SECONDS, self.lifetime / 10) if self.refresh_token else 0.0
        return max(0.0, self.expires_at - margin - now)


class UserTokenRow(Base):
    __tablename__ = "user_tokens"

    server: Mapped[str] = mapped_column(ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True)
    key_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("virtual_keys.id", ondelete="CASCADE"), primary_key=True
    )
    credential: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class UserTokens:
    def __init__(self, store: RegistryStore) -> None:
        self._store = store

    async def get(self, server: str, key_id: str) -> Grant | None:
        async with self._store.sessions() as session:
            row = await session.get(UserTokenRow, (server, key_id))
        return None if row is None else Grant.from_json(self._store.sealer.open(row.credential))

    async def put(self, server: str, key_id: str, grant: Grant) -> None:
        """Keep (or replace) an identity's grant; MissingError for an unknown key or server."""
        sealed = self._store.sealer.seal(grant.to_json())
        async with self._store.sessions.begin() as session:
            if await session.get(ServerRow, server) is None:
                raise MissingError(f"no server named {server!r}")
            if await session.get(KeyRow, key_id) is None:
                raise MissingError(f"no key with id {key_id!r}")
            row = await session.get(UserTokenRow, (server, key_id))
            if row is None:
                session.add(
                    UserTokenRow(server=server, key_id=key_id, credential=sealed, updated_at=int(time.time()))
                )
            else:
                row.credential, row.updated_at = sealed, int(time.time())

    async def read(self, server: str, key_id: str) -> tuple[Grant, str] | None:
        """A grant (key id "": the operator's) and its version, the sealed text as stored."""
        if not key_id:
            stored = await self._store.secret_version(refresh_token_name(server))
        else:
            async with self._store.sessions() as session:
                row = await session.get(UserTokenRow, (server, key_id))
            stored = None if row is None else row.credential
        return None if stored is None else (Grant.from_json(self._store.sealer.open(stored)), stored)

    async def swap(self, server: str, key_id: str, version: str, grant: Grant | None) -> str | None:
        """Replace a grant (None: drop it) only while it is still at `version`: its new
        version ("" when dropped), or None when another write came first."""
        if not key_id:
            return await self._store.swap_secret(
                refresh_token_name(server), version, None if grant is None else grant.to_json()
            )
        where = (
            UserTokenRow.server == server,
            UserTokenRow.key_id == key_id,
            UserTokenRow.credential == version,
        )
        sealed = "" if grant is None else self._store.sealer.seal(grant.to_json())
        async with self._store.sessions.begin() as session:
            if grant is None:
                done = await session.execute(delete(UserTokenRow).where(*where))
            else:
                done = await session.execute(
                    update(UserTokenRow).where(*where).values(credential=sealed, updated_at=int(time.time()))
                )
        return sealed if done.rowcount == 1 else None  # type: ignore[attr-defined]

    async def delete(self, server: str, key_id: str) -> bool:
        """Forget an identity's token; whether there was one."""
        async with self._store.sessions.begin() as session:
            row = await session.get(UserTokenRow, (server, key_id))
            if row is None:
                return False
            await session.delete(row)
            return True

    async def connected(self, key_id: str = "", server: str = "") -> list[tuple[str, str, int]]:
        """(server, key id, updated at) of every kept token, or of one key's, or one server's."""
        query = select(UserTokenRow.server, UserTokenRow.key_id, UserTokenRow.updated_at)
        if key_id:
            query = query.where(UserTokenRow.key_id == key_id)
        if server:
            query = query.where(UserTokenRow.server == server)
        async with self._store.sessions() as session:
            rows = (await session.execute(query.order_by(UserTokenRow.server, UserTokenRow.key_id))).all()
        return [(r.server, r.key_id, r.updated_at) for r in rows]
