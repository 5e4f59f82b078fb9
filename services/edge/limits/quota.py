"""Quotas shared by every edge, without a round trip per call: each counter lives in a
JetStream KV entry per window, and an edge leases a share of what remains (a compare-and-set
increment), then spends that share locally. A share is at most 1/`SHARE` of what remains,
so near the limit leases shrink to what a call needs: exact accounting.

Beside it, a second counter says what was spent (leased less what is still unspent): each
edge adds what it spent every `FLUSH_SECONDS`, for usage to show.

The counter never passes the limit (a lease is granted only from what remains), so calls
across all edges never exceed it: the overshoot is zero while the bucket is reachable. What
an edge leased and did not spend by the window's end is lost (under-use, never over). While
the bucket is unreachable each edge counts alone against the whole limit, so the overshoot
is then at most (edges - 1) x the limit per window, and the log says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator

import anyio
import anyio.abc
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services import bus
from services.windows import Window

log = logging.getLogger(__name__)

BUCKET = "mcpgw-limits"
# A lease takes at most this fraction of what remains in the window.
SHARE = 8
# A lease is renewed in the background once the edge has spent this much of it.
RENEW_AT = 0.5
KV_SECONDS = 1.0
FLUSH_SECONDS = 1.0
CAS_ATTEMPTS = 16
CAS_BACKOFF_SECONDS = 0.001
# JetStream's codes for a write whose expected last revision was not the last.
WRONG_LAST_SEQUENCE = (10071, 10164)


class ContendedError(Exception):
    """Other edges kept winning the compare-and-set: the counter is reachable, this edge
    just could not add to it (so it must not count alone)."""


class QuotaStore:
    """The bucket of counters, opened once NATS is up."""

    def __init__(self, nc: NATS, replicas: int = 1) -> None:
        self._nc = nc
        self._replicas = replicas
        self._kv: KeyValue | None = None

    async def open(self) -> None:
        config = KeyValueConfig(bucket=BUCKET, storage=StorageType.FILE, history=1, replicas=self._replicas)
        self._kv = await bus.retrying(f"opening the {BUCKET} bucket", lambda: bus.key_value(self._nc, config))

    async def read(self, counter: str) -> int:
        """What the counter holds (0 for none); ConnectionError when the bucket is unreachable."""
        with _reachable():
            return (await self._entry(counter))[0]

    async def lease(self, counter: str, need: int, limit: int, expires_at: float) -> int:
        """Units added to the counter for this edge: at least `need` and at most 1/SHARE of
        what remains, or 0 when fewer than `need` remain. ConnectionError when unreachable."""

        def grant(used: int) -> int:
            remaining = limit - used
            return 0 if remaining < need or remaining <= 0 else max(need, remaining // SHARE, 1)

        return await self._increase(counter, grant, expires_at)

    async def add(self, counter: str, units: int, expires_at: float) -> None:
        """Add `units` to a counter, whatever it holds (ConnectionError when unreachable)."""
        await self._increase(counter, lambda used: units, expires_at)

    async def _increase(self, counter: str, amount: Callable[[int], int], expires_at: float) -> int:
        """Add `amount(what the counter holds)` by compare-and-set, read again when another
        edge wrote first; what was added (0: nothing). ConnectionError when unreachable."""
        with _reachable():
            for attempt in range(CAS_ATTEMPTS):
                if attempt:
                    # Lost a race to another edge: a jittered pause, so neither starves.
                    await anyio.sleep(random.uniform(0, CAS_BACKOFF_SECONDS * attempt))  # noqa: S311 (jitter, not a secret)
                used, revision = await self._entry(counter)
                added = amount(used)
                if added == 0:
                    return 0
                value = str(used + added).encode()
                try:
                    if revision == 0:
                        ttl = max(1.0, expires_at - time.time()) + 60.0
                        await self._bucket.create(counter, value, msg_ttl=ttl)
                    else:
                        await self._bucket.update(counter, value, last=revision)
                except KeyWrongLastSequenceError:
                    continue
                except APIError as exc:
                    if exc.err_code in WRONG_LAST_SEQUENCE:
                        continue
                    raise
                return added
        raise ContendedError(f"the quota counter stayed contended for {CAS_ATTEMPTS} attempts")

    @property
    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise ConnectionError("the quota bucket is not open yet")
        return self._kv

    async def _entry(self, counter: str) -> tuple[int, int]:
        with anyio.fail_after(KV_SECONDS):
            try:
                entry = await self._bucket.get(counter)
            except KeyNotFoundError:
                return 0, 0
        if entry.value is None or entry.revision is None:
            return 0, 0
        return int(entry.value), entry.revision


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """Bucket failures (NATS away, a timeout) as ConnectionError."""
    try:
        yield
    except KeyWrongLastSequenceError:
        raise
    except (NatsError, TimeoutError, APIError) as exc:
        raise ConnectionError(f"the quota bucket is unreachable: {exc!r}") from exc


def counter_name(scope: str, window: Window, index: int, kind: str = "q") -> str:
    """The KV key of a scope's counter for one window (a digest: scopes hold any name):
    `q` what was leased, `s` what was spent."""
    digest = hashlib.sha256(f"{scope}\x00{window}\x00{window.calendar_aligned}".encode()).hexdigest()[:32]
    return f"{kind}.{digest}.{index}"


class Quota:
    """One scope's quota as this edge spends it: its lease for the current window."""

    def __init__(
        self, store: QuotaStore, scope: str, limit: int, window: Window, spawn: Callable[..., None]
    ) -> None:
        self._store = store
        self.scope = scope
        self.limit = limit
        self.window = window
        self._spawn = spawn
        self._index = -1
        self._ends = 0.0
        self._local = 0
        self._granted = 0
        self._renewing = False
        self._lock = anyio.Lock()
        # Spent while the bucket was unreachable, this window (counted against the whole limit).
        self._alone = 0
        # Spent and not yet added to the spent counter, by window: (units, window end).
        self._unflushed: dict[int, list[float]] = {}

    def configure(self, limit: int, window: Window) -> None:
        """A changed limit: what this edge holds is dropped, and the counter keeps counting."""
        if limit != self.limit or window != self.window:
            if window != self.window:
                self._ends = 0.0  # the next call works out its window anew
            self.limit, self.window, self._local, self._granted = limit, window, 0, 0

    def retry_after(self, now: float) -> float:
        """Seconds until the current window ends."""
        return max(0.0, self._ends - now)

    def take_now(self, units: int, now: float) -> bool | None:
        """Spend `units` from this edge's lease (True), or refuse what the window cannot hold
        (False), without an await; None when a lease must come first: then await `take`."""
        self._roll(now)
        if units > self.limit:
            return False
        if self._local >= units:
            self._spend(units)
            self._renew_if_low()
            return True
        return None

    async def take(self, units: int, now: float) -> bool:
        """Spend `units`: from this edge's lease when it holds enough (no await on that path),
        else by leasing more. False when the window has not that much left."""
        taken = self.take_now(units, now)
        if taken is not None:
            return taken
        async with self._lock:
            self._roll(now)
            if self._local < units:
                await self._lease(units - self._local)
            if self._local < units:
                return False
            self._spend(units)
            return True

    def give_back(self, units: int) -> None:
        """Units taken for a call that did not run (spent again on this edge, this window)."""
        self._spend(-units)

    def _spend(self, units: int) -> None:
        self._local -= units
        pending = self._unflushed.get(self._index)
        if pending is None:
            self._unflushed[self._index] = [units, self._ends]
        else:
            pending[0] += units

    async def flush(self) -> None:
        """Add what this edge spent to the spent counters (kept for later when unreachable)."""
        for index, (units, ends) in list(self._unflushed.items()):
            del self._unflushed[index]
            if not units:
                continue
            try:
                await self._store.add(counter_name(self.scope, self.window, index, "s"), int(units), ends)
            except (ConnectionError, ContendedError):
                if ends > time.time():
                    self._unflushed.setdefault(index, [0, ends])[0] += units
                return

    async def used(self, now: float) -> int:
        """What the whole deployment spent in the current window, as far as edges have told
        (each within `FLUSH_SECONDS`); ConnectionError when unknown."""
        index, _ = self.window.bounds(now)
        spent = await self._store.read(counter_name(self.scope, self.window, index, "s"))
        return spent + int(self._unflushed.get(index, [0])[0])

    def _roll(self, now: float) -> None:
        if now < self._ends:
            return  # still this window (a clock stepped back keeps counting in it)
        index, ends = self.window.bounds(now)
        if index != self._index:
            self._index, self._ends, self._local, self._granted, self._alone = index, ends, 0, 0, 0

    def _renew_if_low(self) -> None:
        if not self._renewing and self._granted > 1 and self._local < self._granted * RENEW_AT:
            self._renewing = True
            self._spawn(self._renew)

    async def _renew(self) -> None:
        try:
            async with self._lock:
                await self._lease(0)
        finally:
            self._renewing = False

    async def _lease(self, need: int) -> None:
        counter = counter_name(self.scope, self.window, self._index)
        try:
            grant = await self._store.lease(counter, max(need, 1), self.limit, self._ends)
        except ContendedError as exc:
            # No lease this time: the call is refused rather than risk passing the limit.
            log.warning("%s: %s", self.scope, exc)
            return
        except ConnectionError as exc:
            if need == 0:
                return
            if self._alone == 0:
                log.warning("%s: counting alone until the quota bucket is back (%s)", self.scope, exc)
            if self._alone + need <= self.limit:
                self._alone += need
                self._local += need
            return
        self._local += grant
        self._granted = grant


def retry_seconds(value: float) -> int:
    """Retry-After's whole seconds (at least 1)."""
    return max(1, math.ceil(value))
