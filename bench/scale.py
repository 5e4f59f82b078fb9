"""`make scale-test`: deploy/docker-compose.yml run as separate hosts on this machine, then
broken one piece at a time under load.

    sudo python -m bench.scale [--step-seconds 8] [--sessions 8] [--out bench/results]

Each compose service becomes a host: a network namespace of its own with its own address on
a bridge, names resolved through /etc/netns/<ns>/hosts. Each host runs the service's command
and environment as the compose file gives them (read from it, so the two cannot drift):
the mcpgw image's entrypoint becomes `python -m services.cli`, `nats` the bundled nats-server,
`postgres` a cluster made with initdb, `haproxy` Debian's haproxy. A `dns:///alias:port`
address (compose's network aliases) becomes the aliased hosts' addresses.

Real clients (the `mcp` SDK, one session each) call through the balancer while the harness
kills a NATS node, an edge, a connector and a registry in turn (each started again after),
and cuts an edge's link for 10 s. For each step it reports calls ok, failed and wrong,
sessions re-initialized, recovery time, and audit records lost. Needs root (ip netns).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import nats
import yaml
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import RequestParamsMeta
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.targets import ROOT, revision
from services import bus
from services.contracts import events_pb2
from services.up.main import nats_server_binary

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
SUBNET = "10.77.0"
BRIDGE = "mcpgwbr0"
GATEWAY_ADDRESS = f"{SUBNET}.254"
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/lib/postgresql/bin"))
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
START_SECONDS = 60.0
CUT_SECONDS = 10.0
TOOL = "text_reverse"
STEPS = 6


@dataclass
class Host:
    """One compose service as a host: its namespace, address, command and environment."""

    name: str
    index: int
    service: dict[str, Any]
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def ns(self) -> str:
        return f"mcpgw-{self.name}"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.index + 1}"

    @property
    def veth(self) -> str:
        return f"mcv{self.index}"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Topology:
    """The compose file's services as hosts on one bridge; every process is stopped and every
    namespace removed however the run ends."""

    def __init__(self, workdir: Path, secrets_env: dict[str, str]) -> None:
        self.workdir = workdir
        self.compose = yaml.safe_load(COMPOSE.read_text())
        self.secrets = secrets_env
        names = list(self.compose["services"])
        self.hosts = {
            name: Host(name, index, self.compose["services"][name]) for index, name in enumerate(names)
        }
        for host in self.hosts.values():
            self._command(host)

    # The compose file, read as a host runs it.

    def aliases(self, alias: str) -> list[Host]:
        found = [
            h
            for h in self.hosts.values()
            if h.name == alias
            or alias in ((h.service.get("networks") or {}).get("default") or {}).get("aliases", [])
        ]
        return found

    def _value(self, value: object) -> str:
        """A compose value with ${VAR} and ${VAR:?message} from the run's secrets, and
        dns:///alias:port as the aliased hosts' addresses."""
        found = re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: self.secrets[m.group(1)], str(value))
        match = re.fullmatch(r"dns:///([\w-]+):(\d+)", found)
        if match:
            found = ",".join(f"{h.address}:{match.group(2)}" for h in self.aliases(match.group(1)))
        return found

    def _volumes(self, host: Host) -> dict[str, str]:
        mapped = {}
        for volume in host.service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                mapped[target] = str((DEPLOY / source).resolve())
            else:
                path = self.workdir / "volumes" / host.name
                path.mkdir(parents=True, exist_ok=True)
                mapped[target] = str(path)
        return mapped

    def _command(self, host: Host) -> None:
        service = host.service
        volumes = self._volumes(host)

        def mapped(arg: str) -> str:
            for target, source in volumes.items():
                arg = arg.replace(target, source)
            return self._value(arg)

        env = {k: self._value(v) for k, v in (service.get("environment") or {}).items()}
        image = str(service.get("image", ""))
        command = [mapped(str(a)) for a in service.get("command") or []]
        if image.startswith("nats"):
            host.argv = [nats_server_binary(), *command]
        elif image.startswith("postgres"):
            data = self.workdir / "volumes" / host.name
            host.argv = [
                str(PG_BIN / "postgres"),
                "-D",
                str(data),
                "-h",
                host.address,
                "-p",
                "5432",
                "-k",
                str(data),
            ]
            host.user = "postgres"
        elif image.startswith("haproxy"):
            host.argv = [HAPROXY, "-db", "-f", volumes["/usr/local/etc/haproxy/haproxy.cfg"]]
        elif "entrypoint" in service:
            entry = [sys.executable if a == "python" else mapped(str(a)) for a in service["entrypoint"]]
            host.argv = [*entry, *command]
        else:
            host.argv = [sys.executable, "-m", "services.cli", *command]
        state = self.workdir / "state" / host.name
        state.mkdir(parents=True, exist_ok=True)
        host.env = {**env, "MCPGW_STATE_DIR": str(state), "PYTHONPATH": str(ROOT)}

    # The network.

    def build(self) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{GATEWAY_ADDRESS}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        lines = ["127.0.0.1 localhost"] + [f"{h.address} {h.name}" for h in self.hosts.values()]
        for host in self.hosts.values():
            sh("ip", "netns", "add", host.ns)
            sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", f"{host.veth}p")
            sh("ip", "link", "set", f"{host.veth}p", "netns", host.ns)
            sh("ip", "netns", "exec", host.ns, "ip", "link", "set", f"{host.veth}p", "name", "eth0")
            sh("ip", "netns", "exec", host.ns, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
            sh("ip", "netns", "exec", host.ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", host.ns, "ip", "link", "set", "lo", "up")
            sh("ip", "link", "set", host.veth, "master", BRIDGE, "up")
            etc = Path("/etc/netns") / host.ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text("\n".join(lines) + "\n")

    def teardown(self) -> None:
        for host in self.hosts.values():
            self.stop(host, signal.SIGKILL)
        for host in self.hosts.values():
            # What escaped its process group (stdio servers start sessions of their own).
            listed = subprocess.run(
                ["ip", "netns", "pids", host.ns], capture_output=True, text=True, timeout=30
            )
            for pid in listed.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True, timeout=30)
            shutil.rmtree(Path("/etc/netns") / host.ns, ignore_errors=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, timeout=30)

    def cut(self, host: Host, up: bool) -> None:
        sh("ip", "link", "set", host.veth, "up" if up else "down")

    # Processes.

    def start(self, host: Host) -> None:
        prefix = ["ip", "netns", "exec", host.ns]
        if host.user:
            prefix += ["runuser", "-u", host.user, "--"]
        log = (self.workdir / f"{host.name}.log").open("ab")
        # `python` is this venv's, as it is the image's (the demo's stdio server runs on it).
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        env = {"PATH": path, "HOME": str(self.workdir), **host.env}
        host.process = subprocess.Popen(
            [*prefix, *host.argv],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, host: Host, sig: int = signal.SIGTERM) -> None:
        if host.process is None or host.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(host.process.pid, sig)
        try:
            host.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(host.process.pid, signal.SIGKILL)
            host.process.wait(15)

    def ports(self, host: Host) -> list[int]:
        """Where a host is ready: the ports its service listens on."""
        kind = str(host.service.get("image", ""))
        if kind.startswith("nats"):
            return [4222]
        if kind.startswith("postgres"):
            return [5432]
        if kind.startswith("haproxy"):
            return [8080]
        argv = " ".join(host.argv)
        found = re.findall(r"(?:--listen|--port) (?:0\.0\.0\.0:)?(\d+)", argv)
        listen = host.env.get("MCPGW_AUDIT_LISTEN", "")
        if listen:
            found.append(listen.rsplit(":", 1)[1])
        if "clock_http" in argv:
            found.append(re.findall(r"--port (\d+)", argv)[0])
        return [int(p) for p in found]

    def ready(self, host: Host, timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        for port in self.ports(host):
            while not _open(host.address, port):
                if host.process is not None and host.process.poll() is not None:
                    raise RuntimeError(f"{host.name} exited: see {self.workdir / (host.name + '.log')}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{host.name} not listening on {port} within {timeout:.0f}s")
                time.sleep(0.1)

    def order(self) -> list[Host]:
        """Every host after what it depends on."""
        done: list[Host] = []

        def visit(host: Host) -> None:
            if host in done:
                return
            for needed in host.service.get("depends_on", {}):
                visit(self.hosts[needed])
            done.append(host)

        for host in self.hosts.values():
            visit(host)
        return done


def _open(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def init_postgres(topology: Topology) -> None:
    host = next(h for h in topology.hosts.values() if h.user == "postgres")
    data = topology.workdir / "volumes" / host.name
    data.mkdir(parents=True, exist_ok=True)
    env = host.service["environment"]
    password = topology.secrets["POSTGRES_PASSWORD"]
    pwfile = topology.workdir / "pgpass"
    pwfile.write_text(password)
    shutil.chown(pwfile, "postgres")
    shutil.chown(data, "postgres")
    data.chmod(0o700)
    initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", env["POSTGRES_USER"], "--pwfile", str(pwfile),
              "-A", "scram-sha-256", "--no-sync"]  # fmt: skip
    subprocess.run(["runuser", "-u", "postgres", "--", *initdb], check=True, capture_output=True, timeout=120)
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {SUBNET}.0/24 scram-sha-256\n")
    topology.start(host)
    topology.ready(host)
    createdb = [str(PG_BIN / "createdb"), "-h", host.address, "-U", env["POSTGRES_USER"], env["POSTGRES_DB"]]
    subprocess.run(
        createdb, check=True, capture_output=True, timeout=60, env={**os.environ, "PGPASSWORD": password}
    )


# The load: real clients through the balancer.


@dataclass
class Outcome:
    at: float
    ok: bool
    wrong: bool = False
    request: str = ""
    session: int = 0
    reopened: bool = False
    lost: bool = False


@dataclass
class Load:
    outcomes: list[Outcome] = field(default_factory=list)
    running: bool = True


@contextlib.asynccontextmanager
async def client(url: str, seen: dict[str, str]) -> AsyncIterator[ClientSession]:
    """A session of the `mcp` SDK; `seen` gets the session id and protocol the gateway gave."""

    async def note(response: httpx2.Response) -> None:
        for header in ("mcp-session-id", "mcp-protocol-version"):
            if header in response.headers:
                seen[header] = response.headers[header]

    async with (
        httpx2.AsyncClient(timeout=10, event_hooks={"response": [note]}) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        with anyio.fail_after(15):
            result = await session.initialize()
        seen["mcp-protocol-version"] = str(result.protocol_version)
        yield session


async def still_served(url: str, seen: dict[str, str]) -> bool:
    """Whether the gateway still serves a session whose SDK client gave up on it: a call
    under its id, through the balancer, from a new connection."""
    if "mcp-session-id" not in seen:
        return False
    headers = {**seen, "accept": "application/json, text/event-stream", "content-type": "application/json"}
    body = {
        "jsonrpc": "2.0",
        "id": "check",
        "method": "tools/call",
        "params": {"name": TOOL, "arguments": {"text": "ab"}},
    }
    async with httpx2.AsyncClient(timeout=10) as http:
        for _ in range(20):
            try:
                reply = await http.post(url, json=body, headers=headers)
            except httpx2.HTTPError:
                await anyio.sleep(0.25)
                continue
            if reply.status_code == 200:
                return '"ba"' in reply.text
            if reply.status_code in (404, 400):
                return False
            await anyio.sleep(0.25)
    return False


async def one_client(url: str, index: int, load: Load) -> None:
    """One session calling for as long as the run lasts. A failed call is counted and the
    session goes on. A session the SDK gives up on is checked (is it still served, under its
    id, by whichever edge answers?) and a new one opened."""
    count = 0
    while load.running:
        seen: dict[str, str] = {}
        try:
            async with client(url, seen) as session:
                while load.running:
                    count += 1
                    request = f"s{index}-{count}-{secrets.token_hex(3)}"
                    meta = RequestParamsMeta(llm_request_id=request)  # type: ignore[typeddict-unknown-key]
                    try:
                        with anyio.fail_after(15):
                            result = await session.call_tool(TOOL, {"text": request}, meta=meta)
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        raise
                    except Exception:  # the call failed (timeout, HTTP error, MCP error): go on
                        load.outcomes.append(Outcome(time.monotonic(), False, session=index))
                        await anyio.sleep(0.05)
                        continue
                    text_of = "".join(b.text for b in result.content if b.type == "text")
                    ok = not result.is_error
                    wrong = ok and text_of != request[::-1]
                    load.outcomes.append(Outcome(time.monotonic(), ok and not wrong, wrong, request, index))
                    if not ok:
                        await anyio.sleep(0.05)
        except Exception:  # the SDK gave the session up: does the gateway still serve it?
            gone = Outcome(time.monotonic(), False, session=index, reopened=True)
            load.outcomes.append(gone)
            gone.lost = not await still_served(url, seen)


@dataclass
class Step:
    name: str
    started: float
    event: float
    ended: float = 0.0


def summarize(step: Step, load: Load, audited: set[str]) -> dict[str, Any]:
    during = [o for o in load.outcomes if step.started <= o.at < step.ended]
    failures = [o for o in during if not o.ok]
    recovery = 0.0
    if failures:
        last = max(o.at for o in failures)
        after = [o.at for o in during if o.ok and o.at > last]
        recovery = (min(after) if after else step.ended) - step.event
    ok = [o for o in during if o.ok]
    # The longest time no session got an answer: a stall, even where nothing failed.
    times = [step.started, *sorted(o.at for o in ok), step.ended]
    return {
        "step": step.name,
        "ok": len(ok),
        "failed": len(failures),
        "wrong": sum(o.wrong for o in during),
        "recovery_s": round(max(recovery, 0.0), 2),
        "stall_s": round(max(b - a for a, b in itertools.pairwise(times)), 2),
        "sessions_reopened": sum(o.reopened for o in during),
        "sessions_lost": sum(o.lost for o in during),
        "audit_lost": sum(1 for o in ok if o.request not in audited),
    }


async def audited_requests(topology: Topology) -> set[str]:
    host = next(h for h in topology.hosts.values() if h.user == "postgres")
    env = host.service["environment"]
    url = (
        f"postgresql+asyncpg://{env['POSTGRES_USER']}:{topology.secrets['POSTGRES_PASSWORD']}"
        f"@{host.address}:5432/{env['POSTGRES_DB']}"
    )
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT body FROM audit_records WHERE method = 'tools/call'")
            )
            return {events_pb2.OperationEvent.FromString(r[0]).llm_request_id for r in rows}
    finally:
        await engine.dispose()


CATCH_UP_SECONDS = 30.0


async def audit_leader(topology: Topology) -> Host:
    """The NATS node leading the audit stream: killing it is the worst case for the audit
    (a new leader must be elected before any record is stored)."""
    nodes = [h for name, h in topology.hosts.items() if name.startswith("nats-")]
    nc = await nats.connect([f"nats://{h.address}:4222" for h in nodes], connect_timeout=2)
    try:
        info = await nc.jetstream().stream_info(bus.AUDIT_STREAM)
    finally:
        await nc.close()
    leader = info.cluster.leader if info.cluster is not None else None
    return topology.hosts.get(str(leader), nodes[1])


async def scenario(topology: Topology, sessions: int, step_seconds: float) -> list[dict[str, Any]]:
    balancer = next(
        h for h in topology.hosts.values() if str(h.service.get("image", "")).startswith("haproxy")
    )
    url = f"http://{balancer.address}:8080/mcp"
    load = Load()
    steps: list[Step] = []

    def pick(prefix: str, number: int = 1) -> Host:
        return topology.hosts[f"{prefix}-{number}"]

    async def kill_and_restart(host: Host) -> None:
        await anyio.to_thread.run_sync(topology.stop, host, signal.SIGKILL)
        await anyio.sleep(step_seconds / 2)
        topology.start(host)
        await anyio.to_thread.run_sync(topology.ready, host)

    async def kill_audit_leader() -> None:
        await kill_and_restart(await audit_leader(topology))

    async def cut(host: Host) -> None:
        topology.cut(host, up=False)
        await anyio.sleep(CUT_SECONDS)
        topology.cut(host, up=True)

    plan: list[tuple[str, Any]] = [
        ("steady", None),
        ("kill the audit's NATS leader", lambda: kill_audit_leader()),
        ("kill edge-1", lambda: kill_and_restart(pick("edge"))),
        ("kill connector-1", lambda: kill_and_restart(pick("connector"))),
        ("kill registry-1", lambda: kill_and_restart(pick("registry"))),
        ("cut edge-2's link 10 s", lambda: cut(pick("edge", 2))),
    ]
    async with anyio.create_task_group() as group:
        for index in range(sessions):
            group.start_soon(one_client, url, index, load)
        await anyio.sleep(2)  # sessions open; the first step starts counting from here
        for name, action in plan:
            # One failure at a time: the last one's records are stored before the next
            # breaks something (a killed edge takes what it still spools with it).
            await caught_up(topology, load, CATCH_UP_SECONDS)
            step = Step(name, time.monotonic(), time.monotonic() + 1)
            await anyio.sleep(1)
            if action is not None:
                await action()
            await anyio.sleep(step_seconds)
            step.ended = time.monotonic()
            steps.append(step)
        load.running = False
    # Every ok call's record must reach the store: wait for the audit to drain.
    audited = await caught_up(topology, load, 60)
    return [summarize(step, load, audited) for step in steps]


async def caught_up(topology: Topology, load: Load, seconds: float) -> set[str]:
    """The calls audited once every ok call so far is (or `seconds` have passed)."""
    wanted = {o.request for o in load.outcomes if o.ok}
    audited: set[str] = set()
    with anyio.move_on_after(seconds):
        while not wanted <= audited:
            audited = await audited_requests(topology)
            await anyio.sleep(0.5)
    return audited


async def bounded(topology: Topology, sessions: int, step_seconds: float) -> list[dict[str, Any]]:
    """The scenario, ended if it runs far past its plan (a hang is a failure, not a wait)."""
    with anyio.fail_after(STEPS * (step_seconds + 2 * START_SECONDS) + 120):
        return await scenario(topology, sessions, step_seconds)


def report(rows: list[dict[str, Any]], sessions: int, when: str) -> str:
    lines = [
        f"# Scale test, {when}",
        "",
        f"`python -m bench.scale` at {revision()}: deploy/docker-compose.yml as "
        f"separate hosts (network namespaces on one bridge), {sessions} `mcp` SDK sessions calling {TOOL} "
        "through HAProxy.",
        "",
        "| step | calls ok | failed | wrong | recovery s | longest stall s | SDK sessions given up "
        "| sessions lost | audit records lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    columns = ("step", "ok", "failed", "wrong", "recovery_s", "stall_s", "sessions_reopened", "sessions_lost")
    for row in rows:
        lines.append("| " + " | ".join(str(row[k]) for k in (*columns, "audit_lost")) + " |")
    lines += [
        "",
        "Recovery: from the event to the first answer after the step's last failure. Longest "
        "stall: the longest time in the step with no answer to any session. SDK sessions given up: "
        "the `mcp` client ended its session on a transport error (a new one is opened); lost: the "
        "gateway no longer served that session's id afterwards.",
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def deployed(workdir: Path) -> Iterator[Topology]:
    secrets_env = {
        "MCPGW_SESSION_SECRET": secrets.token_urlsafe(32),
        "MCPGW_ADMIN_TOKEN": secrets.token_urlsafe(32),
        "MCPGW_REGISTRY_KEY": secrets.token_urlsafe(32),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
    }
    topology = Topology(workdir, secrets_env)
    try:
        topology.build()
        init_postgres(topology)
        for host in topology.order():
            if host.process is None:
                topology.start(host)
                topology.ready(host)
        yield topology
    finally:
        topology.teardown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the scale test makes network namespaces: run it as root", file=sys.stderr)
        return 2
    when = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-scale-"))
    workdir.chmod(0o755)  # postgres runs as its own user under it
    # A CI timeout's SIGTERM unwinds like Ctrl-C: the namespaces and processes go with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with deployed(workdir) as topology:
        rows = anyio.run(bounded, topology, args.sessions, args.step_seconds)
    text_report = report(rows, args.sessions, when)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"scale-{when}.md").write_text(text_report)
    (args.out / f"scale-{when}.json").write_text(json.dumps(rows, indent=2))
    print(text_report)
    kills = [r for r in rows if r["step"].startswith("kill")]
    failed = [r for r in rows if r["audit_lost"] or r["wrong"] or r["sessions_lost"]]
    failed += [r for r in kills if r["recovery_s"] > 5.0]
    if failed:
        print(f"failed: {[r['step'] for r in failed]}; every host's log is in {workdir}", file=sys.stderr)
        return 1
    if not os.environ.get("MCPGW_SCALE_KEEP"):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
