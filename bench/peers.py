"""Peer gateways for `make bench-peers`, each installed under bench/.peers/<name>/.

`make bench-peers` installs each with pip (a virtual environment) or npm; each peer here
starts from there, in front of the same echo downstream as mcpgw, configured as its docs
say. The gateways (ContextForge, FastMCP's proxy) reach it over HTTP; the one-hop bridges
(mcp-proxy, supergateway) spawn it over stdio and serve it over Streamable HTTP.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import psutil

from bench.targets import ECHO_SERVER, PYTHON, ROOT, Target, port_open, process_group, wait_for
from services.up.main import free_port, nats_argv, nats_server_binary

PEERS_DIR = ROOT / "bench" / ".peers"
ADMIN_EMAIL = "admin@example.com"


def peer_python(name: str, executable: str = "python") -> str:
    path = PEERS_DIR / name / "bin" / executable
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run 'make bench-peers' to install the peers")
    return str(path)


def tree(process: subprocess.Popen[bytes]) -> dict[str, psutil.Process]:
    """A peer's process and its workers, for CPU and memory accounting: not the echo
    downstream a bridge spawns (the downstream's cost is every target's, not the peer's)."""
    root = psutil.Process(process.pid)
    children = {f"child-{c.pid}": c for c in root.children(recursive=True) if not _is_echo(c)}
    return {"main": root} | children


def _is_echo(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return ECHO_SERVER in process.cmdline()
    return False


@contextlib.contextmanager
def fastmcp(workdir: Path, echo_url: str) -> Iterator[Target]:
    """FastMCP's proxy as `create_proxy(url).run("http")` makes it, defaults unchanged."""
    port = free_port()
    script = str(ROOT / "bench" / "peer_servers" / "fastmcp_proxy.py")
    with process_group(
        [peer_python("fastmcp"), script, echo_url, str(port)], workdir / "fastmcp.log"
    ) as proc:
        wait_for(lambda: _port_answers(port), "the FastMCP proxy")
        yield Target("fastmcp", "echo", url=f"http://127.0.0.1:{port}/mcp", processes=tree(proc))


@contextlib.contextmanager
def contextforge(workdir: Path, echo_url: str) -> Iterator[Target]:
    """IBM ContextForge with SQLite, rate limits off, and a virtual server holding the echo tool."""
    port = free_port()
    secret = os.urandom(24).hex()
    env = {
        **os.environ,
        "JWT_SECRET_KEY": secret,
        "AUTH_ENCRYPTION_SECRET": os.urandom(24).hex(),
        "DATABASE_URL": f"sqlite:///{workdir / 'contextforge.db'}",
        "PLATFORM_ADMIN_EMAIL": ADMIN_EMAIL,
        "PLATFORM_ADMIN_PASSWORD": "Bench-" + os.urandom(8).hex(),
        "BASIC_AUTH_PASSWORD": "Bench-" + os.urandom(8).hex(),
        "RATE_LIMITING_ENABLED": "false",
        "TOOL_RATE_LIMIT": "1000",
        "MCPGATEWAY_UI_ENABLED": "false",
        "MCPGATEWAY_ADMIN_API_ENABLED": "false",
        "CACHE_TYPE": "memory",
        "LOG_LEVEL": "ERROR",
        # The downstream is on loopback, which its SSRF guard refuses by default.
        "SSRF_ALLOW_LOCALHOST": "true",
        "SSRF_ALLOW_PRIVATE_NETWORKS": "true",
    }
    argv = [peer_python("contextforge", "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)]
    with process_group(argv, workdir / "contextforge.log", env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx2.get(f"{base}/health", timeout=2).status_code == 200, "ContextForge")
        token = subprocess.run(
            [peer_python("contextforge"), "-m", "mcpgateway.utils.create_jwt_token",
             "--username", ADMIN_EMAIL, "--exp", "600", "--admin"],
            env=env, capture_output=True, check=True, text=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        api = httpx2.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=30)
        with api:
            _created(
                api.post("/gateways", json={"name": "echo", "url": echo_url, "transport": "STREAMABLEHTTP"})
            )
            tool = next(t for t in _created(api.get("/tools")) if t["originalName"] == "echo")
            server = _created(
                api.post("/servers", json={"server": {"name": "bench", "associated_tools": [tool["id"]]}})
            )
        yield Target(
            "contextforge",
            tool["name"],
            url=f"{base}/servers/{server['id']}/mcp",
            headers=[f"authorization:Bearer {token}"],
            processes=tree(proc),
        )


@contextlib.contextmanager
def mcp_proxy(workdir: Path, echo_url: str) -> Iterator[Target]:
    """mcp-proxy (PyPI) serving the echo server's stdio as Streamable HTTP, stateful (its default)."""
    port = free_port()
    argv = [peer_python("mcp-proxy", "mcp-proxy"), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--log-level", "WARNING", "--", PYTHON, ECHO_SERVER, "--stdio"]
    with process_group(argv, workdir / "mcp-proxy.log") as proc:
        wait_for(lambda: _port_answers(port), "mcp-proxy")
        yield Target("mcp-proxy", "echo", url=f"http://127.0.0.1:{port}/mcp", processes=tree(proc))


@contextlib.contextmanager
def supergateway(workdir: Path, echo_url: str) -> Iterator[Target]:
    """supergateway (npm) serving the echo server's stdio as Streamable HTTP, with sessions
    (`--stateful`: without it, it spawns the server anew for every request)."""
    port = free_port()
    main = PEERS_DIR / "supergateway" / "node_modules" / "supergateway" / "dist" / "index.js"
    if not main.exists():
        raise FileNotFoundError(f"{main} is missing: run 'make bench-peers' to install the peers")
    argv = ["node", str(main), "--stdio", f"{PYTHON} {ECHO_SERVER} --stdio", "--outputTransport"]
    argv += ["streamableHttp", "--stateful", "--port", str(port), "--logLevel", "none"]
    with process_group(argv, workdir / "supergateway.log") as proc:
        wait_for(lambda: _port_answers(port), "supergateway")
        yield Target("supergateway", "echo", url=f"http://127.0.0.1:{port}/mcp", processes=tree(proc))


@contextlib.contextmanager
def floor(workdir: Path, echo_url: str, audited: bool = False) -> Iterator[Target]:
    """The stack's floor (bench/floor_server.py): its edge and connector, and with `audited`
    a JetStream stream and a consumer that acks, each process measured as mcpgw's are."""
    name = "floor-audited" if audited else "floor"
    ports = {role: free_port() for role in ("edge", "connector", "nats")}
    script = [PYTHON, "-m", "bench.floor_server"]
    with contextlib.ExitStack() as stack:
        processes: dict[str, psutil.Process] = {}
        nats_url: list[str] = []
        if audited:
            state = workdir / name
            state.mkdir()
            argv = nats_argv(nats_server_binary(), ports["nats"], state)
            processes["nats"] = psutil.Process(
                stack.enter_context(process_group(argv, state / "out.log")).pid
            )
            wait_for(functools.partial(port_open, ports["nats"]), "the floor's nats-server")
            nats_url = ["--nats", f"nats://127.0.0.1:{ports['nats']}"]
        roles = {
            "connector": ["--port", str(ports["connector"]), "--downstream", echo_url],
            "edge": [
                "--port",
                str(ports["edge"]),
                "--connector",
                f"127.0.0.1:{ports['connector']}",
                *nats_url,
            ],
        }
        if audited:
            roles["audit"] = nats_url
        for role, argv in roles.items():
            started = stack.enter_context(
                process_group([*script, role, *argv], workdir / f"{name}-{role}.log")
            )
            processes[role] = psutil.Process(started.pid)
            if role in ports:
                wait_for(functools.partial(port_open, ports[role]), f"the floor's {role}")
        yield Target(name, "echo", url=f"http://127.0.0.1:{ports['edge']}/mcp", processes=processes)


def _created(response: httpx2.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(f"ContextForge answered {response.status_code}: {response.text[:300]}")
    return json.loads(response.content)


def _port_answers(port: int) -> bool:
    with contextlib.suppress(httpx2.HTTPError):
        httpx2.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
        return True
    return False


PEERS: dict[str, Callable[[Path, str], contextlib.AbstractContextManager[Target]]] = {
    "contextforge": contextforge,
    "fastmcp": fastmcp,
    "mcp-proxy": mcp_proxy,
    "supergateway": supergateway,
    "floor": floor,
    "floor-audited": functools.partial(floor, audited=True),
}
