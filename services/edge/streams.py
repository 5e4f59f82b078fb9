"""The standalone GET streams this edge holds, for server-to-client notifications."""

from __future__ import annotations

import logging

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger(__name__)

STREAM_BUFFER = 64


class StreamHub:
    def __init__(self) -> None:
        self._streams: dict[str, set[MemoryObjectSendStream[bytes]]] = {}

    def open(self, session_id: str) -> tuple[MemoryObjectSendStream[bytes], MemoryObjectReceiveStream[bytes]]:
        send, receive = anyio.create_memory_object_stream[bytes](STREAM_BUFFER)
        self._streams.setdefault(session_id, set()).add(send)
        return send, receive

    def close(self, session_id: str, send: MemoryObjectSendStream[bytes]) -> None:
        streams = self._streams.get(session_id)
        if streams is not None:
            streams.discard(send)
            if not streams:
                del self._streams[session_id]
        send.close()

    def end(self, session_id: str) -> None:
        """Close every stream of an ended session."""
        for send in self._streams.pop(session_id, set()):
            send.close()

    def broadcast(self, message: bytes) -> int:
        """Queue `message` on every open stream; returns how many got it."""
        delivered = 0
        for session_id, streams in list(self._streams.items()):
            for send in list(streams):
                try:
                    send.send_nowait(message)
                    delivered += 1
                except anyio.WouldBlock:
                    # A client that stopped reading loses this notification, not the edge its memory.
                    log.warning("GET stream of session %s is full; notification dropped", session_id)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    streams.discard(send)
        return delivered

    @property
    def open_streams(self) -> int:
        return sum(len(s) for s in self._streams.values())
