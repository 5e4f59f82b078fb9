"""What an authorization flow leaves behind, shared by every edge through one JetStream KV
bucket: registered clients, pending authorizations, codes, refresh tokens and revoked grants.

Keys are `client.<id>`, `request.<id>`, `code.<sha256>`, `refresh.<sha256>` and
`revoked.<grant id>`; each but a client's lives only as long as it is good for (per-message
TTLs). Codes and refresh tokens are found by their hash, never stored as such; a client's
secret is sealed (AES-GCM, keyed from the shared session secret). Every edge watches
`revoked.>`, so a revoked grant's access tokens stop working everywhere at once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
from typing import Any

import anyio
import anyio.abc
import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from mcp.shared.auth import OAuthClientInformationFull
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from services import bus
from services.edge.watching import BucketWatch

log = logging.getLogger(__name__)

BUCKET = "mcpgw-oauth"
# How long a person has to consent, and a client to redeem its code.
FLOW_SECONDS = 600.0
SEALED = "sealed:"
# JetStream's codes for a write whose expected last revision was not the last.
WRONG_LAST_SEQUENCE = (10071, 10164)


def token_hash(token: str) -> str:
    """How a code or refresh token is found: its SHA-256 (they carry 256 random bits)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Sealer:
    """AES-GCM over client secrets, keyed from the secret every edge shares."""

    def __init__(self, secret: str) -> None:
        seed = secret.encode() if secret else secrets.token_bytes(32)
        self._aead = AESGCM(hmac.new(seed, b"mcpgw oauth client secrets v1", hashlib.sha256).digest())

    def seal(self, text: str) -> str:
        nonce = os.urandom(12)
        return (
            SEALED + base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, text.encode(), None)).decode()
        )

    def open(self, sealed: str) -> str:
        raw = base64.urlsafe_b64decode(sealed[len(SEALED) :])
        return self._aead.decrypt(raw[:12], raw[12:], None).decode()


