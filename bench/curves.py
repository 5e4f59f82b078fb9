"""`make bench-scale`: how mcpgw's cost grows with concurrency, calls in flight, catalog size,
downstream servers and open streams; each curve on a gateway of its own, started as users run it.

    python -m bench.curves [--smoke] [--only concurrency,inflight,catalog,servers,streams]
        [--concurrency 1,8,32,128,512] [--duration 5] [--inflight 10000] [--sleep 2]
        [--catalog 100,2000,20000] [--servers 1,10,100] [--streams 10000] [--heap]

Writes bench/results/curves-<timestamp>.json, .md and .png and prints the Markdown.
`--heap` traces the edge's and the connector's heaps in the in-flight and streams curves
and says whose code holds the bytes of a call and of a stream (bench/heap.py); tracing
slows them several-fold, so its RSS figures are no measure of the targets: a run of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import json
import math
import os
import platform
import resource
import secrets
import select
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import orjson
import psutil

from bench import curves_report, heap
from bench.loadgen import ACCEPT, McpHttpClient, ProtocolViolation
from bench.measure import cpu_seconds, loadgen, run_point
from bench.report import percentiles
from bench.targets import (
    BENCH_KEY,
    PYTHON,
    ROOT,
    Target,
    echo_downstream,
    gateway_processes,
    mcpgw,
    port_open,
    process_group,
    revision,
    wait_for,
)
from services.connector.transports import CONNECTIONS_PER_SERVER
from services.registry.catalog import build_snapshot
from services.registry.governance import GovernanceStore
from services.registry.sealing import Sealer
from services.registry.store import RegistryStore
from services.up.main import free_port

CURVES = ("concurrency", "inflight", "catalog", "servers", "streams")
CURVES_SERVER = str(ROOT / "bench" / "curves_server.py")
HOST = "127.0.0.1"
KEY_HEADER = f"x-api-key:{BENCH_KEY}"
SLEEP_TOOL = "sleep"
# Streams opened (and held) before the measured ones: what is measured is the marginal
# cost of a stream, not the allocator's and the code paths' first use.
WARM_STREAMS = 200
# Sessions the in-flight client spreads its calls over (each with its own connection pool).
INFLIGHT_SESSIONS = 200
INIT_BATCH = 50
# Idle TCP connections opened beside the streams (10,000 more would pass the edge's file limit).
PROBE_CONNECTIONS = 5000
LINE_SECONDS = 600.0
REQUEST_SECONDS = 10.0
LIST_CHANGED = "notifications/tools/list_changed"
KIB = 1024


# The downstream fixture and a gateway in front of it.


@dataclass
class Fixture:
    base: str
    process: psutil.Process

    def url(self, index: int) -> str:
        return f"{self.base}/s{index}/mcp"

    def stats(self) -> dict[str, Any]:
        return httpx2.get(f"{self.base}/control/stats", timeout=REQUEST_SECONDS).json()  # type: ignore[no-any-return]


@contextlib.contextmanager
def fixture(workdir: Path, servers: int, tools: int) -> Iterator[Fixture]:
    """bench/curves_server.py with `servers` servers of `tools` tools, in its own process group."""
    port = free_port()
    argv = [PYTHON, CURVES_SERVER, "--port", str(port), "--servers", str(servers), "--tools", str(tools)]
    with process_group(argv, workdir / f"fixture-{port}.log") as process:
        wait_for(lambda: port_open(port), "the curves fixture")
        yield Fixture(f"http://{HOST}:{port}", psutil.Process(process.pid))


@dataclass
class Gateway:
    base: str
    admin_token: str
    processes: dict[str, psutil.Process]
    state: Path
    # When `mcpgw up` was started (time.time(), as psutil and the fixture tell time) and how
    # long /readyz then took to answer 200.
    launched: float
    ready_s: float

    def target(self, tool: str) -> Target:
        return Target("mcpgw", tool, url=f"{self.base}/mcp", headers=[KEY_HEADER], processes=self.processes)

    def readyz(self) -> dict[str, Any]:
        return httpx2.get(f"{self.base}/readyz", timeout=REQUEST_SECONDS).json()  # type: ignore[no-any-return]

    def server_states(self) -> dict[str, str]:
        response = httpx2.get(
            f"{self.base}/api/servers",
            headers={"authorization": f"Bearer {self.admin_token}"},
            timeout=REQUEST_SECONDS,
        )
        response.raise_for_status()
        return {server["config"]["name"]: server["state"] for server in response.json()}


def http_servers(fixture: Fixture, count: int) -> list[dict[str, Any]]:
    """The fixture's first `count` servers as config entries, without limits or bulkheads."""
    return [
        {
            "name": f"s{i}",
            "connection_type": "http",
            "connection_string": fixture.url(i),
            "tools_to_execute": ["*"],
        }
        for i in range(1, count + 1)
    ]


