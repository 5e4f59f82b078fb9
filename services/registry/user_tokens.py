"""Each identity's OAuth refresh token for a per_user_oauth server, sealed at rest.

Connectors read a token when an identity's first call needs it and write back each
rotation; none of it bumps the revision (it changes no snapshot), and a key or server
removed takes its tokens with it (ON DELETE CASCADE).
"""

from __future__ import annotations

import time

from sqlalchemy import BigInteger, ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from services.registry.governance import KeyRow, MissingError
from services.registry.store import Base, RegistryStore, ServerRow


class UserTokenRow(Base):
    __tablename__ = "user_tokens"

    server: Mapped[str] = mapped_column(ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True)
    key_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("virtual_keys.id", ondelete="CASCADE"), primary_key=True
    )
    refresh_token: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class UserTokens:
    def __init__(self, store: RegistryStore) -> None:
        self._store = store

    async def get(self, server: str, key_id: str) -> str | None:
        async with self._store.sessions() as session:
            row = await session.get(UserTokenRow, (server, key_id))
        return None if row is None else self._store.sealer.open(row.refresh_token)

    async def put(self, server: str, key_id: str, refresh_token: str) -> None:
        """Keep (or replace) an identity's token; MissingError for an unknown key or server."""
        sealed = self._store.sealer.seal(refresh_token)
        async with self._store.sessions.begin() as session:
            if await session.get(ServerRow, server) is None:
                raise MissingError(f"no server named {server!r}")
            if await session.get(KeyRow, key_id) is None:
                raise MissingError(f"no key with id {key_id!r}")
            row = await session.get(UserTokenRow, (server, key_id))
            if row is None:
                session.add(
                    UserTokenRow(
                        server=server, key_id=key_id, refresh_token=sealed, updated_at=int(time.time())
                    )
                )
            else:
                row.refresh_token, row.updated_at = sealed, int(time.time())

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
