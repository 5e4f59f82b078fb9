"""What a downstream sends back to the client during one tools/call, and how it gets there.

Over Streamable HTTP a downstream's requests and log messages for a call arrive on
that call's own response stream, so they belong to it without doubt. Over stdio and
legacy SSE they arrive on the shared session with nothing naming the call; they are
relayed only when exactly one call on that server can take them, and refused
otherwise: sending one client's sampling request to another client would leak it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mcp_types as types

Response = dict[str, Any]
"""A JSON-RPC response body without its envelope: {"result": ...} or {"error": {...}}."""


@dataclass(frozen=True, slots=True)
class CallRelay:
    """The way back to the client of one call."""

    # A JSON-RPC notification (e.g. notifications/message) for the client.
    notify: Callable[[dict[str, Any]], Awaitable[None]]
    # A request (method, params) for the client; returns its Response.
    ask: Callable[[str, dict[str, Any] | None], Awaitable[Response]]


def unrelayable(method: str) -> Response:
    return {"error": {"code": types.METHOD_NOT_FOUND, "message": f"mcpgw: no client can answer {method} now"}}


class RelayBoard:
    """The relays of the calls in flight on one shared session."""

    def __init__(self) -> None:
        self._relays: list[CallRelay] = []

    @contextmanager
    def holding(self, relay: CallRelay | None) -> Iterator[None]:
        if relay is None:
            yield
            return
        self._relays.append(relay)
        try:
            yield
        finally:
            self._relays.remove(relay)

    def only(self) -> CallRelay | None:
        """The relay when exactly one call could take a message, else None."""
        return self._relays[0] if len(self._relays) == 1 else None

    async def ask(self, method: str, params: dict[str, Any] | None) -> Response:
        relay = self.only()
        return unrelayable(method) if relay is None else await relay.ask(method, params)

    async def notify(self, message: dict[str, Any]) -> None:
        """Relay `message` to the one call that can take it; drop it when there is none or several."""
        relay = self.only()
        if relay is not None:
            await relay.notify(message)
