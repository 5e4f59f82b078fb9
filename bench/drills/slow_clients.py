"""Slow clients: connections that send request headers a byte a second. How long the edge holds
each one, and what a normal client's tools/call latency is meanwhile, against its quiet value."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator

from bench.drills.gateway import Gateway
from bench.drills.load import HTTP_TOOL, CallRecord, reasons, run_load
from bench.drills.report import Row, percentile
from services.settings import EdgeSettings

LABEL = "slow clients"
BYTE_SECONDS = 1.0
CONNECT_SECONDS = 5.0
NORMAL_RATE = 20.0
LATENCY_LIMIT = 2.0
# Held for up to a byte interval past the timeout before a read notices the close.
TIMEOUT_SLACK_SECONDS = BYTE_SECONDS


def header_timeout() -> float | None:
    """The edge's header-read timeout, if its settings have one (a field named for both)."""
    for name, setting in EdgeSettings.model_fields.items():
        if "header" in name and "timeout" in name:
            return float(os.environ.get(f"MCPGW_{name.upper()}", setting.default))
    return None


def header_bytes() -> Iterator[bytes]:
    """A request's headers that never end, a byte at a time."""
    start = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    lines = (b"X-Slow-%d: %s\r\n" % (n, b"x" * 16) for n in itertools.count())
    for chunk in itertools.chain([start], lines):
        for byte in chunk:
            yield bytes([byte])


async def slow_client(port: int, delay: float, window: float) -> tuple[float, bool]:
    """Seconds the connection was held, and whether the server was the one to end it."""
    # Spread over the first second so that the connections' bytes do not all go at once.
    await asyncio.sleep(delay)
    began = time.monotonic()
    ends = began + window
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), CONNECT_SECONDS)
    except (OSError, TimeoutError):
        return 0.0, True
    try:
        for byte in header_bytes():
            now = time.monotonic()
            if now >= ends:
                return window, False
            writer.write(byte)
            await writer.drain()
            try:
                # Anything the server sends (an error answer) or its close ends the wait.
                await asyncio.wait_for(reader.read(4096), min(BYTE_SECONDS, ends - now))
                return time.monotonic() - began, True
            except TimeoutError:
                continue
    except (ConnectionError, OSError):
        return time.monotonic() - began, True
    finally:
        writer.close()
    raise AssertionError("header_bytes() never ends")


def _latency(records: list[CallRecord]) -> tuple[float, float]:
    """p50 and p99 in ms of the successful calls."""
    values = [(r.ended - r.started) * 1000 for r in records if r.ok]
    return percentile(values, 0.5), percentile(values, 0.99)


async def _normal_client(gw: Gateway, tag: str, duration: float) -> list[CallRecord]:
    """One client calling at a steady, modest rate."""
    return await run_load(gw.mcp, tag, workers=1, rate=NORMAL_RATE, duration=duration, tools=(HTTP_TOOL,))


async def slow_clients_drill(gw: Gateway, count: int, window: float, quiet: float, heal: float) -> Row:
    """A quiet baseline of the normal client, then `count` slow connections for `window` seconds."""
    row = Row(LABEL)
    await gw.wait_healthy(heal)
    baseline = await _normal_client(gw, "slow-quiet", quiet)
    holders = [asyncio.create_task(slow_client(gw.port, i / count, window)) for i in range(count)]
    try:
        loaded = await _normal_client(gw, "slow-loaded", window)
        held = await asyncio.gather(*holders)
    finally:
        for holder in holders:
            holder.cancel()
    dropped = sorted(seconds for seconds, closed in held if closed)
    still = len(held) - len(dropped)
    quiet_p50, quiet_p99 = _latency(baseline)
    p50, p99 = _latency(loaded)
    times = sorted(seconds for seconds, _ in held)
    limit = header_timeout()
    row.measured = (
        f"{count} connections for {window:.0f} s: {len(dropped)} closed by the edge, {still} still open "
        f"at the end; held min {times[0]:.1f} s, p50 {percentile(times, 0.5):.1f} s, max {times[-1]:.1f} s. "
        f"Normal client p50/p99 {p50:.1f}/{p99:.1f} ms ({len(loaded)} calls, "
        f"{sum(not r.ok for r in loaded)} failed) vs quiet {quiet_p50:.1f}/{quiet_p99:.1f} ms"
    )
    if limit is None:
        goal, bound = "all dropped within a header timeout (the edge has none)", window
    else:
        goal, bound = f"all dropped within the header timeout ({limit:g} s)", limit + TIMEOUT_SLACK_SECONDS
    within = still == 0 and times[-1] <= bound
    row.check(goal, within, f"{still} held for the whole window" if still else f"max held {times[-1]:.1f} s")
    row.check(
        f"normal p99 ≤ {LATENCY_LIMIT:g} x quiet",
        bool(loaded) and p99 <= LATENCY_LIMIT * quiet_p99,
        f"p99 {p99:.1f} ms vs {LATENCY_LIMIT:g} x {quiet_p99:.1f} ms",
    )
    failures = [r for r in baseline + loaded if not r.ok]
    if failures:
        row.notes.append(f"normal client failures: {reasons(failures)}")
    return row
