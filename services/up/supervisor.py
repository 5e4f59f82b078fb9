"""Running child processes as one unit: start in order, restart the dead, stop them all.

Each child runs in its own session, so a terminal's Ctrl-C reaches only the
supervisor, which then stops children in reverse order. On Linux each child also
gets SIGTERM if the supervisor itself dies, so no child outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("mcpgw.up")

STOP_GRACE_SECONDS = 10.0
RESTART_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 60.0

Probe = Callable[[], Awaitable[bool]]


def _die_with_parent() -> None:
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Probe | None = None
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    restarts: int = 0


class ChildFailedError(RuntimeError):
    """A child exited, or never became ready, while the tree was starting."""


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.started_all = False
        self._stopping = asyncio.Event()

    async def start(self, child: Child) -> None:
        """Start `child` and wait until its probe passes."""
        self.children.append(child)
        await self._spawn(child)
        if child.ready is None:
            return
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not await child.ready():
            assert child.process is not None
            if child.process.returncode is not None:
                raise ChildFailedError(
                    f"{child.name} exited with code {child.process.returncode} while starting"
                )
            if time.monotonic() > deadline:
                raise ChildFailedError(f"{child.name} was not ready within {READY_TIMEOUT_SECONDS:.0f}s")
            await asyncio.sleep(0.1)

    async def _spawn(self, child: Child) -> None:
        spawning = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *child.argv, env=child.env, start_new_session=True, preexec_fn=_die_with_parent
            )
        )
        try:
            child.process = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # A process that was started must be known, or stop() could not end it.
            child.process = await spawning
            raise
        log.info("started %s (pid %d)", child.name, child.process.pid)

    async def watch(self) -> None:
        """Restart children that die, with backoff, until `stop()`."""
        await asyncio.gather(*(self._watch(child) for child in self.children))

    async def _watch(self, child: Child) -> None:
        # A child that ran a while is restarted at once (a crash costs only its start-up);
        # one that keeps dying waits 1 s, 2 s, 4 s... up to RESTART_MAX_SECONDS.
        delay = 0.0
        while not self._stopping.is_set():
            assert child.process is not None
            started = time.monotonic()
            code = await child.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > STABLE_SECONDS:
                delay = 0.0
            log.error("%s exited with code %d; restarting in %.0fs", child.name, code, delay)
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 1.0), RESTART_MAX_SECONDS)
            if not self._stopping.is_set():
                child.restarts += 1
                await self._spawn(child)

    async def stop(self) -> None:
        """SIGTERM every child, last started first; SIGKILL whoever outlives the grace period."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for child in reversed(self.children):
            process = child.process
            if process is None or process.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
            except TimeoutError:
                log.warning("%s did not stop within %.0fs; killing it", child.name, STOP_GRACE_SECONDS)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
