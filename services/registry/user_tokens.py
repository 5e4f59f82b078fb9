"""Each identity's OAuth grant for a per_user_oauth server (`Grant`, as JSON), sealed at rest.

Connectors read a token when an identity's first call needs it and write back each
rotation; none of it bumps the revision (it changes no snapshot), and a key or server
removed takes its tokens with it (ON DELETE CASCADE).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from sqlalchemy import BigInteger, ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from services.registry.governance import KeyRow, MissingError
from services.registry.store import Base, RegistryStore, ServerRow


@dataclass(frozen=True, slots=True)
class Grant:
    """What an authorization left: a refresh token, or (from a server that issues none) the
    access token itself and when it expires (0: never)."""

    refresh_token: str = ""
    access_token: str = ""
    expires_at: float = 0.0
    # When the person authorized (Unix seconds); rotations keep it.
    authorized_at: int = 0

    def to_json(self) -> str:
        kept: dict[str, object] = {"authorized_at": self.authorized_at}
        if self.refresh_token:
            kept["refresh_token"] = self.refresh_token
        else:
            kept.update(access_token=self.access_token, expires_at=self.expires_at)
        return orjson.dumps(kept).decode()

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
        )

    @classmethod
    def of(cls, tokens: dict[str, object]) -> Grant | None:
        """The grant of a token endpoint's answer, or None when it holds no token."""
        refresh, access, lifetime = (
            tokens.get("refresh_token"),
            tokens.get("access_token"),
            tokens.get("expires_in"),
        )
        now = int(time.time())
        if isinstance(refresh, str) and refresh:
            return cls(refresh_token=refresh, authorized_at=now)
        if isinstance(access, str) and access:
            expires = time.time() + lifetime if isinstance(lifetime, int | float) and lifetime > 0 else 0.0
            return cls(access_token=access, expires_at=expires, authorized_at=now)
        return None


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