@contextlib.contextmanager
def gateway(
    workdir: Path, clients: list[dict[str, Any]], tools: int, name: str, heap_dir: Path | None = None
) -> Iterator[Gateway]:
    """`mcpgw up` serving `clients` to one virtual key with no limits (no rate limit, budget or
    bulkhead); yields once /readyz lists at least `tools` tools (its services tracing their
    heaps into `heap_dir` when given)."""
    key = {
        "id": "vk-curves",
        "name": "curves",
        "value": BENCH_KEY,
        "mcp_configs": [{"mcp_client_name": c["name"], "tools_to_execute": ["*"]} for c in clients],
    }
    here = workdir / name
    here.mkdir()
    config = here / "mcpgw.json"
    config.write_text(json.dumps({"mcp": {"client_configs": clients}, "governance": {"virtual_keys": [key]}}))
    admin_token = secrets.token_urlsafe(24)
    env = {**os.environ, "MCPGW_ADMIN_TOKEN": admin_token, **heap_env(heap_dir)}
    port = free_port()
    base = f"http://{HOST}:{port}"
    argv = [PYTHON, "-m", "services.cli", "--log-level", "WARNING", "up", "--config", str(config),
            "--state-dir", str(here / "state"), "--port", str(port)]  # fmt: skip
    launched, began = time.time(), time.monotonic()
    with process_group(argv, here / "mcpgw.log", env=env) as up:
        wait_for(lambda: httpx2.get(f"{base}/readyz", timeout=2).status_code == 200, f"mcpgw ({name})")
        ready_s = time.monotonic() - began
        wait_for(lambda: httpx2.get(f"{base}/readyz", timeout=2).json()["tools"] >= tools, f"{tools} tools")
        processes = gateway_processes(psutil.Process(up.pid))
        yield Gateway(base, admin_token, processes, here / "state", launched, ready_s)


def heap_env(heap_dir: Path | None) -> dict[str, str]:
    return {} if heap_dir is None else {"MCPGW_HEAP_DIR": str(heap_dir)}


def heap_snapshots(processes: dict[str, psutil.Process], directory: Path | None) -> dict[str, Path]:
    """A heap snapshot of each process (none when the run traces no heap)."""
    if directory is None:
        return {}
    return {name: heap.take(process, directory) for name, process in processes.items()}


def rss(processes: dict[str, psutil.Process]) -> dict[str, int]:
    return {name: p.memory_info().rss for name, p in processes.items()}


def read_line(process: subprocess.Popen[bytes], timeout: float = LINE_SECONDS) -> bytes:
    """The child's next stdout line, or TimeoutError: a child that hangs must not hang the bench."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no answer from {process.args!r} within {timeout:.0f}s")
    return process.stdout.readline()


@contextlib.contextmanager
def child(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A helper process we talk to over stdin/stdout; closing its stdin tells it to finish."""
    process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        yield process
    finally:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Sampler:
    """Samples `probe()` every `interval` seconds on a thread while in a `with` block."""

    def __init__(self, probe: Callable[[], dict[str, Any]], interval: float) -> None:
        self._probe = probe
        self._interval = interval
        self._stop = threading.Event()
        self._began = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._began = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with contextlib.suppress(httpx2.HTTPError, OSError, ValueError, KeyError, psutil.Error):
                self.samples.append({"t": round(time.monotonic() - self._began, 3), **self._probe()})
            if self._stop.wait(self._interval):
                return


# 1. Concurrency.


