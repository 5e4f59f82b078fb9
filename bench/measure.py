"""What a bench point records: the load generator's tally and the proxy's CPU and memory."""

from __future__ import annotations

import datetime
import json
import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.targets import PYTHON, ROOT, Target


@dataclass
class Point:
    """One run of the load generator against one target."""

    target: str
    concurrency: int
    round: int
    warmup: int
    calls: int
    errors: int
    error_samples: list[str]
    elapsed: float
    latencies_ms: list[float]
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    rss_bytes: dict[str, int] = field(default_factory=dict)
    # What is not the proxy: the load generator's CPU and the HTTP downstream's (the ratio model).
    load_cpu_seconds: dict[str, float] = field(default_factory=dict)


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """Each process's CPU so far; a process that has exited fails the point (a dead one's
    CPU stands still and would pass for a cheap one)."""
    seconds = {}
    for name, process in processes.items():
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            raise RuntimeError(f"the target's {name} process ({process.pid}) has exited")
        times = process.cpu_times()
        seconds[name] = times.user + times.system
    return seconds


def loadgen(target: Target, *extra: str) -> dict[str, Any]:
    argv = [PYTHON, "-m", "bench.loadgen", *target.loadgen_args(), *extra]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen against {target.name} failed: {done.stderr.decode()[-2000:]}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def children_cpu_seconds() -> float:
    """CPU of this process's children that were waited for: the load generator, once done."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_point(
    target: Target, concurrency: int, duration: float, round_: int, downstream: psutil.Process | None = None
) -> Point:
    """One point; `downstream` is the HTTP downstream the target calls, whose CPU is counted too."""
    before = cpu_seconds(target.processes)
    served = cpu_seconds({"downstream": downstream} if downstream is not None else {})
    loaded = children_cpu_seconds()
    tally = loadgen(target, "--concurrency", str(concurrency), "--duration", str(duration))
    load = {"loadgen": children_cpu_seconds() - loaded}
    if downstream is not None:
        load["downstream"] = cpu_seconds({"downstream": downstream})["downstream"] - served["downstream"]
    after = cpu_seconds(target.processes)
    return Point(
        target=target.name,
        concurrency=concurrency,
        round=round_,
        warmup=tally["warmup"],
        calls=tally["calls"],
        errors=tally["errors"],
        error_samples=tally["error_samples"],
        elapsed=tally["elapsed"],
        latencies_ms=tally["latencies_ms"],
        cpu_seconds={name: after[name] - before[name] for name in after},
        rss_bytes={name: p.memory_info().rss for name, p in target.processes.items()},
        load_cpu_seconds=load,
    )


def session_bytes(target: Target, process: psutil.Process, count: int, *, streams: bool) -> float:
    """Growth of `process`'s RSS per session while `count` more sessions sit idle.

    A first batch is opened and held beforehand, so that what is measured is the
    marginal cost of a session, not the allocator's and the code paths' first use.
    """
    argv = [
        PYTHON,
        "-m",
        "bench.loadgen",
        *target.loadgen_args(),
        "--mode",
        "sessions",
        "--count",
        str(count),
    ]
    argv += ["--streams"] if streams else []
    holders: list[subprocess.Popen[bytes]] = []

    def hold() -> None:
        holder = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        holders.append(holder)
        assert holder.stdout is not None
        line = holder.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"session holder failed: {line!r}")

    try:
        hold()
        before = process.memory_info().rss
        hold()
        return (process.memory_info().rss - before) / count
    finally:
        for holder in holders:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=60)


class AuditTail:
    """Follows the audit file: counts records per tool and the lag from call end to export."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stop = threading.Event()
        self.records: dict[str, int] = {}
        self.lags_ms: list[float] = []
        self._thread = threading.Thread(target=self._follow, name="audit-tail", daemon=True)

    def __enter__(self) -> AuditTail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def count(self, tools: set[str]) -> int:
        return sum(n for tool, n in self.records.items() if tool in tools)

    def _follow(self) -> None:
        while not self._path.exists():
            if self._stop.wait(0.05):
                return
        with self._path.open("rb") as source:
            pending = b""
            while True:
                chunk = source.read()
                if not chunk:
                    if self._stop.wait(0.005):
                        return
                    continue
                seen = time.time()
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    self._record(line, seen)

    def _record(self, line: bytes, seen: float) -> None:
        span = orjson.loads(line)
        tool = span["attributes"].get("gen_ai.tool.name", "")
        self.records[tool] = self.records.get(tool, 0) + 1
        ended = datetime.datetime.fromisoformat(span["end_time"]).timestamp()
        self.lags_ms.append((seen - ended) * 1000)

    def wait_for(self, tools: set[str], expected: int, timeout: float) -> int:
        """Records of `tools` once `expected` arrived or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while self.count(tools) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.count(tools)
