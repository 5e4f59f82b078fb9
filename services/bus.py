"""The NATS bus: subject names, the audit stream, and connecting with the right options."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

REGISTRY_CHANGED = "mcpgw.registry.changed"
# A server name: reconnect it now (the admin API's POST /api/mcp/client/{name}/reconnect).
SERVER_RECONNECT = "mcpgw.servers.reconnect"
# {"server", "key_id"}: an identity's token for a per_user_oauth server is gone (disconnected,
# or its key deleted): connectors close that identity's session with it.
USER_DISCONNECTED = "mcpgw.servers.user_disconnected"
# {"server", "key_id"}: an identity connected its account: edges tell its sessions that the
# URL elicitation asking for it is complete.
USER_CONNECTED = "mcpgw.servers.user_connected"
# {"server", "uri"}: a downstream said one of its resources changed (core NATS, every edge).
RESOURCE_UPDATED = "mcpgw.resources.updated"
# A downstream's notifications/tasks/status: {"server", "params"}; the edge holding the
# task owner's stream tells it.
TASK_STATUS = "mcpgw.tasks.status"
# An operator's decision on a call waiting for approval: {"id", "approve"}; the edge
# holding the call resolves it.
APPROVAL_DECIDED = "mcpgw.approvals.decided"
AUDIT_STREAM = "MCPGW_AUDIT"
AUDIT_SUBJECTS = "mcpgw.audit.>"
TOOL_CALL_SUBJECT = "mcpgw.audit.toolcalls"
EVENTS_STREAM = "MCPGW_EVENTS"
EVENTS_SUBJECTS = "mcpgw.events.>"
# JetStream drops a republished event whose Nats-Msg-Id it saw within this window.
DEDUPE_WINDOW_SECONDS = 120.0
AUDIT_RETENTION_SECONDS = 7 * 24 * 3600.0
RETRY_FIRST_SECONDS = 0.25
RETRY_MOST_SECONDS = 5.0

T = TypeVar("T")


class BusUnavailableError(ConnectionError):
    """NATS could not be reached within the start-up deadline."""


def servers(url: str) -> list[str]:
    """The nodes of a comma-separated MCPGW_NATS_URL: a client fails over between them."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise BusUnavailableError("no NATS server given: MCPGW_NATS_URL is empty")
    return found


async def connect(
    url: str,
    name: str,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    deadline_seconds: float = 30.0,
) -> NATS:
    """Connect to NATS, trying until the deadline; once connected, nats-py reconnects forever."""

    async def error_cb(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    async def disconnected_cb() -> None:
        log.warning("nats: disconnected from %s", url)

    async def reconnected_cb() -> None:
        log.info("nats: reconnected")
        if on_reconnect is not None:
            await on_reconnect()

    last: Exception | None = None
    with anyio.move_on_after(deadline_seconds):
        while True:
            try:
                return await nats.connect(
                    servers(url),
                    name=name,
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=error_cb,
                    disconnected_cb=disconnected_cb,
                    reconnected_cb=reconnected_cb,
                )
            except Exception as exc:  # nats-py raises several unrelated types here
                last = exc
                await anyio.sleep(0.25)
    raise BusUnavailableError(f"cannot reach NATS at {url} within {deadline_seconds:.0f}s: {last}")


async def ensure_audit_stream(nc: NATS, replicas: int = 1) -> None:
    """Create the audit stream on `replicas` nodes, or leave the existing one as it is."""
    await _ensure_stream(
        nc,
        StreamConfig(
            name=AUDIT_STREAM,
            num_replicas=replicas,
            subjects=[AUDIT_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=AUDIT_RETENTION_SECONDS,
            duplicate_window=DEDUPE_WINDOW_SECONDS,
        ),
    )


async def ensure_events_stream(
    nc: NATS, retention_seconds: float, retention_bytes: int, replicas: int = 1
) -> None:
    """Create the stream that keeps SSE answers' events for resumption, or leave it be."""
    await _ensure_stream(
        nc,
        StreamConfig(
            name=EVENTS_STREAM,
            num_replicas=replicas,
            subjects=[EVENTS_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            # Short-lived and re-creatable: memory is enough, and it keeps the hot path off disk.
            storage=StorageType.MEMORY,
            max_age=retention_seconds,
            # Bounded in size too: a busy edge would otherwise hold every event of the last
            # ten minutes in NATS's memory (a soak of 250,000 streamed calls grew it by 357 MiB).
            max_bytes=retention_bytes,
            discard=DiscardPolicy.OLD,
        ),
    )


async def _ensure_stream(nc: NATS, config: StreamConfig) -> None:
    try:
        await nc.jetstream().add_stream(config)
    except BadRequestError as exc:
        # Another process created it first with other limits: keep theirs, but not fewer
        # replicas than asked for (MCPGW_NATS_REPLICAS raised on a running cluster).
        log.debug("stream %s exists: %s", config.name, exc)
        js = nc.jetstream()
        await _replicate(js, await js.stream_info(str(config.name)), config.num_replicas or 1)


async def key_value(nc: NATS, config: KeyValueConfig) -> KeyValue:
    """The bucket, created as `config` says, or as it exists with its replicas raised to
    `config.replicas`; BadRequestError when it exists in a shape that cannot change."""
    js = nc.jetstream()
    try:
        return await js.create_key_value(config)
    except BadRequestError:
        info = await js.stream_info(f"KV_{config.bucket}")
        if info.config.storage != config.storage:
            raise
        await _replicate(js, info, config.replicas or 1)
        return await js.key_value(config.bucket)


async def _replicate(js: JetStreamContext, info: StreamInfo, replicas: int) -> None:
    """Raise the stream's replicas to `replicas` (never lower them)."""
    if (info.config.num_replicas or 1) < replicas:
        info.config.num_replicas = replicas
        await js.update_stream(info.config)
        log.info("stream %s now kept on %d nodes", info.config.name, replicas)


async def retrying(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()` until it succeeds, pausing longer after each failure: JetStream is away
    or electing a leader (a node died) for a while, not for good. A bad request (a shape
    that cannot change) is raised at once."""
    pause = RETRY_FIRST_SECONDS
    while True:
        try:
            return await attempt()
        except BadRequestError:
            raise
        except (NatsError, TimeoutError) as exc:
            log.warning("%s failed, trying again in %.2fs: %r", what, pause, exc)
        await anyio.sleep(pause)
        pause = min(pause * 2, RETRY_MOST_SECONDS)


class ChangeSignal:
    """A level-triggered wakeup: any number of `set()`s before `wait()` returns wake it once."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def on_message(self, _msg: object) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Return when set, or after `timeout` seconds: the poll that covers a missed message."""
        with anyio.move_on_after(timeout):
            await self._event.wait()
        self._event = anyio.Event()