class OAuthState:
    def __init__(
        self,
        nc: NATS,
        sealer: Sealer,
        access_ttl_seconds: float,
        refresh_ttl_seconds: float,
        replicas: int = 1,
    ) -> None:
        self._nc = nc
        self._replicas = replicas
        self._sealer = sealer
        self._access_ttl = access_ttl_seconds
        self.refresh_ttl_seconds = refresh_ttl_seconds
        # Revoked grants, until their access tokens would have expired anyway.
        self._revoked: dict[str, float] = {}
        self._watch = BucketWatch(BUCKET, self._open, self._follow, self._forget_expired)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open the bucket and follow revocations until cancelled; after NATS comes back
        (`reconnected`), open it again and watch anew."""
        await self._watch.run(task_status=task_status)

    def reconnected(self) -> None:
        self._watch.reconnected()

    async def _open(self) -> tuple[KeyValue, KeyValue.KeyWatcher]:
        kv = await bus.key_value(
            self._nc,
            KeyValueConfig(bucket=BUCKET, storage=StorageType.FILE, history=1, replicas=self._replicas),
        )
        return kv, await kv.watch("revoked.>")

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None and entry.operation not in (KV_DEL, KV_PURGE):
                self._revoked[entry.key[len("revoked.") :]] = time.monotonic()

    async def _forget_expired(self) -> None:
        while True:
            await anyio.sleep(min(60.0, self._access_ttl))
            horizon = time.monotonic() - self._access_ttl - 60
            for grant in [g for g, at in self._revoked.items() if at < horizon]:
                del self._revoked[grant]

    def is_revoked(self, grant_id: str) -> bool:
        return grant_id in self._revoked

    @property
    def kv(self) -> KeyValue:
        if self._watch.kv is None:
            raise RuntimeError("the OAuth state is not open yet")
        return self._watch.kv

    async def _get(self, key: str) -> tuple[dict[str, Any], int] | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return orjson.loads(entry.value), entry.revision

    # Clients (Dynamic Client Registration).

    async def put_client(self, client: OAuthClientInformationFull) -> None:
        record = client.model_dump(mode="json", exclude_none=True)
        if client.client_secret:
            record["client_secret"] = self._sealer.seal(client.client_secret)
        await self.kv.put(f"client.{_key(client.client_id or '')}", orjson.dumps(record))

    async def client(self, client_id: str) -> OAuthClientInformationFull | None:
        found = await self._get(f"client.{_key(client_id)}")
        if found is None:
            return None
        record = found[0]
        if str(record.get("client_secret", "")).startswith(SEALED):
            record["client_secret"] = self._sealer.open(record["client_secret"])
        return OAuthClientInformationFull.model_validate(record)

    # Authorizations waiting for consent, and the codes consent yields.

    async def put_request(self, record: dict[str, Any]) -> str:
        request_id = secrets.token_urlsafe(24)
        await self.kv.create(f"request.{request_id}", orjson.dumps(record), msg_ttl=FLOW_SECONDS)
        return request_id

    async def request(self, request_id: str) -> dict[str, Any] | None:
        if not _valid_key(request_id):
            return None
        found = await self._get(f"request.{request_id}")
        return None if found is None else found[0]

    async def take_request(self, request_id: str) -> dict[str, Any] | None:
        """The pending authorization, removed: consent is given (or refused) once."""
        return await self._take(f"request.{request_id}") if _valid_key(request_id) else None

    async def put_code(self, code: str, record: dict[str, Any]) -> None:
        await self.kv.create(f"code.{token_hash(code)}", orjson.dumps(record), msg_ttl=FLOW_SECONDS)

    async def code(self, code: str) -> dict[str, Any] | None:
        found = await self._get(f"code.{token_hash(code)}")
        return None if found is None else found[0]

    async def take_code(self, code: str) -> dict[str, Any] | None:
        """The code's record, removed so that no other edge redeems it too; None when gone."""
        return await self._take(f"code.{token_hash(code)}")

    # Grants: their refresh tokens, rotated on every use, and their revocation.

    async def put_refresh(self, token: str, record: dict[str, Any]) -> None:
        ttl = max(1.0, record["expires_at"] - time.time())
        await self.kv.create(f"refresh.{token_hash(token)}", orjson.dumps(record), msg_ttl=ttl)

    async def refresh(self, token: str) -> dict[str, Any] | None:
        found = await self._get(f"refresh.{token_hash(token)}")
        return None if found is None else found[0]

    async def rotate(self, old: str, new: str, record: dict[str, Any]) -> bool:
        """Replace refresh token `old` by `new`; False when `old` was used already, and then
        its grant is revoked (a refresh token presented twice was stolen or replayed)."""
        current = await self._take(f"refresh.{token_hash(old)}")
        if current is None:
            await self.replayed(old)
            return False
        # The old token's hash stays, marked, for as long as the token would have lived.
        ttl = max(1.0, float(current["expires_at"]) - time.time())
        marker = orjson.dumps({"grant_id": current["grant_id"]})
        await self._create(f"rotated.{token_hash(old)}", marker, ttl)
        await self.put_refresh(new, record)
        return True

    async def replayed(self, token: str) -> None:
        """A refresh token that is no longer good was presented: if it was rotated away, its
        grant ends (it was stolen or replayed), as OAuth 2.1 asks of public clients."""
        used = await self._get(f"rotated.{token_hash(token)}")
        if used is not None:
            log.warning("a rotated refresh token was presented again: grant revoked")
            await self.revoke(str(used[0]["grant_id"]))

    async def revoke(self, grant_id: str) -> None:
        """End a grant: its access tokens on every edge at once, its refresh token for good."""
        if _valid_key(grant_id):
            await self._create(f"revoked.{grant_id}", b"1", self.refresh_ttl_seconds)

    async def grant_revoked(self, grant_id: str) -> bool:
        """Whether a grant was revoked, as the bucket says (a refresh may come days later)."""
        return grant_id in self._revoked or await self._get(f"revoked.{grant_id}") is not None

    async def _create(self, key: str, value: bytes, ttl: float) -> None:
        # There already (revoked or marked before) is as good as written.
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.kv.create(key, value, msg_ttl=ttl)

    async def _take(self, key: str) -> dict[str, Any] | None:
        found = await self._get(key)
        if found is None:
            return None
        record, revision = found
        try:
            await self.kv.delete(key, last=revision)
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                return None  # another edge took it first
            raise
        return record


def _key(text: str) -> str:
    """Any text as a KV key token (base64url without padding)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=") or "-"


def _valid_key(token: str) -> bool:
    return 0 < len(token) <= 200 and all(c.isalnum() or c in "-_" for c in token)
