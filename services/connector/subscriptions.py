"""Resource subscriptions on a downstream session that every client of the gateway shares.

Each client session's subscription to a URI counts once (the edge makes that so); the
downstream hears `resources/subscribe` for the first and `resources/unsubscribe` after the
last, and is subscribed again to every counted URI after it reconnects.
"""

from __future__ import annotations

from collections import Counter


class SubscriptionCounts:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def want(self, uri: str) -> bool:
        """Count one more subscriber; whether it is the first (the downstream must hear of it)."""
        self._counts[uri] += 1
        return self._counts[uri] == 1

    def release(self, uri: str) -> bool:
        """Count one fewer; whether it was the last (the downstream must hear of it)."""
        if self._counts[uri] <= 0:
            del self._counts[uri]
            return False
        self._counts[uri] -= 1
        if self._counts[uri]:
            return False
        del self._counts[uri]
        return True

    @property
    def uris(self) -> list[str]:
        return sorted(self._counts)
