"""The gateway under drill: `mcpgw up` in front of an HTTP echo (restartable) and a stdio echo,
its processes as the supervisor's children, its admin API, and its exported audit records."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nats.errors
import orjson
import psutil

from bench.drills.load import TOOLS, DrillClient
from bench.targets import ECHO_SERVER, PYTHON, gateway_processes, mcpgw, port_open, process_group, wait_for
from services.bus import AUDIT_STREAM
from services.settings import AuditSettings
from services.up.main import ADMIN_TOKEN_FILE, free_port

SERVICES = ("nats", "registry", "connector", "audit", "edge")
REQUEST_SECONDS = 5.0
POLL_SECONDS = 0.2


class Unhealthy(Exception):
    """The gateway did not come back to serving both downstreams within the deadline."""


class Echo:
    """The HTTP echo downstream, killed and restarted on the same port by the downstream drill."""

    def __init__(self, workdir: Path, stack: contextlib.ExitStack) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._workdir = workdir
        self._stack = stack
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (not waiting for it to listen: the drill measures that from outside)."""
        argv = [PYTHON, ECHO_SERVER, "--port", str(self.port)]
        self.process = self._stack.enter_context(process_group(argv, self._workdir / "echo.log"))

    def kill(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


class AuditIndex:
    """Tool call records of the exported audit file counted by JSON-RPC request id, read
    incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: Counter[str] = Counter()
        # Event ids per request id: a duplicate with the same event id is one event exported twice.
        self.events: dict[str, list[str]] = {}
        self.total = 0
        self._offset = 0
        self._partial = b""

    def refresh(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as source:
            source.seek(self._offset)
            chunk = source.read()
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                attributes = orjson.loads(line)["attributes"]
                if attributes.get("mcp.method.name", "tools/call") != "tools/call":
                    continue  # every operation is audited; the drills count calls
                request_id = str(attributes.get("jsonrpc.request.id", ""))
                self.ids[request_id] += 1
                self.events.setdefault(request_id, []).append(str(attributes.get("mcpgw.event_id", "")))
                self.total += 1


@dataclass
class Gateway:
    base: str
    admin_token: str
    up: psutil.Process
    echo: Echo
    audit: AuditIndex
    # Every gateway process seen: whatever of them outlives the run is killed at its end.
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    _probes: int = 0

    @property
    def mcp(self) -> str:
        return f"{self.base}/mcp"

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def processes(self) -> dict[str, psutil.Process]:
        """The supervisor's children by service name, as they are now (a dying one may be absent)."""
        for _ in range(20):
            try:
                found = gateway_processes(self.up)
                for process in found.values():
                    self.seen[process.pid] = process
                    for child in process.children(recursive=True):
                        self.seen[child.pid] = child
                return found
            except psutil.Error:
                # A child that died between listing and reading its command line.
                time.sleep(0.05)
        raise RuntimeError("the supervisor's children kept changing under inspection")

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes().items() if name != "up"}

    def nats_url(self) -> str:
        argv = self.processes()["nats"].cmdline()
        return f"nats://127.0.0.1:{argv[argv.index('-p') + 1]}"

    def http(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS))

    async def readyz(self) -> dict[str, Any] | None:
        try:
            async with self.http() as http, http.get(f"{self.base}/readyz") as response:
                return await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One admin API request; its status and JSON body (None when it has none)."""
        headers = {"authorization": f"Bearer {self.admin_token}"}
        async with (
            self.http() as http,
            http.request(method, f"{self.base}{path}", json=body, headers=headers) as response,
        ):
            text = await response.read()
            return response.status, orjson.loads(text) if text else None

    async def wait_healthy(self, timeout: float) -> float:
        """Wait until every service runs, /readyz is ready and a call to each downstream succeeds;
        the seconds it took."""
        began = time.monotonic()
        deadline = began + timeout
        last = "not checked yet"
        while time.monotonic() < deadline:
            last = await self._health()
            if not last:
                return time.monotonic() - began
            await asyncio.sleep(POLL_SECONDS)
        raise Unhealthy(f"not serving again within {timeout:.0f} s ({last})")

    async def _health(self) -> str:
        """What is still wrong ("" when nothing is)."""
        running = self.processes()
        missing = [name for name in SERVICES if name not in running]
        if missing:
            return f"not running: {', '.join(missing)}"
        ready = await self.readyz()
        if ready is None or ready.get("tools", 0) < len(TOOLS):
            return f"/readyz: {ready}"
        self._probes += 1
        client = DrillClient(self.mcp, f"probe-{self._probes}", timeout=REQUEST_SECONDS)
        try:
            for tool in TOOLS:
                record = await client.call(tool)
                if not record.ok:
                    return f"{tool}: {record.error}"
        finally:
            await client.close()
        return ""

    async def audit_pending(self) -> int | None:
        """Audit events not yet exported: the edge's spool plus what the durable consumer has not
        had acknowledged (None while either cannot be asked)."""
        ready = await self.readyz()
        if ready is None:
            return None
        try:
            nc = await nats.connect(
                self.nats_url(), connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0,
                error_cb=_quiet,
            )  # fmt: skip
        except (nats.errors.Error, OSError, TimeoutError, KeyError):
            return None
        try:
            durable = AuditSettings.model_fields["audit_durable"].default
            info = await nc.jetstream().consumer_info(AUDIT_STREAM, durable, timeout=REQUEST_SECONDS)
        except (nats.errors.Error, OSError, TimeoutError):
            return None
        finally:
            await nc.close()
        return int(ready.get("audit_backlog", 0)) + int(info.num_pending or 0) + int(info.num_ack_pending)

    async def drain_audit(self, settle: float, timeout: float) -> float:
        """Wait until nothing is pending and the exported records stopped rising for `settle`
        seconds (or the deadline passed); the seconds it took."""
        began = time.monotonic()
        deadline = began + timeout
        last, since = -1, began
        while time.monotonic() < deadline:
            self.audit.refresh()
            now = time.monotonic()
            if self.audit.total != last:
                last, since = self.audit.total, now
            elif now - since >= settle and await self.audit_pending() == 0:
                break
            await asyncio.sleep(POLL_SECONDS)
        self.audit.refresh()
        return time.monotonic() - began


def reap(seen: dict[int, psutil.Process]) -> list[str]:
    """Kill every process in `seen` that is still running; what they were."""
    left = []
    for process in seen.values():
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(process.cmdline())[-120:])
                process.kill()
    return left


async def _quiet(_: Exception) -> None:
    """nats-py prints every connection error unless given a callback; the drills poll instead."""


@contextlib.contextmanager
def started(workdir: Path, left_behind: list[str]) -> Iterator[Gateway]:
    """The echo downstream and `mcpgw up` (HTTP and stdio echo, audit on); yields once both serve.

    `left_behind` receives the gateway processes that outlived the gateway's own stop.
    """
    with contextlib.ExitStack() as stack:
        echo = Echo(workdir, stack)
        echo.start()
        wait_for(lambda: port_open(echo.port), "the echo downstream")
        seen: dict[int, psutil.Process] = {}
        stack.callback(lambda: left_behind.extend(reap(seen)))
        target, audit_file = stack.enter_context(mcpgw(workdir, echo.url, 0))
        state = audit_file.parent.parent
        token = os.environ.get("MCPGW_ADMIN_TOKEN") or (state / ADMIN_TOKEN_FILE).read_text().strip()
        base = str(target.url).removesuffix("/mcp")
        gateway = Gateway(base, token, target.processes["up"], echo, AuditIndex(audit_file), seen)
        gateway.processes()
        yield gateway
