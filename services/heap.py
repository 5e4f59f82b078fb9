"""Heap snapshots on demand: what a service holds per call, per stream, per session.

With `MCPGW_HEAP_DIR` set, a service's first SIGUSR1 starts tracing its allocations
(tracemalloc: several times slower, for measuring, never for serving) and each SIGUSR1
writes a snapshot into that directory (`bench.heap` compares two of them).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

# Enough frames to reach mcpgw's own code below a library's.
FRAMES = 16
SUFFIX = ".heap"


def trace_to(directory: Path, service: str) -> None:
    """On each SIGUSR1 write `<service>-<pid>-<n>.heap` into `directory`, tracing from the first."""
    directory.mkdir(parents=True, exist_ok=True)
    numbers = itertools.count(1)

    def snapshot(signum: int, frame: FrameType | None) -> None:
        if not tracemalloc.is_tracing():
            # Not from start-up: tracing imports would slow it ten-fold, and what is measured
            # is what grows between two snapshots.
            tracemalloc.start(FRAMES)
            log.warning("tracing the heap into %s: this process is several times slower", directory)
        path = directory / f"{service}-{os.getpid()}-{next(numbers)}{SUFFIX}"
        partial = path.with_suffix(".partial")
        tracemalloc.take_snapshot().dump(str(partial))
        # Renamed once whole, so a reader waiting for the name never reads half of it.
        partial.rename(path)
        log.info("heap snapshot written to %s", path)

    signal.signal(signal.SIGUSR1, snapshot)
