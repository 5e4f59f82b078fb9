"""The long-lived streams this edge holds for server-to-client notifications: the GET
streams of session clients, the 2024-11-05 SSE streams and the `subscriptions/listen`
streams of 2026-07-28 clients."""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import logging
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.naming import exposed_uri

log = logging.getLogger(__name__)

STREAM_BUFFER = 64
# Memory is handed back once half of at least this many streams have closed.
RELEASE_AFTER_STREAMS = 64
LIST_KINDS = frozenset({"tools", "prompts", "resources"})


class Outbox:
    """One stream's messages on their way out, at most `size`. Whoever writes them is called
    on each put, so nothing waits on an idle stream (a task per stream costs it 5 KiB)."""

    __slots__ = ("_messages", "_ready", "_room", "_size", "closed")

    def __init__(self, size: int = STREAM_BUFFER) -> None:
        # Made on the first put: an empty deque is 760 bytes, and most streams are idle.
        self._messages: collections.deque[bytes] | None = None
        self._size = size
        self._ready: Callable[[], None] | None = None
        self._room: asyncio.Event | None = None
        # No more puts: the edge ended the stream (what is queued still goes) or its client left.
        self.closed = False

    def offer(self, message: bytes) -> bool:
        """Queue `message` unless the outbox is full or closed; whether it was queued."""
        if self._messages is None:
            self._messages = collections.deque()
        if self.closed or len(self._messages) >= self._size:
            return False
        self._messages.append(message)
        if self._ready is not None:
            self._ready()
        return True

    async def put(self, message: bytes) -> bool:
        """Queue `message` once there is room (an answer must not be dropped); False once closed."""
        while not self.closed and self._messages is not None and len(self._messages) >= self._size:
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()
        return self.offer(message)

    def take(self) -> bytes | None:
        """The oldest message, or None."""
        if not self._messages:
            return None
        message = self._messages.popleft()
        self._made_room()
        return message

    def close(self) -> None:
        self.closed = True
        self._made_room()
        if self._ready is not None:
            self._ready()

    def on_ready(self, ready: Callable[[], None] | None) -> None:
        """Call `ready` on every put and on close from now on (and now, if there is news)."""
        self._ready = ready
        if ready is not None and (self._messages or self.closed):
            ready()

    def _made_room(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None


@dataclass(eq=False, slots=True)
class Stream:
    session_id: str
    # The server or group of /mcp/{name} the stream was opened on; "" for /mcp.
    endpoint: str
    outbox: Outbox = field(default_factory=Outbox)
    # The list_changed kinds the stream wants, and what every notification's params._meta
    # carries (a listen stream's subscription id).
    kinds: frozenset[str] = LIST_KINDS
    meta: dict[str, Any] | None = None
    # The (server, URI) resources a listen stream asked to hear about; session streams'
    # subscriptions live in SessionState.
    resources: frozenset[tuple[str, str]] = frozenset()
    # The virtual key the stream was opened with ("" for none): its view decides what changed.
    key_id: str = ""
    # Whether its session declared URL elicitation (and so may await one's completion).
    url_elicitation: bool = False

    def offer(self, message: bytes) -> bool:
        """Queue a notification unless the stream is full or gone; whether it was queued."""
        if self.outbox.offer(message):
            return True
        if not self.outbox.closed:
            # A client that stopped reading loses this notification, not the edge its memory.
            log.warning("stream of session %s is full; notification dropped", self.session_id)
        return False

    def notification(self, method: str, params: dict[str, Any] | None = None) -> bytes:
        if self.meta is not None:
            params = {**(params or {}), "_meta": self.meta}
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        return orjson.dumps(message)


def _release_free_memory() -> None:
    """Hand the heap a burst of streams freed back to the OS: glibc keeps freed memory for
    reuse, so without this the edge's RSS stays at its peak long after the streams close."""
    gc.collect()
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class StreamHub:
    def __init__(self) -> None:
        self._streams: dict[str, set[Stream]] = {}
        # Streams open now, and the most since memory was last released.
        self._open = 0
        self._peak = 0

    def open(
        self,
        session_id: str,
        endpoint: str,
        *,
        kinds: frozenset[str] = LIST_KINDS,
        meta: dict[str, Any] | None = None,
        resources: frozenset[tuple[str, str]] = frozenset(),
        key_id: str = "",
        url_elicitation: bool = False,
    ) -> Stream:
        stream = Stream(
            session_id,
            endpoint,
            kinds=kinds,
            meta=meta,
            resources=resources,
            key_id=key_id,
            url_elicitation=url_elicitation,
        )
        self._streams.setdefault(session_id, set()).add(stream)
        self._open += 1
        self._peak = max(self._peak, self._open)
        return stream

    def close(self, stream: Stream) -> None:
        streams = self._streams.get(stream.session_id)
        if streams is not None and stream in streams:
            streams.discard(stream)
            if not streams:
                del self._streams[stream.session_id]
            self._closed(1)
        stream.outbox.close()

    def end(self, session_id: str) -> None:
        """Close every stream of an ended session."""
        streams = self._streams.pop(session_id, set())
        for stream in streams:
            stream.outbox.close()
        self._closed(len(streams))

    def _closed(self, count: int) -> None:
        self._open -= count
        # Once most of a burst of streams is gone (not on every close: a collection costs).
        if self._peak >= RELEASE_AFTER_STREAMS and self._open <= self._peak // 2:
            _release_free_memory()
            self._peak = self._open

    def close_all(self) -> None:
        for session_id in list(self._streams):
            self.end(session_id)

    def list_changed(self, changed: Callable[[str, str], Collection[str] | None]) -> int:
        """Tell every stream which lists of its view (endpoint and key) changed, and close the
        streams whose view is gone (`changed` says None: the key was revoked); returns how
        many were told."""
        views = {(s.endpoint, s.key_id) for s in self._all()}
        by_view = {view: changed(*view) for view in views}
        delivered = 0
        for stream in self._all():
            kinds = by_view[(stream.endpoint, stream.key_id)]
            if kinds is None:
                self.close(stream)
                continue
            for kind in sorted(kinds):
                if kind in stream.kinds:
                    delivered += stream.offer(stream.notification(f"notifications/{kind}/list_changed"))
        return delivered

    def tell_session(self, session_id: str, message: bytes) -> int:
        """Offer a notification to every stream of one session; returns how many took it."""
        return sum(stream.offer(message) for stream in self._streams.get(session_id, set()))

    def elicitation_complete(self, key_id: str, server: str, ident: Callable[[str, str], str]) -> int:
        """Tell the streams of a key's sessions that take URL elicitations that the one for
        `server` (its id by `ident`) is complete; clients ignore ids they never saw."""
        delivered = 0
        for stream in self._all():
            if stream.key_id == key_id and stream.url_elicitation:
                params = {"elicitationId": ident(stream.session_id, server)}
                delivered += stream.offer(stream.notification("notifications/elicitation/complete", params))
        return delivered

    def resource_updated(self, server: str, uri: str, sessions: Collection[str]) -> int:
        """Tell the streams of `sessions`, and the listen streams that asked, that a resource
        changed, under the URI their endpoint shows; returns how many were told."""
        delivered = 0
        for stream in self._all():
            if stream.session_id not in sessions and (server, uri) not in stream.resources:
                continue
            if stream.endpoint not in ("", server):
                continue
            shown = exposed_uri(server, uri) if stream.endpoint == "" else uri
            delivered += stream.offer(stream.notification("notifications/resources/updated", {"uri": shown}))
        return delivered

    def _all(self) -> list[Stream]:
        return [s for streams in self._streams.values() for s in streams]

    @property
    def open_streams(self) -> int:
        return self._open
