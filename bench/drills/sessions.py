"""Many sessions and open GET streams, then closed: the edge's memory and descriptors before,
while they are held, and after."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

import psutil

from bench.drills.gateway import Gateway
from bench.drills.report import Row
from bench.targets import PYTHON, ROOT

LABEL = "sessions and GET streams"
HOLD_SECONDS = 120.0
STOP_SECONDS = 30.0
RSS_LIMIT = 0.10
POLL_SECONDS = 0.25
MIB = 2**20


@dataclass(frozen=True)
class Sample:
    rss: int
    fds: int

    def __str__(self) -> str:
        return f"{self.rss / MIB:.1f} MiB, {self.fds} fds"


def sample(edge: psutil.Process) -> Sample:
    with edge.oneshot():
        return Sample(edge.memory_info().rss, edge.num_fds())


async def _hold(gw: Gateway, count: int, streams: bool) -> asyncio.subprocess.Process:
    """bench.loadgen's sessions mode: `count` sessions (each with its GET stream open when
    `streams`), held until its stdin closes; returns once they are all open."""
    argv = [PYTHON, "-m", "bench.loadgen", "--url", gw.mcp, "--mode", "sessions", "--count", str(count)]
    holder = await asyncio.create_subprocess_exec(
        *argv, *(["--streams"] if streams else []), cwd=ROOT, start_new_session=True,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert holder.stdout is not None
    try:
        line = await asyncio.wait_for(holder.stdout.readline(), HOLD_SECONDS)
    except TimeoutError:
        line = b"(no answer in time)"
    if line.strip() != b"ready":
        await _stop(holder)
        raise RuntimeError(f"the session holder failed: {line[:200]!r}")
    return holder


async def _stop(holder: asyncio.subprocess.Process) -> None:
    """Close its stdin (it then closes every stream and exits); kill its group if it lingers."""
    if holder.stdin is not None:
        holder.stdin.close()
    try:
        await asyncio.wait_for(holder.wait(), STOP_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        await holder.wait()


async def sessions_drill(gw: Gateway, sessions: int, streams: int, settle: float, heal: float) -> Row:
    """`sessions` idle sessions and `streams` more holding their GET stream, then all closed."""
    row = Row(LABEL)
    await gw.wait_healthy(heal)
    edge = gw.processes()["edge"]
    before = sample(edge)
    holders: list[asyncio.subprocess.Process] = []
    try:
        holders.append(await _hold(gw, sessions, streams=False))
        holders.append(await _hold(gw, streams, streams=True))
        during = sample(edge)
        held_streams = (await gw.readyz() or {}).get("streams", "?")
    finally:
        for holder in holders:
            await _stop(holder)
    closed = time.monotonic()
    after = sample(edge)
    # The edge lets go of closed streams on its own schedule: poll, with a deadline.
    while time.monotonic() - closed < settle and not _back(before, after):
        await asyncio.sleep(POLL_SECONDS)
        after = sample(edge)
    grew = (after.rss - before.rss) / before.rss
    row.measured = (
        f"{sessions:,} sessions + {streams:,} with a GET stream ({held_streams} streams held): edge "
        f"before {before}; during {during}; after {after} ({grew * 100:+.1f}% RSS, "
        f"{time.monotonic() - closed:.1f} s after closing)"
    )
    row.check(
        f"RSS back within {RSS_LIMIT * 100:.0f}% of its start",
        grew <= RSS_LIMIT,
        f"RSS {grew * 100:+.1f}%",
    )
    return row


def _back(before: Sample, after: Sample) -> bool:
    return after.rss <= before.rss * (1 + RSS_LIMIT) and after.fds <= before.fds
