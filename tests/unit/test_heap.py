"""Heap snapshots on SIGUSR1 (services/heap.py) and what bench/heap.py charges to whom."""

from __future__ import annotations

import collections
import os
import signal
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench import heap
from services.heap import trace_to


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Path]:
    previous = signal.getsignal(signal.SIGUSR1)
    trace_to(tmp_path, "test")
    try:
        yield tmp_path
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGUSR1, previous)


def test_what_grows_between_two_snapshots_is_counted_per_unit(traced: Path) -> None:
    me = psutil.Process(os.getpid())
    before = heap.take(me, traced)
    assert tracemalloc.is_tracing(), "the first signal starts tracing"
    held: list[collections.deque[int]] = [collections.deque() for _ in range(1000)]
    after = heap.take(me, traced)
    found = heap.held(before, after, len(held))
    assert found["units"] == 1000
    # An empty deque holds a block of 64 slots: over 500 bytes on CPython.
    assert found["bytes_per_unit"] > 500
    assert sum(found["by_owner"].values()) == pytest.approx(found["bytes_per_unit"])
    assert before.name.startswith(f"test-{os.getpid()}-") and not list(traced.glob("*.partial"))


def test_bytes_are_charged_to_the_innermost_code_outside_the_standard_library() -> None:
    site = "/venv/lib/python3.11/site-packages"
    # Raw frames, most recent first: asyncio's Event made by uvicorn's flow control, under mcpgw.
    frames = tracemalloc.Traceback(
        (
            ("/py/lib/python3.11/asyncio/locks.py", 168),
            (f"{site}/uvicorn/protocols/http/flow_control.py", 15),
            (f"{heap.ROOT}/services/edge/server.py", 32),
        )
    )
    assert heap.owner(frames) == ("uvicorn", "uvicorn/protocols/http/flow_control.py:15")
    ours = tracemalloc.Traceback(((f"{heap.ROOT}/services/edge/calls.py", 240), (f"{site}/anyio/x.py", 3)))
    assert heap.owner(ours) == ("mcpgw edge/calls.py", "services/edge/calls.py:240")
    loop = tracemalloc.Traceback(((f"{site}/uvloop/__init__.py", 92),))
    assert heap.owner(loop)[0] == "uvloop"
