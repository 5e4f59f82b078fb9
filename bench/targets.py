"""What the bench points load at: the downstream itself, mcpgw, and peer gateways.

Every target is started as its users run it, on free loopback ports, in its own
process group so that stopping it leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import psutil

from services.up.main import free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ECHO_SERVER = str(ROOT / "bench" / "echo_server.py")
WIDE_SERVERS = 10
TOOLS_PER_WIDE_SERVER = 200
START_SECONDS = 120.0


@dataclass
class Target:
    """One thing to load: an MCP endpoint (or stdio command) and the processes that serve it."""

    name: str
    tool: str
    url: str | None = None
    stdio: str | None = None
    headers: list[str] = field(default_factory=list)
    # The proxy's own processes: what its CPU and memory are measured over.
    processes: dict[str, psutil.Process] = field(default_factory=dict)

    def loadgen_args(self) -> list[str]:
        where = ["--stdio", self.stdio] if self.stdio else ["--url", str(self.url)]
        headers = [arg for header in self.headers for arg in ("--header", header)]
        return [*where, "--tool", self.tool, *headers]


def wait_for(check: Callable[[], bool], what: str, timeout: float = START_SECONDS) -> None:
    """Poll `check()` until it is true; startup has no event to wait on across processes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx2.HTTPError, OSError):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f}s")


@contextlib.contextmanager
def process_group(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def echo_downstream(workdir: Path) -> Iterator[str]:
    """The shared HTTP downstream; yields its MCP URL."""
    port = free_port()
    argv = [PYTHON, ECHO_SERVER, "--port", str(port)]
    with process_group(argv, workdir / "echo.log"):
        wait_for(lambda: port_open(port), "the echo downstream")
        yield f"http://127.0.0.1:{port}/mcp"


@contextlib.contextmanager
def otlp_sink(workdir: Path, sample_ratio: float) -> Iterator[dict[str, str]]:
    """bench/otlp_sink.py on a free port; yields the environment that sends a gateway's traces
    (sampled at `sample_ratio`, as an operator would) and metrics to it, the audit trail staying
    in the file the bench reads."""
    port = free_port()
    argv = [PYTHON, "-m", "bench.otlp_sink", "--port", str(port)]
    with process_group(argv, workdir / "otlp-sink.log"):
        wait_for(lambda: port_open(port), "the OTLP sink")
        yield {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": f"{sample_ratio:g}",
            "MCPGW_AUDIT_EXPORTER": "file",
        }


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# The key every mcpgw point calls with: limits it never reaches, so each call pays for
# being counted (its rate limit and budget, and the server's limit and bulkhead).
BENCH_KEY = "sk-bench-key-with-generous-limits-0123"
GENEROUS = {"request_max_limit": 10**12, "request_reset_duration": "1m"}


def gateway_config(echo_url: str, wide_servers: int, limited: bool = True) -> dict[str, object]:
    """echo over HTTP and stdio, plus `wide_servers` stdio servers of 200 tools each, all
    under generous limits (or none: what the limits cost is the difference)."""
    stdio = {"command": PYTHON, "args": [ECHO_SERVER, "--stdio"], "envs": ["PATH", "HOME"]}
    limits = {"rate_limit": GENEROUS, "max_concurrency": 4096, "max_queue": 4096} if limited else {}
    clients: list[dict[str, object]] = [
        {"name": "echo", "connection_type": "http", "connection_string": echo_url, "tools_to_execute": ["*"],
         "tool_pricing": {"echo": 0.0001}, **limits},
        {"name": "echostdio", "connection_type": "stdio", "stdio_config": stdio, "tools_to_execute": ["*"],
         "tool_pricing": {"echo": 0.0001}, **limits},
    ]  # fmt: skip
    for index in range(wide_servers):
        args = [ECHO_SERVER, "--stdio", "--name", f"wide{index}", "--tools", str(TOOLS_PER_WIDE_SERVER - 1)]
        clients.append(
            {
                "name": f"wide{index}",
                "connection_type": "stdio",
                "stdio_config": {**stdio, "args": args},
                "tools_to_execute": ["*"],
            }
        )
    key = {
        "id": "vk-bench",
        "name": "bench",
        "value": BENCH_KEY,
        "mcp_configs": [{"mcp_client_name": c["name"], "tools_to_execute": ["*"]} for c in clients],
        **(
            {"rate_limit": GENEROUS, "budget": {"max_limit": 10.0**9, "reset_duration": "1M"}}
            if limited
            else {}
        ),
    }
    return {"mcp": {"client_configs": clients}, "governance": {"virtual_keys": [key]}}


def expected_tools(wide_servers: int) -> int:
    return 2 + wide_servers * TOOLS_PER_WIDE_SERVER


@contextlib.contextmanager
def mcpgw(
    workdir: Path, echo_url: str, wide_servers: int, env: dict[str, str] | None = None, limited: bool = True
) -> Iterator[tuple[Target, Path]]:
    """`mcpgw up` with every service and NATS (in `env`, else this process's environment);
    yields the target and its audit file."""
    config = workdir / "mcpgw.json"
    config.write_text(json.dumps(gateway_config(echo_url, wide_servers, limited)))
    state = workdir / "mcpgw-state"
    port = free_port()
    argv = [PYTHON, "-m", "services.cli", "--log-level", "WARNING", "up",
            "--config", str(config), "--state-dir", str(state), "--port", str(port)]  # fmt: skip
    with process_group(argv, workdir / "mcpgw.log", env) as up:
        tools = expected_tools(wide_servers)

        def ready() -> bool:
            response = httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            return response.status_code == 200 and response.json()["tools"] >= tools

        wait_for(ready, f"mcpgw with {tools} tools")
        target = Target(
            "mcpgw", "echo_echo", url=f"http://127.0.0.1:{port}/mcp", headers=[f"x-api-key:{BENCH_KEY}"]
        )
        target.processes = gateway_processes(psutil.Process(up.pid))
        yield target, state / "audit" / "spans.jsonl"


def gateway_processes(up: psutil.Process) -> dict[str, psutil.Process]:
    """The supervisor and its direct children (nats, registry, connector, audit, edge).

    The connector's own children are stdio downstreams: not the gateway's cost.
    """
    found = {"up": up}
    for child in up.children():
        argv = child.cmdline()
        if not argv:
            continue  # a child that died and is not reaped yet
        if "nats-server" in os.path.basename(argv[0]):
            found["nats"] = child
        elif "services.cli" in argv:
            found[argv[argv.index("services.cli") + 1]] = child
    return found


def revision() -> str:
    """The checkout's commit (with `+changes` when the work tree differs from it)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{'+changes' if changed else ''}" if head else "unknown"
