"""What happens to a session after it starts, which its signed token cannot carry: its log
level, its resource subscriptions, and its end.

Kept in a JetStream KV bucket that every edge watches, so the edge holding a session's
stream knows what another edge was told. Keys are `<session>.level`,
`<session>.sub.<server and URI, base64url>`, `<session>.ended`, and
`task.<owner, base64url>.<server and task id, base64url>` for the tasks a session (or a
sessionless key) created. The bucket forgets them with the sessions' TTL; that expiry
sends watchers nothing, so each edge forgets what it learned after the same TTL too.
"""

from __future__ import annotations

import base64
import logging
import time

import anyio
import anyio.abc
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from services import bus
from services.edge.watching import BucketWatch

log = logging.getLogger(__name__)

BUCKET = "mcpgw-sessions"


def _subscription_key(session_id: str, server: str, uri: str) -> str:
    encoded = base64.urlsafe_b64encode(f"{server}\n{uri}".encode()).decode().rstrip("=")
    return f"{session_id}.sub.{encoded}"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def _task_key(owner: str, server: str, task_id: str) -> str:
    return f"task.{_b64(owner)}." + _b64(server + "\n" + task_id)


def _subscription(key: str) -> tuple[str, str, str] | None:
    session_id, _, rest = key.partition(".sub.")
    if not rest:
        return None
    server, _, uri = base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4)).decode().partition("\n")
    return session_id, server, uri


class SessionState:
    def __init__(self, nc: NATS, ttl_seconds: float, replicas: int = 1) -> None:
        self._nc = nc
        self._replicas = replicas
        self._ttl = ttl_seconds
        self._levels: dict[str, str] = {}
        self._ended: set[str] = set()
        self._subscribers: dict[tuple[str, str], set[str]] = {}
        # Tasks by (server, downstream task id): who created each, and each owner's tasks.
        self._task_owners: dict[tuple[str, str], str] = {}
        self._tasks: dict[str, set[tuple[str, str]]] = {}
        # When each key was last written, to forget it when the bucket does.
        self._written: dict[str, float] = {}
        self._watch = BucketWatch(BUCKET, self._open, self._follow, self._forget_expired)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open the bucket and apply what any edge writes to it, until cancelled; after NATS
        comes back (`reconnected`), open it again and watch anew from what it holds."""
        await self._watch.run(task_status=task_status)

    def reconnected(self) -> None:
        """NATS is back (it may have restarted without the bucket): open and watch it again."""
        self._watch.reconnected()

    async def _open(self) -> tuple[KeyValue, KeyValue.KeyWatcher]:
        kv = await self._open_bucket()
        return kv, await kv.watchall()

    async def _open_bucket(self) -> KeyValue:
        # On disk, so sessions ended with DELETE stay ended when NATS restarts.
        config = KeyValueConfig(
            bucket=BUCKET, ttl=self._ttl, storage=StorageType.FILE, history=1, replicas=self._replicas
        )
        js = self._nc.jetstream()
        try:
            return await bus.key_value(self._nc, config)
        except BadRequestError:
            # Made in memory by an earlier version: what it held is gone with any restart anyway.
            log.info("moving the %s bucket to file storage", BUCKET)
            await js.delete_key_value(BUCKET)
            return await js.create_key_value(config)

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None:
                self._apply(entry.key, entry.value, entry.operation in (KV_DEL, KV_PURGE))

    async def _forget_expired(self) -> None:
        """Drop what the bucket has expired by now (its TTL sends no delete to watchers)."""
        while True:
            await anyio.sleep(min(60.0, max(self._ttl / 10, 0.1)))
            horizon = time.monotonic() - self._ttl
            for key in [k for k, written in self._written.items() if written < horizon]:
                self._apply(key, None, True)

    def _apply(self, key: str, value: bytes | None, deleted: bool) -> None:
        if deleted:
            self._written.pop(key, None)
        else:
            self._written[key] = time.monotonic()
        if key.startswith("task."):
            self._apply_task(key, deleted)
            return
        if key.endswith(".ended"):
            session_id = key[: -len(".ended")]
            if deleted:
                self._ended.discard(session_id)
            else:
                self._ended.add(session_id)
            return
        if key.endswith(".level"):
            session_id = key[: -len(".level")]
            if deleted:
                self._levels.pop(session_id, None)
            elif value:
                self._levels[session_id] = value.decode()
            return
        subscription = _subscription(key)
        if subscription is None:
            return
        session_id, server, uri = subscription
        sessions = self._subscribers.setdefault((server, uri), set())
        if deleted:
            sessions.discard(session_id)
            if not sessions:
                del self._subscribers[(server, uri)]
        else:
            sessions.add(session_id)

    def _apply_task(self, key: str, deleted: bool) -> None:
        _, owner, task = key.split(".", 2)
        owner = _unb64(owner)
        server, _, task_id = _unb64(task).partition("\n")
        if deleted:
            self._task_owners.pop((server, task_id), None)
            owned = self._tasks.get(owner, set())
            owned.discard((server, task_id))
            if not owned:
                self._tasks.pop(owner, None)
        else:
            self._task_owners[(server, task_id)] = owner
            self._tasks.setdefault(owner, set()).add((server, task_id))

    async def add_task(self, owner: str, server: str, task_id: str) -> None:
        """Record who created a downstream's task (for tasks/list and status notifications)."""
        key = _task_key(owner, server, task_id)
        await self._bucket().put(key, b"1")
        self._apply(key, b"1", False)

    def task_owner(self, server: str, task_id: str) -> str | None:
        return self._task_owners.get((server, task_id))

    def tasks_of(self, owner: str) -> set[tuple[str, str]]:
        return self._tasks.get(owner, set())

    def _bucket(self) -> KeyValue:
        if self._watch.kv is None:
            raise RuntimeError("SessionState.run() first")
        return self._watch.kv

    def level(self, session_id: str) -> str | None:
        return self._levels.get(session_id)

    async def set_level(self, session_id: str, level: str) -> None:
        key = f"{session_id}.level"
        await self._bucket().put(key, level.encode())
        self._apply(key, level.encode(), False)

    def subscribers(self, server: str, uri: str) -> set[str]:
        return self._subscribers.get((server, uri), set())

    async def subscribe(self, session_id: str, server: str, uri: str) -> bool:
        """Record a session's subscription; whether it is new (the downstream must hear of it)."""
        if session_id in self.subscribers(server, uri):
            return False
        key = _subscription_key(session_id, server, uri)
        await self._bucket().put(key, b"1")
        self._apply(key, b"1", False)
        return True

    async def unsubscribe(self, session_id: str, server: str, uri: str) -> bool:
        """Drop a session's subscription; whether it had one (the downstream must hear of it)."""
        if session_id not in self.subscribers(server, uri):
            return False
        key = _subscription_key(session_id, server, uri)
        await self._bucket().delete(key)
        self._apply(key, None, True)
        return True

    def is_ended(self, session_id: str) -> bool:
        return session_id in self._ended

    async def end(self, session_id: str) -> list[tuple[str, str]]:
        """Mark a session ended for every edge (until the bucket's TTL, which outlives its
        token) and drop what it set; returns the (server, URI) it was subscribed to."""
        key = f"{session_id}.ended"
        await self._bucket().put(key, b"1")
        self._apply(key, b"1", False)
        subscriptions = [pair for pair, sessions in self._subscribers.items() if session_id in sessions]
        for server, uri in subscriptions:
            await self.unsubscribe(session_id, server, uri)
        if self._levels.pop(session_id, None) is not None:
            await self._bucket().delete(f"{session_id}.level")
        return subscriptions
