"""What a service holds per unit (a call in flight, a stream), from two heap snapshots.

A service run with `MCPGW_HEAP_DIR` writes a snapshot on each SIGUSR1 (services/heap.py).
`take` asks for one and waits for it; `held` compares two and charges every byte that is
still allocated in the second to the code that allocated it: an mcpgw module, or the
library (uvicorn, aiohttp, grpc, ...) whose line did.
"""

from __future__ import annotations

import signal
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from services.heap import SUFFIX

SNAPSHOT_SECONDS = 120.0
# Owners shown by name; the rest are summed as "other".
SHOWN = 12
# The lines that allocated the most, each a row of the results.
SITES = 25
ROOT = str(Path(__file__).resolve().parents[1])


def take(process: psutil.Process, directory: Path) -> Path:
    """Signal `process` for a snapshot and return its file once written."""
    before = set(directory.glob(f"*-{process.pid}-*{SUFFIX}"))
    process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + SNAPSHOT_SECONDS
    while time.monotonic() < deadline:
        written = set(directory.glob(f"*-{process.pid}-*{SUFFIX}")) - before
        if written:
            return written.pop()
        time.sleep(0.2)
    raise TimeoutError(f"process {process.pid} wrote no heap snapshot within {SNAPSHOT_SECONDS:.0f}s")


def owner(frames: tracemalloc.Traceback) -> tuple[str, str]:
    """Whose code allocated, and its line: the innermost frame outside the standard library
    (asyncio's Event counts for the library that made it), an mcpgw module or a package."""
    for frame in reversed(frames):
        name = frame.filename
        if "site-packages/" in name:
            path = name.split("site-packages/", 1)[1]
            return path.split("/", 1)[0].removesuffix(".py"), f"{path}:{frame.lineno}"
        if name.startswith(ROOT) and "/services/" in name:
            path = name.split("/services/", 1)[1]
            return f"mcpgw {path}", f"services/{path}:{frame.lineno}"
    # Only the standard library, or C (uvloop's transports) called from the event loop.
    innermost = frames[-1]
    where = f"{innermost.filename.rsplit('/', 1)[-1]}:{innermost.lineno}"
    return f"stdlib or C, under {where}", where


def load(path: Path) -> tracemalloc.Snapshot:
    """A snapshot without tracemalloc's own allocations."""
    snapshot = tracemalloc.Snapshot.load(str(path))
    return snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])


def held(before: Path, after: Path, units: int) -> dict[str, Any]:
    """Bytes per unit allocated between the snapshots and still held, by owner."""
    grown, sites = Counter[str](), Counter[str]()
    old, new = (load(path) for path in (before, after))
    for stat in new.compare_to(old, "traceback"):
        if stat.size_diff > 0:
            who, where = owner(stat.traceback)
            grown[who] += stat.size_diff
            sites[where] += stat.size_diff
    total = sum(grown.values())
    shown = dict(grown.most_common(SHOWN))
    shown["other"] = total - sum(shown.values())
    per = max(units, 1)
    return {
        "units": units,
        "bytes_per_unit": total / per,
        "by_owner": {name: size / per for name, size in shown.items()},
        "sites": {where: size / per for where, size in sites.most_common(SITES)},
    }