def concurrency_curve(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Calls/s and latency at each concurrency, through mcpgw (HTTP to HTTP) and direct."""
    rows = []
    (workdir / "concurrency").mkdir()
    with echo_downstream(workdir) as echo_url, mcpgw(workdir / "concurrency", echo_url, 0) as (gw, _):
        direct = Target("direct", "echo", url=echo_url)
        for concurrency in args.concurrency:
            for target in (direct, gw):
                point = run_point(target, concurrency, args.duration, 0)
                lat = percentiles(sorted(point.latencies_ms))
                calls = point.calls + point.warmup
                row = {
                    "target": target.name,
                    "concurrency": concurrency,
                    "calls": point.calls,
                    "calls_per_second": point.calls / point.elapsed,
                    "p50_ms": lat["p50"],
                    "p99_ms": lat["p99"],
                    "errors": point.errors,
                    "error_samples": point.error_samples,
                    "cpu_ms_per_call": sum(point.cpu_seconds.values()) * 1000 / max(calls, 1),
                    "rss_mib": {n: b / 2**20 for n, b in point.rss_bytes.items()},
                }
                progress(
                    f"concurrency {target.name} c={concurrency}: {row['calls_per_second']:.0f} calls/s, "
                    f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, errors {point.errors}"
                )
                rows.append(row)
    limits = "key: rate limit 10^12/min, budget 10^9; echo server: bulkhead 4096 + queue 4096"
    return {"duration": args.duration, "limits": limits, "rows": rows}


# 2. Calls in flight at once.


class PooledClient(McpHttpClient):
    """loadgen's client with a pool of `connections` connections, so that one session can
    have that many calls in flight (HTTP/1.1: one call per connection)."""

    def __init__(self, url: str, headers: dict[str, str], connections: int) -> None:
        # Not super().__init__: its pool holds one connection.
        self._url = url
        self._headers = {"accept": ACCEPT, "content-type": "application/json", **headers}
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=LINE_SECONDS),
        )
        self._ids = itertools.count(1)
        self.session_id = None


async def inflight_client(args: argparse.Namespace) -> dict[str, Any]:
    """The client half of the in-flight curve (its own process): open the sessions, say
    "ready", and on a line on stdin start every call at once; the tally goes to stdout."""
    headers = dict(h.split(":", 1) for h in args.header)
    sessions = min(args.sessions, args.count)
    per_session = math.ceil(args.count / sessions)
    clients = [PooledClient(args.url[i % len(args.url)], headers, per_session) for i in range(sessions)]
    latencies: list[float] = []
    errors: list[str] = []
    try:
        for start in range(0, sessions, INIT_BATCH):
            await asyncio.gather(*(c.initialize() for c in clients[start : start + INIT_BATCH]))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def call(index: int) -> None:
            tool = args.tool[index % len(args.tool)]
            started = time.perf_counter()
            try:
                result = await clients[index % sessions].request(
                    "tools/call", {"name": tool, "arguments": {"seconds": args.seconds}}
                )
                text = (result.get("content") or [{}])[0].get("text")
                if result.get("isError") or text != "slept":
                    raise ProtocolViolation(f"unexpected result {str(result)[:200]}")
            except (ProtocolViolation, aiohttp.ClientError, OSError, TimeoutError, KeyError) as exc:
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                return
            latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(call(i) for i in range(args.count)))
        elapsed = time.perf_counter() - began
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    distinct = sorted(set(errors))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "count": args.count,
        "completed": len(latencies),
        "errors": len(errors),
        "error_kinds": {kind: errors.count(kind) for kind in distinct[:10]},
        "elapsed": elapsed,
        "latencies_ms": sorted(round(x * 1000, 3) for x in latencies),
    }


def plateau_heaps(
    processes: dict[str, psutil.Process], directory: Path, down: Fixture, count: int, sleep: float, base: str
) -> tuple[dict[str, int], dict[str, Path]]:
    """Snapshots once (nearly) every call is held at the downstream, or most of the tool's
    sleep passed; with the calls each process held then (the edge's gauge; the downstream's
    count for the connector, which holds at least those)."""
    deadline = time.monotonic() + sleep * 0.8
    while down.stats()["in_flight"] < count * 0.95 and time.monotonic() < deadline:
        time.sleep(0.2)
    text = httpx2.get(f"{base}/metrics", timeout=REQUEST_SECONDS).text
    held = {"edge": int(metric(text, "mcpgw_calls_in_flight") or 0), "connector": down.stats()["in_flight"]}
    snapshots = heap_snapshots(processes, directory)
    progress(f"heap snapshots with {held} calls in flight")
    return held, snapshots


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (all sockets)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return 0


def metric(text: str, name: str) -> float | None:
    """A value of a Prometheus exposition's unlabelled sample `name`."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def inflight_curve(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """`--inflight` calls of a tool that sleeps, started at once; memory of the edge and the
    connector at the plateau against idle, and whether every call completed."""
    count = args.inflight
    # The connector keeps at most CONNECTIONS_PER_SERVER connections to one HTTP server
    # (services/connector/transports.py, not configurable): more calls to one server wait for
    # a connection. The calls are spread over enough servers that none waits.
    servers = max(1, math.ceil(count / CONNECTIONS_PER_SERVER))
    heap_dir = workdir / "heap" if args.heap else None
    with (
        fixture(workdir, servers, 1) as down,
        gateway(workdir, http_servers(down, servers), servers, "inflight", heap_dir) as gw,
    ):
        tools = [f"s{i}_{SLEEP_TOOL}" for i in range(1, servers + 1)]
        argv = [PYTHON, "-m", "bench.curves", "--inflight-client", "--url", f"{gw.base}/mcp",
                "--header", KEY_HEADER, "--count", str(count), "--sessions", str(INFLIGHT_SESSIONS),
                "--seconds", str(args.sleep)]  # fmt: skip
        argv += [arg for tool in tools for arg in ("--tool", tool)]
        watched = {name: gw.processes[name] for name in ("edge", "connector")}
        with child(argv) as client:
            if read_line(client).strip() != b"ready":
                raise RuntimeError("the in-flight client did not open its sessions")
            idle = rss(watched)
            idle_heaps = heap_snapshots(watched, heap_dir)
            cpu_before = cpu_seconds({**gw.processes, "downstream": down.process})

            def edge_gauge() -> dict[str, Any]:
                text = httpx2.get(f"{gw.base}/metrics", timeout=REQUEST_SECONDS).text
                return {"edge_in_flight": metric(text, "mcpgw_calls_in_flight")}

            overflows = listen_overflows()
            # Three samplers: the edge's metrics answer late under this load, the others must not wait.
            with (
                Sampler(lambda: rss(watched), 0.02) as memory,
                Sampler(edge_gauge, 0.25) as edge_held,
                Sampler(lambda: {"downstream_in_flight": down.stats()["in_flight"]}, 0.1) as down_held,
            ):
                assert client.stdin is not None
                client.stdin.write(b"go\n")
                client.stdin.flush()
                if heap_dir is not None:
                    held, busy_heaps = plateau_heaps(watched, heap_dir, down, count, args.sleep, gw.base)
                answer = read_line(client)
                if not answer.strip():
                    raise RuntimeError("the in-flight client ended without its tally")
                tally = json.loads(answer)
            overflows = listen_overflows() - overflows
            cpu_after = cpu_seconds({**gw.processes, "downstream": down.process})
        stats = down.stats()
    peak = {name: max(s[name] for s in memory.samples) for name in watched}
    growth = {name: peak[name] - idle[name] for name in watched}
    edge_most = max((s["edge_in_flight"] or 0 for s in edge_held.samples), default=0)
    lat = percentiles(tally["latencies_ms"])
    result = {
        "count": count,
        "servers": servers,
        "sleep_seconds": args.sleep,
        "sessions": min(INFLIGHT_SESSIONS, count),
        "completed": tally["completed"],
        "errors": tally["errors"],
        "error_kinds": tally["error_kinds"],
        "elapsed": tally["elapsed"],
        "latency_ms": {**lat, "max": tally["latencies_ms"][-1] if tally["latencies_ms"] else 0.0},
        "idle_rss": idle,
        "peak_rss": peak,
        "growth_bytes": growth,
        "kib_per_call": {name: g / count / KIB for name, g in growth.items()},
        "kib_per_call_total": sum(growth.values()) / count / KIB,
        "downstream_most_in_flight": stats["most_in_flight"],
        "downstream_calls": stats["calls"],
        "edge_most_in_flight": edge_most,
        "cpu_seconds": {
            **{n: cpu_after[n] - cpu_before[n] for n in cpu_after},
            "client": tally["cpu_seconds"],
        },
        "memory_samples": memory.samples[:: max(1, len(memory.samples) // 400)],
        "edge_samples": edge_held.samples,
        "downstream_samples": down_held.samples,
        "listen_overflows": overflows,
        **(
            {"heap": {name: heap.held(idle_heaps[name], busy_heaps[name], held[name]) for name in watched}}
            if heap_dir is not None
            else {}
        ),
        "settings": (
            f"{servers} HTTP servers of the fixture (the connector holds at most {CONNECTIONS_PER_SERVER} "
            "connections to each); no server bulkhead (max_concurrency 0); a key without rate limit, "
            "budget or bulkhead; call timeout 60 s (the default); audit delivery confirmed (the default)"
        ),
    }
    progress(
        f"inflight {count}: {result['completed']} completed, {result['errors']} errors in "
        f"{result['elapsed']:.1f} s; {result['kib_per_call_total']:.1f} KiB per call; downstream held "
        f"{stats['most_in_flight']} at once"
    )
    return result


# 3. Catalog size.


async def list_changed_rounds(
    gw: Gateway, down: Fixture, sizes: list[int], timeout: float
) -> list[dict[str, float | None]]:
    """For each size: the fixture changes its list and says so; when a client holding a GET
    stream on /mcp hears notifications/tools/list_changed, and when /readyz shows the size."""
    client = McpHttpClient(f"{gw.base}/mcp", {KEY_HEADER.split(":")[0]: BENCH_KEY})
    heard: asyncio.Queue[float] = asyncio.Queue()

    async def listen(stream: aiohttp.ClientResponse) -> None:
        async for line in stream.content:
            if line.startswith(b"data:") and orjson.loads(line[5:]).get("method") == LIST_CHANGED:
                heard.put_nowait(time.time())

    async def shown(http: aiohttp.ClientSession, size: int) -> float:
        """When /readyz first counts `size` tools (polling another process: no event to await)."""
        while True:
            async with http.get(f"{gw.base}/readyz") as ready:
                if (await ready.json())["tools"] == size:
                    return time.time()
            await asyncio.sleep(0.01)

    rounds: list[dict[str, float | None]] = []
    try:
        await client.initialize()
        stream = await client.open_stream()
        listener = asyncio.ensure_future(listen(stream))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            for size in sizes:
                while not heard.empty():  # a late duplicate of the last round's notification
                    heard.get_nowait()
                watching = asyncio.ensure_future(asyncio.wait_for(shown(http, size), timeout))
                async with http.post(f"{down.base}/control/tools", json={"count": size}) as answer:
                    sent_at = (await answer.json())["sent_at"]
                try:
                    received: float | None = await asyncio.wait_for(heard.get(), timeout)
                except TimeoutError:
                    received = None
                try:
                    showed: float | None = await watching
                except TimeoutError:
                    showed = None
                async with http.get(f"{down.base}/control/stats") as stats:
                    listed_at = (await stats.json())["listed_at"].get("s1")
                rounds.append(
                    {
                        "tools": size,
                        "notified_ms": None if received is None else (received - sent_at) * 1000,
                        "relisted_ms": None if listed_at is None else (listed_at - sent_at) * 1000,
                        "shown_ms": None if showed is None else (showed - sent_at) * 1000,
                    }
                )
        listener.cancel()
        stream.close()
    finally:
        await client.close()
    return rounds


async def snapshot_build(state: Path, copy: Path, repeats: int = 3) -> dict[str, float]:
    """The registry's own build_snapshot timed on a copy of its database (it logs and meters no
    such time): milliseconds to read the catalog from the store, and to build the snapshot."""
    with (
        contextlib.closing(sqlite3.connect(state / "registry.db")) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
    sealer = Sealer((state / "registry.key").read_text().strip())
    store = await RegistryStore.open(f"sqlite+aiosqlite:///{copy}", sealer)
    reads, builds = [], []
    try:
        governance = GovernanceStore(store)
        for _ in range(repeats):
            began = time.perf_counter()
            catalog = await store.catalog()
            rules, disabled = await governance.governance(), await governance.disabled_tools()
            read = time.perf_counter()
            build_snapshot(catalog, rules, disabled)
            reads.append((read - began) * 1000)
            builds.append((time.perf_counter() - read) * 1000)
    finally:
        await store.close()
    return {"read_ms": sorted(reads)[repeats // 2], "build_ms": sorted(builds)[repeats // 2]}


def catalog_curve(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """tools/list over every page, the list_changed round trip and edge memory, per catalog size."""
    rows = []
    for size in args.catalog:
        with (
            fixture(workdir, 1, size) as down,
            gateway(workdir, http_servers(down, 1), size, f"catalog-{size}") as gw,
        ):
            started = rss(gw.processes)
            tally = loadgen(gw.target("s1_sleep"), "--mode", "list", "--min-tools", str(size),
                            "--duration", str(args.list_duration))  # fmt: skip
            listed = rss(gw.processes)
            # Grow by one and shrink back, `rounds` times: each a full re-list of `size` tools.
            sizes = [size + 1 if i % 2 == 0 else size for i in range(args.rounds)]
            rounds = asyncio.run(list_changed_rounds(gw, down, sizes, timeout=60.0))
            snapshot = asyncio.run(snapshot_build(gw.state, workdir / f"registry-{size}.db"))
        lat = percentiles(sorted(tally["latencies_ms"]))

        def median(key: str, rounds: list[dict[str, float | None]] = rounds) -> float | None:
            values = sorted(v for r in rounds if (v := r[key]) is not None)
            return values[len(values) // 2] if values else None

        row = {
            "tools": size,
            "lists": tally["calls"],
            "list_errors": tally["errors"],
            "list_error_samples": tally["error_samples"],
            "list_p50_ms": lat["p50"],
            "list_p99_ms": lat["p99"],
            "rss_mib_started": {n: b / 2**20 for n, b in started.items()},
            "rss_mib_listed": {n: b / 2**20 for n, b in listed.items()},
            "rounds": rounds,
            "notified_ms": median("notified_ms"),
            "relisted_ms": median("relisted_ms"),
            "shown_ms": median("shown_ms"),
            "missed_notifications": sum(1 for r in rounds if r["notified_ms"] is None),
            "snapshot_read_ms": snapshot["read_ms"],
            "snapshot_build_ms": snapshot["build_ms"],
        }
        progress(
            f"catalog {size} tools: tools/list p50 {lat['p50']:.1f} ms; list_changed heard after "
            f"{_ms(row['notified_ms'])} (re-listed {_ms(row['relisted_ms'])}); snapshot built in "
            f"{snapshot['build_ms']:.0f} ms; edge "
            f"{row['rss_mib_listed']['edge']:.0f} MiB"
        )
        rows.append(row)
    return {"list_duration": args.list_duration, "rows": rows}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


# 4. Downstream servers.


def servers_point(workdir: Path, down: Fixture, count: int) -> dict[str, Any]:
    """One gateway of `count` servers: how long until all are connected, and the memory then.

    A server is connected once the connector has listed its tools (the downstream notes when
    it answered that list's last page): the admin API, served by the edge that starts last,
    cannot tell when that was.
    """
    with gateway(workdir, http_servers(down, count), 0, f"servers-{count}") as gw:
        names = [f"s{i}" for i in range(1, count + 1)]

        def connected() -> bool:
            states = gw.server_states()
            return len(states) == count and all(s == "connected" for s in states.values())

        wait_for(connected, f"{count} servers connected", timeout=120)
        wait_for(lambda: len(gw.readyz()["servers"]) >= count, f"{count} servers shown at /readyz")
        shown = time.time()
        listed = down.stats()["listed_at"]
        if not all(listed.get(name, 0) >= gw.launched for name in names):
            raise RuntimeError("the downstream did not see every server listed by this gateway")
        last = max(listed[name] for name in names)
        connector_started = gw.processes["connector"].create_time()
        return {
            "servers": count,
            "edge_ready_s": gw.ready_s,
            "connector_started_s": connector_started - gw.launched,
            "all_connected_s": last - gw.launched,
            "from_connector_start_s": last - connector_started,
            "shown_s": shown - gw.launched,
            "rss_mib": {n: b / 2**20 for n, b in rss(gw.processes).items()},
        }


def servers_curve(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Connector memory and start-up time with 1, 10, 100 HTTP servers (one fixture process)."""
    rows = []
    with fixture(workdir, max(args.servers), 1) as down:
        for count in args.servers:
            row = servers_point(workdir, down, count)
            progress(
                f"servers {count}: all connected {row['all_connected_s']:.2f} s after `mcpgw up` "
                f"({row['from_connector_start_s']:.2f} s after the connector started); connector "
                f"{row['rss_mib']['connector']:.1f} MiB"
            )
            rows.append(row)
    return {"rows": rows}


# 5. Open GET streams.


def hold_streams(target: Target, count: int) -> list[str]:
    """bench/loadgen's argv that opens `count` sessions, each holding its GET stream, until stdin closes."""
    return [PYTHON, "-m", "bench.loadgen", *target.loadgen_args(), "--mode", "sessions",
            "--count", str(count), "--streams"]  # fmt: skip


def connection_bytes(target: Target, edge: psutil.Process, count: int) -> float:
    """Growth of the edge's RSS per TCP connection open to it with no request on it yet: what
    any call or stream pays before its first byte (the edge closes such a connection once its
    header timeout, 10 s, passes, so they are opened in batches as fast as it accepts them)."""
    port = int(str(target.url).split(":")[2].split("/")[0])
    before, fds = edge.memory_info().rss, edge.num_fds()
    held: list[socket.socket] = []

    def accepted() -> bool:
        return edge.num_fds() >= fds + len(held)

    try:
        for start in range(0, count, 500):
            held += [socket.create_connection((HOST, port)) for _ in range(min(500, count - start))]
            wait_for(accepted, "the edge accepting connections", timeout=10)
        return (edge.memory_info().rss - before) / count
    finally:
        for sock in held:
            sock.close()


def streams_curve(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Edge memory per session holding a GET stream open on /mcp: `--streams` of them opened
    after a warm batch of WARM_STREAMS (bench.measure.session_bytes's method; its second
    batch is as large as the first, which 10,000 streams would take past the edge's file
    limit), then per idle TCP connection beside them."""
    (workdir / "streams").mkdir()
    with echo_downstream(workdir) as echo_url:
        streams = stream_bytes(args, workdir, echo_url)
    progress(
        f"streams {args.streams}: {streams['kib_per_stream']:.2f} KiB each (edge held "
        f"{streams['held_at_end']}); an idle connection {streams['kib_per_connection']:.2f} KiB"
    )
    return streams


def stream_bytes(args: argparse.Namespace, workdir: Path, echo_url: str) -> dict[str, Any]:
    """The streams curve's own gateway, and what its edge grows by per stream."""
    heap_dir = workdir / "heap" if args.heap else None
    with mcpgw(workdir / "streams", echo_url, 0, {**os.environ, **heap_env(heap_dir)}) as (gw, _):
        edge = gw.processes["edge"]
        base = str(gw.url).removesuffix("/mcp")
        warm = min(WARM_STREAMS, args.streams)
        with child(hold_streams(gw, warm)) as warmed:
            if read_line(warmed).strip() != b"ready":
                raise RuntimeError("the warm stream holder failed")
            before = edge.memory_info().rss
            before_heap = heap_snapshots({"edge": edge}, heap_dir)
            began = time.monotonic()

            def probe() -> dict[str, Any]:
                streams = httpx2.get(f"{base}/readyz", timeout=REQUEST_SECONDS).json()["streams"]
                return {"streams": streams, "edge_rss": edge.memory_info().rss}

            with child(hold_streams(gw, args.streams)) as holder:
                with Sampler(probe, 0.5) as sampler:
                    line = read_line(holder)
                if line.strip() != b"ready":
                    raise RuntimeError(f"the stream holder failed: {line!r}")
                opened_s = time.monotonic() - began
                after = edge.memory_info().rss
                after_heap = heap_snapshots({"edge": edge}, heap_dir)
                held = httpx2.get(f"{base}/readyz", timeout=REQUEST_SECONDS).json()["streams"]
                # With the streams still held, so that it too is a marginal cost (and within
                # the edge's file limit beside them).
                connections = min(args.streams, PROBE_CONNECTIONS)
                per_connection = connection_bytes(gw, edge, connections)
    result = {
        "streams": args.streams,
        "warm": warm,
        "held_at_end": held,
        "open_seconds": opened_s,
        "rss_before": before,
        "rss_after": after,
        "kib_per_stream": (after - before) / args.streams / KIB,
        "connections": connections,
        "kib_per_connection": per_connection / KIB,
        "samples": sampler.samples,
    }
    if heap_dir is not None:
        result["heap"] = {"edge": heap.held(before_heap["edge"], after_heap["edge"], args.streams)}
    return result


# The run.


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds each (CI)")
    parser.add_argument(
        "--only", default=",".join(CURVES), help=f"comma-separated curves: {','.join(CURVES)}"
    )
    parser.add_argument("--concurrency", type=ints, default=[1, 8, 32, 128, 512])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per concurrency point")
    parser.add_argument("--inflight", type=int, default=10_000, help="calls in flight at once")
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds the in-flight tool sleeps")
    parser.add_argument("--catalog", type=ints, default=[100, 2000, 20_000], help="tools per catalog")
    parser.add_argument("--list-duration", type=float, default=3.0, help="seconds of tools/list per size")
    parser.add_argument("--rounds", type=int, default=3, help="list changes per catalog size")
    parser.add_argument("--servers", type=ints, default=[1, 10, 100])
    parser.add_argument("--streams", type=int, default=10_000, help="GET streams to hold open")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--heap", action="store_true", help="trace heaps: whose code holds a call's and a stream's bytes"
    )
    # The in-flight curve's client process (internal).
    parser.add_argument("--inflight-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--header", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--tool", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=INFLIGHT_SESSIONS, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
    if args.smoke:
        smoke: dict[str, Any] = {"concurrency": [1, 8], "duration": 1.0, "inflight": 200, "sleep": 1.0,
                                 "catalog": [100, 500], "list_duration": 1.0, "rounds": 1,
                                 "servers": [1, 3], "streams": 200}  # fmt: skip
        for name, value in smoke.items():
            if f"--{name.replace('_', '-')}" not in given:
                setattr(args, name, value)
    args.only = [name for name in args.only.split(",") if name]
    unknown = set(args.only) - set(CURVES)
    if unknown:
        parser.error(f"unknown curves {sorted(unknown)}: choose from {','.join(CURVES)}")
    return args


RUNNERS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "concurrency": concurrency_curve,
    "inflight": inflight_curve,
    "catalog": catalog_curve,
    "servers": servers_curve,
    "streams": streams_curve,
}


@dataclass
class Run:
    started: str
    revision: str
    smoke: bool
    machine: dict[str, Any]
    settings: dict[str, Any]
    curves: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # The 1-minute load average as each curve began and ended: other work on the machine shows.
    load: dict[str, tuple[float, float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def run(args: argparse.Namespace) -> Run:
    settings = {k: v for k, v in vars(args).items() if k in (
        "concurrency", "duration", "inflight", "sleep", "catalog", "list_duration", "rounds", "servers",
        "streams", "only", "heap")}  # fmt: skip
    results = Run(
        started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        revision=revision(),
        smoke=args.smoke,
        machine={
            "cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        settings=settings,
    )
    for name in args.only:
        began, load = time.monotonic(), os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix=f"mcpgw-curves-{name}-") as workdir:
            try:
                results.curves[name] = RUNNERS[name](args, Path(workdir))
            except (
                RuntimeError,
                TimeoutError,
                OSError,
                ValueError,
                KeyError,
                httpx2.HTTPError,
                subprocess.SubprocessError,
            ) as exc:
                # One curve that cannot be measured is reported as such; the others still run.
                results.failures[name] = f"{type(exc).__name__}: {exc}"
                progress(f"{name}: not measured: {results.failures[name]}")
        results.seconds[name] = time.monotonic() - began
        results.load[name] = (load, os.getloadavg()[0])
    return results


def raise_file_limit() -> None:
    """As many open files as allowed, for this process and every one it starts (they inherit
    it): 10,000 connections need more than the usual soft limit of 1024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_file_limit()
    if args.inflight_client:
        import uvloop

        sys.stdout.write(json.dumps(uvloop.run(inflight_client(args))) + "\n")
        return 0
    results = dataclasses.asdict(run(args))
    results["targets"] = curves_report.targets(results)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"curves-{'smoke-' if args.smoke else ''}{stamp}"
    base.with_suffix(".json").write_text(json.dumps(results))
    text = curves_report.markdown(results, f"{base.name}.png")
    base.with_suffix(".md").write_text(text)
    curves_report.chart(results, base.with_suffix(".png"))
    print(text)
    progress(f"results: {base}.json, .md, .png")
    # Memory targets unmet are findings, not failures; a curve not measured or a call that
    # failed is.
    checks = results["targets"]
    failed = results["failures"] or any(
        checks[n]["met"] is False for n in ("errors", "inflight_not_completed")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
