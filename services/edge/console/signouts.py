"""Console sign-outs shared by every edge, so a cookie signed out on one replica is refused
on all: each sign-out is a key of one JetStream KV bucket, kept as long as a session lives,
and every edge watches the bucket (from its start, so a replica started later knows them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import anyio.abc
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from services import bus
from services.edge.console.session import SESSION_SECONDS
from services.edge.watching import BucketWatch

log = logging.getLogger(__name__)

BUCKET = "mcpgw-console-signouts"
# How long a sign-out's publish may take before the edge gives up on telling the others.
PUBLISH_SECONDS = 2.0

Ended = Callable[[str, int], None]


class SignOuts:
    """Publishes this edge's sign-outs and tells `ended(session id, expiry)` of every edge's."""

    def __init__(self, nc: NATS, replicas: int = 1) -> None:
        self._nc, self._replicas = nc, replicas
        self._ended: Ended | None = None
        self._watch = BucketWatch(BUCKET, self._open, self._follow)

    def tell(self, ended: Ended) -> None:
        """Who hears of each sign-out (the console's sessions)."""
        self._ended = ended

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the bucket until cancelled; after NATS comes back, watch it anew."""
        await self._watch.run(task_status=task_status)

    def reconnected(self) -> None:
        self._watch.reconnected()

    async def publish(self, session_id: str, expires_at: int) -> bool:
        """Tell every edge; False (logged) when NATS could not be told: the session is then
        signed out on this edge only, until it expires."""
        try:
            kv = self._watch.kv
            if kv is None:
                raise RuntimeError(f"the {BUCKET} bucket is not open")
            with anyio.fail_after(PUBLISH_SECONDS):
                await kv.put(session_id, str(expires_at).encode())
            return True
        except (NatsError, JetStreamError, RuntimeError, TimeoutError) as exc:
            log.warning("a console sign-out reached this edge only: %s", exc or type(exc).__name__)
            return False

    async def _open(self) -> tuple[KeyValue, KeyValue.KeyWatcher]:
        kv = await bus.key_value(
            self._nc,
            KeyValueConfig(
                bucket=BUCKET,
                storage=StorageType.FILE,
                history=1,
                ttl=float(SESSION_SECONDS),
                replicas=self._replicas,
            ),
        )
        return kv, await kv.watchall()

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None or entry.operation in (KV_DEL, KV_PURGE) or entry.value is None:
                continue
            expiry = entry.value.decode(errors="replace")
            if expiry.isdigit() and self._ended is not None:
                self._ended(entry.key, int(expiry))
