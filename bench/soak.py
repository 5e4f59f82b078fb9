"""Soak: memory of every mcpgw process over many streamed calls that are each cancelled.

    python -m bench.soak [--calls 20000] [--workers 8] [--warmup 1000] [--every 2000] [--out DIR]

Starts a small Streamable HTTP downstream (this module, `--serve-downstream PORT`) and
`mcpgw up` as users run it, with that downstream as a `per_user` server, an admin token,
and two virtual keys that each carry their own credentials for it (`PUT
/api/keys/{id}/credentials/{server}`). Then `--workers` clients (2025-11-25, one session
per worker and key, the keys alternating call by call) each make calls that:

1. POST `tools/call` of `soak_hold` with a `progressToken`, so the edge streams the answer
   (SSE) and reaches the connector over `StreamTool`;
2. read until the downstream's first progress arrives (it names the caller, which checks
   that the call went out with that key's own credentials);
3. POST `notifications/cancelled` for that request id on the same session (202);
4. read the stream to its end: its answer must say the call was cancelled by the client.

The RSS of each mcpgw process (and, apart, of the downstream) is sampled after `--warmup`
calls and then every `--every` calls, with the edge's /readyz and the downstream's own
counters; the table goes to stdout and to `<out>/soak-<UTC timestamp>.md`. Exit status 1
when a call did not end as cancelled or a process grew more than 10% after the warm-up.
Everything listens on and talks to 127.0.0.1 only, every request has a timeout, and the
run stops by itself after `--max-seconds`. `MCPGW_*` variables set for this command reach
the gateway (e.g. MCPGW_EVENT_RETENTION_SECONDS and _BYTES, how much of the SSE answers'
events NATS keeps).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx2
import nats
import nats.errors
import orjson
import psutil
import uvicorn
from grpc import __version__ as grpc_version
from mcp.server.mcpserver import Context, MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.targets import PYTHON, ROOT, gateway_processes, port_open, process_group, revision, wait_for
from services.bus import AUDIT_STREAM, EVENTS_STREAM
from services.settings import EdgeSettings
from services.up.main import free_port

HOST = "127.0.0.1"
SERVER = "soak"
HOLD_TOOL = f"{SERVER}_hold"
WHOAMI_TOOL = f"{SERVER}_whoami"
USERS = ("alice", "bob")
PROTOCOL_VERSION = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
# How long the downstream holds a call that nobody cancels (longer than any bound below).
HOLD_SECONDS = 120.0
# Bounds of one call: to its first progress, from the cancellation to the end of its stream,
# and the whole of it; and of every other request.
FIRST_EVENT_SECONDS = 10.0
ANSWER_SECONDS = 10.0
CALL_SECONDS = 30.0
REQUEST_SECONDS = 10.0
# What a process may grow by from the warm-up sample to the end (the acceptance bound).
GROWTH_LIMIT = 0.10
SAMPLES_KEPT = 5
CANCELLED_TEXT = "cancelled by the client"
MIB = 2**20


class SoakViolation(Exception):
    """An answer a client following the protocol cannot accept."""


# The downstream: `hold` reports one progress naming its caller and waits to be cancelled.


@dataclass
class DownstreamStats:
    started: int = 0
    cancelled: int = 0
    completed: int = 0
    in_flight: int = 0
    # The MCP sessions the calls of each caller came on: one per key's connector session.
    sessions: dict[str, set[str]] = field(default_factory=dict)


def serve_downstream(port: int) -> None:
    server = MCPServer("soak", log_level="WARNING")
    stats = DownstreamStats()

    def caller(ctx: Context) -> tuple[str, str]:
        """Who calls (from the per-key credentials), and on which MCP session."""
        request = ctx.request_context.request
        headers = getattr(request, "headers", {})
        token = str(headers.get("authorization", "")).removeprefix("Bearer ")
        user = token.removeprefix("soak-").removesuffix("-token") if token else "shared"
        return user, str(headers.get("mcp-session-id", ""))

    @server.tool()
    async def hold(label: str, ctx: Context) -> str:
        """Report one progress (its message names the caller), then wait until cancelled."""
        user, session = caller(ctx)
        stats.sessions.setdefault(user, set()).add(session)
        stats.started += 1
        stats.in_flight += 1
        try:
            await ctx.report_progress(0, None, user)
            await anyio.sleep(HOLD_SECONDS)
            stats.completed += 1
            return f"not cancelled: {label}"
        except anyio.get_cancelled_exc_class():
            stats.cancelled += 1
            raise
        finally:
            stats.in_flight -= 1

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The caller, as its credentials name it."""
        return caller(ctx)[0]

    async def report(_: Request) -> JSONResponse:
        return JSONResponse(
            {
                "started": stats.started,
                "cancelled": stats.cancelled,
                "completed": stats.completed,
                "in_flight": stats.in_flight,
                "sessions": {user: len(ids) for user, ids in stats.sessions.items()},
            }
        )

    app = server.streamable_http_app(host=HOST)
    app.router.routes.append(Route("/stats", report, methods=["GET"]))
    config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", access_log=False)
    anyio.run(uvicorn.Server(config).serve)


@contextlib.contextmanager
def downstream(workdir: Path) -> Iterator[tuple[str, psutil.Process]]:
    """The downstream in its own process group; yields its base URL and its process."""
    port = free_port()
    argv = [PYTHON, "-m", "bench.soak", "--serve-downstream", str(port)]
    with process_group(argv, workdir / "downstream.log") as process:
        wait_for(lambda: port_open(port), "the soak downstream")
        yield f"http://{HOST}:{port}", psutil.Process(process.pid)


# The gateway, its keys and their credentials.


@dataclass
class Gateway:
    base: str
    admin_token: str
    processes: dict[str, psutil.Process]
    # user -> the virtual key's secret
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def mcp(self) -> str:
        return f"{self.base}/mcp"


@contextlib.contextmanager
def gateway(workdir: Path, downstream_url: str) -> Iterator[Gateway]:
    """`mcpgw up` with the downstream as its one, per_user, server; yields once it lists its tools."""
    server = {
        "name": SERVER,
        "connection_type": "http",
        "connection_string": f"{downstream_url}/mcp",
        "tools_to_execute": ["*"],
        "per_user": True,
    }
    config = workdir / "mcpgw.json"
    config.write_text(json.dumps({"mcp": {"client_configs": [server]}}))
    admin_token = secrets.token_urlsafe(24)
    env = {**os.environ, "MCPGW_ADMIN_TOKEN": admin_token}
    port = free_port()
    argv = [PYTHON, "-m", "services.cli", "--log-level", "WARNING", "up", "--config", str(config),
            "--state-dir", str(workdir / "mcpgw-state"), "--port", str(port)]  # fmt: skip
    with process_group(argv, workdir / "mcpgw.log", env=env) as up:
        base = f"http://{HOST}:{port}"

        def ready() -> bool:
            response = httpx2.get(f"{base}/readyz", timeout=2)
            return response.status_code == 200 and response.json()["tools"] >= 2

        wait_for(ready, "mcpgw with the soak server's tools")
        yield Gateway(base, admin_token, gateway_processes(psutil.Process(up.pid)))


def provision(gw: Gateway) -> None:
    """Two keys, each with its own credentials for the per_user server; returns once each
    key's calls reach the downstream as that key."""
    admin = {"authorization": f"Bearer {gw.admin_token}"}
    selection = [{"mcp_client_name": SERVER, "tools_to_execute": ["*"]}]
    for user in USERS:
        created = httpx2.post(
            f"{gw.base}/api/keys",
            json={"name": f"soak-{user}", "mcp_configs": selection},
            headers=admin,
            timeout=REQUEST_SECONDS,
        )
        created.raise_for_status()
        key = created.json()
        credentials = {"headers": {"Authorization": f"Bearer soak-{user}-token"}}
        put = httpx2.put(
            f"{gw.base}/api/keys/{key['id']}/credentials/{SERVER}",
            json=credentials,
            headers=admin,
            timeout=REQUEST_SECONDS,
        )
        if put.status_code != 204:
            raise RuntimeError(f"setting {user}'s credentials: HTTP {put.status_code} {put.text[:200]}")
        gw.secrets[user] = key["secret"]
    # New credentials restart the server's sessions on the connector: wait until each key is
    # served as itself.
    for user in USERS:

        def served(user: str = user) -> bool:
            return whoami(gw, user) == user

        wait_for(served, f"{user}'s calls served with {user}'s credentials")


def whoami(gw: Gateway, user: str) -> str:
    """Who the downstream says `user`'s key calls as ("" while it cannot tell yet)."""
    try:
        return _whoami(gw, user)
    except (KeyError, ValueError, IndexError, AttributeError):
        return ""


def _whoami(gw: Gateway, user: str) -> str:
    headers = {"accept": ACCEPT, "authorization": f"Bearer {gw.secrets[user]}"}
    hello = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": initialize_params()}
    opened = httpx2.post(gw.mcp, json=hello, headers=headers, timeout=REQUEST_SECONDS)
    headers |= {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": PROTOCOL_VERSION}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": WHOAMI_TOOL}}
    answer = httpx2.post(gw.mcp, json=body, headers=headers, timeout=REQUEST_SECONDS).json()
    result = answer.get("result") or {}
    if result.get("isError"):
        return ""
    return str((result.get("content") or [{}])[0].get("text", ""))


def initialize_params() -> dict[str, Any]:
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "mcpgw-soak", "version": "1"},
    }


# The clients.


class SseReader:
    """The JSON-RPC messages of an event stream, event by event (WHATWG framing: `data:`
    lines joined, a blank line ends an event; events without data, such as the priming
    event, are skipped)."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content

    async def next_message(self) -> dict[str, Any] | None:
        """The next message, or None at the end of the stream."""
        data: list[bytes] = []
        while True:
            line = await self._content.readline()
            if not line:
                if data:
                    raise SoakViolation("the stream ended in the middle of an event")
                return None
            line = line.rstrip(b"\r\n")
            if line:
                if line.startswith(b"data:"):
                    value = line[5:]
                    data.append(value[1:] if value.startswith(b" ") else value)
                continue
            joined, data = b"\n".join(data), []
            if joined:
                message = orjson.loads(joined)
                if not isinstance(message, dict):
                    raise SoakViolation(f"an event that is no JSON-RPC message: {message!r}")
                return message


@dataclass
class Tally:
    cancelled: int = 0
    other: int = 0
    errors: int = 0
    other_samples: list[str] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.cancelled + self.other + self.errors

    def add_other(self, what: str) -> None:
        self.other += 1
        if len(self.other_samples) < SAMPLES_KEPT:
            self.other_samples.append(what)

    def add_error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < SAMPLES_KEPT:
            self.error_samples.append(what)


class KeyClient:
    """One MCP session of one key, over a worker's HTTP connections."""

    def __init__(self, http: aiohttp.ClientSession, url: str, user: str, secret: str) -> None:
        self.user = user
        self._http = http
        self._url = url
        self._headers = {
            "accept": ACCEPT,
            "content-type": "application/json",
            "authorization": f"Bearer {secret}",
        }
        self._ids = itertools.count(1)

    async def initialize(self) -> None:
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": initialize_params()}
        async with self._http.post(self._url, data=orjson.dumps(body), headers=self._headers) as response:
            answer = await response.read()
            session = response.headers.get("mcp-session-id")
            if response.status != 200 or not session:
                raise SoakViolation(f"initialize: HTTP {response.status}: {answer[:200]!r}")
        self._headers |= {"mcp-session-id": session, "mcp-protocol-version": PROTOCOL_VERSION}
        await self._notify({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def _notify(self, message: dict[str, Any]) -> None:
        async with self._http.post(self._url, data=orjson.dumps(message), headers=self._headers) as response:
            await response.read()
            if response.status != 202:
                raise SoakViolation(f"{message['method']}: HTTP {response.status}, expected 202")

    async def streamed_and_cancelled(self, label: str) -> dict[str, Any]:
        """One call, streamed, cancelled at its first progress, read to its end; its answer."""
        request_id = next(self._ids)
        token = f"{label}-progress"
        params = {"name": HOLD_TOOL, "arguments": {"label": label}, "_meta": {"progressToken": token}}
        body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
        async with self._http.post(self._url, data=orjson.dumps(body), headers=self._headers) as response:
            try:
                return await self._cancel_at_first_progress(response, request_id, token)
            except BaseException:
                # Leaving an unread stream open would hold the call on the gateway meanwhile.
                response.close()
                raise

    async def _cancel_at_first_progress(
        self, response: aiohttp.ClientResponse, request_id: int, token: str
    ) -> dict[str, Any]:
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        if response.status != 200 or kind != "text/event-stream":
            text = (await response.read())[:300]
            raise SoakViolation(f"tools/call: HTTP {response.status} {kind}, expected SSE: {text!r}")
        events = SseReader(response.content)
        async with asyncio.timeout(FIRST_EVENT_SECONDS):
            first = await events.next_message()
        progress = (first or {}).get("params") or {}
        if (first or {}).get("method") != "notifications/progress" or progress.get("progressToken") != token:
            raise SoakViolation(f"the first message is not this call's progress: {first!r}")
        if progress.get("message") != self.user:
            raise SoakViolation(f"{self.user}'s call reached the downstream as {progress.get('message')!r}")
        cancel = {"requestId": request_id, "reason": "soak"}
        await self._notify({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel})
        async with asyncio.timeout(ANSWER_SECONDS):
            while True:
                message = await events.next_message()
                if message is None:
                    raise SoakViolation("the stream ended without an answer")
                if message.get("id") == request_id and "method" not in message:
                    break
            trailing = await events.next_message()
        if trailing is not None:
            raise SoakViolation(f"a message after the answer: {trailing!r}")
        return message


def cancelled_answer(message: dict[str, Any]) -> bool:
    """Whether an answer is the gateway's "cancelled by the client" tool error."""
    result = message.get("result")
    if not isinstance(result, dict) or result.get("isError") is not True:
        return False
    content = result.get("content") or [{}]
    return CANCELLED_TEXT in str(content[0].get("text", ""))


# Sampling.


@dataclass
class Sample:
    calls: int
    seconds: float
    rss: dict[str, int]
    fds: dict[str, int]
    readyz: dict[str, Any]
    downstream: dict[str, Any]
    # JetStream streams by name: their messages, bytes and subjects.
    jetstream: dict[str, dict[str, int]]


class Sampler:
    def __init__(self, gw: Gateway, downstream_url: str, downstream_process: psutil.Process) -> None:
        self.samples: list[Sample] = []
        self._gw = gw
        self._downstream_url = downstream_url
        self._processes = {**gw.processes, "downstream": downstream_process}
        self._began = time.monotonic()
        self._http: aiohttp.ClientSession | None = None
        self._nc: Any = None

    async def __aenter__(self) -> Sampler:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS))
        nats_argv = self._gw.processes["nats"].cmdline()
        port = nats_argv[nats_argv.index("-p") + 1]
        self._nc = await nats.connect(
            f"nats://{HOST}:{port}", connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._http is not None
        await self._http.close()
        await self._nc.close()

    async def _stream_state(self, name: str) -> dict[str, int]:
        try:
            reply = await self._nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=REQUEST_SECONDS)
            state = orjson.loads(reply.data).get("state", {})
        except (nats.errors.Error, orjson.JSONDecodeError):
            return {}
        return {key: int(state.get(key, 0)) for key in ("messages", "bytes", "num_subjects")}

    async def _json(self, url: str) -> dict[str, Any]:
        assert self._http is not None
        try:
            async with self._http.get(url) as response:
                return await response.json()  # type: ignore[no-any-return]
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def sample(self, calls: int) -> Sample:
        rss, fds = {}, {}
        for name, process in self._processes.items():
            with process.oneshot():
                rss[name] = process.memory_info().rss
                fds[name] = process.num_fds()
        taken = Sample(
            calls=calls,
            seconds=time.monotonic() - self._began,
            rss=rss,
            fds=fds,
            readyz=await self._json(f"{self._gw.base}/readyz"),
            downstream=await self._json(f"{self._downstream_url}/stats"),
            jetstream={name: await self._stream_state(name) for name in (EVENTS_STREAM, AUDIT_STREAM)},
        )
        self.samples.append(taken)
        print(sample_line(taken), file=sys.stderr, flush=True)
        return taken


def sample_line(sample: Sample) -> str:
    memory = " ".join(f"{name}={rss / MIB:.1f}" for name, rss in sample.rss.items())
    return (
        f"[{sample.seconds:7.1f}s] {sample.calls:6d} calls: RSS MiB {memory}; "
        f"streams={sample.readyz.get('streams')} backlog={sample.readyz.get('audit_backlog')} "
        f"downstream in flight={sample.downstream.get('in_flight')}"
    )


def milestones(calls: int, warmup: int, every: int) -> set[int]:
    return set(range(warmup, calls, every)) if warmup < calls else set()


async def drive(args: argparse.Namespace, gw: Gateway, sampler: Sampler) -> tuple[Tally, float]:
    """`args.calls` streamed-and-cancelled calls over `args.workers` workers; sampled on the way."""
    tally = Tally()
    numbers = itertools.count()
    marks = milestones(args.calls, args.warmup, args.every)

    async def worker(index: int) -> None:
        # Two connections: the call's stream holds one while the cancellation goes on the other.
        connector = aiohttp.TCPConnector(limit=2)
        timeout = aiohttp.ClientTimeout(total=CALL_SECONDS, sock_connect=REQUEST_SECONDS)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            clients = [KeyClient(http, gw.mcp, user, gw.secrets[user]) for user in USERS]
            for client in clients:
                await client.initialize()
            for turn in itertools.count():
                n = next(numbers)
                if n >= args.calls:
                    return
                client = clients[turn % len(clients)]
                try:
                    async with asyncio.timeout(CALL_SECONDS):
                        answer = await client.streamed_and_cancelled(f"w{index}-c{n}")
                    if cancelled_answer(answer):
                        tally.cancelled += 1
                    else:
                        tally.add_other(json.dumps(answer)[:300])
                except (SoakViolation, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    tally.add_error(f"{client.user}: {type(exc).__name__}: {exc}"[:300])
                if tally.done in marks:
                    await sampler.sample(tally.done)

    began = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(args.workers)))
    return tally, time.monotonic() - began


# The report.


def growth(before: int, after: int) -> float:
    return (after - before) / before if before else 0.0


def markdown(args: argparse.Namespace, tally: Tally, elapsed: float, samples: list[Sample]) -> str:
    warm, end = samples[0], samples[-1]
    lines = [
        f"## mcpgw soak, {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        "",
        f"mcpgw {revision()}, grpcio {grpc_version}; {psutil.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB, "
        f"Python {platform.python_version()}, loopback. {args.calls} calls over {args.workers} workers "
        f"(two virtual keys alternating, one session per worker and key) to the per_user server "
        f"`{SERVER}`, protocol {PROTOCOL_VERSION}: each a `tools/call` with a progressToken (SSE, "
        f"StreamTool), cancelled with `notifications/cancelled` at its first progress, read to its end.",
        "",
        f"Outcomes: **{tally.cancelled} answered cancelled**, {tally.other} other answers, "
        f"{tally.errors} errors; {elapsed:.1f} s ({tally.done / elapsed:.0f} calls/s).",
        "",
        f"RSS after the warm-up ({warm.calls} calls) and at the end ({end.calls} calls, all calls over):",
        "",
        "| process | warm-up MiB | end MiB | max MiB | growth | fds warm-up → end |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in warm.rss:
        peak = max(s.rss[name] for s in samples)
        grew = growth(warm.rss[name], end.rss[name])
        flag = " **over 10%**" if grew > GROWTH_LIMIT else ""
        label = f"{name} (not mcpgw)" if name == "downstream" else name
        lines.append(
            f"| {label} | {warm.rss[name] / MIB:.1f} | {end.rss[name] / MIB:.1f} | {peak / MIB:.1f} "
            f"| {grew * 100:+.1f}%{flag} | {warm.fds[name]} → {end.fds[name]} |"
        )
    names = list(warm.rss)
    lines += [
        "",
        "Every sample (RSS in MiB; `streams` and `backlog` from the edge's /readyz, "
        "`in flight` and `sessions` per key from the downstream):",
        "",
        "| calls | s | "
        + " | ".join(names)
        + " | streams | backlog | in flight | sessions | events msgs | events MiB | events subjects |",
        "|---:|---:|" + "---:|" * len(names) + "---:|---:|---:|---|---:|---:|---:|",
    ]
    for sample in samples:
        memory = " | ".join(f"{sample.rss[n] / MIB:.1f}" for n in names)
        sessions = sample.downstream.get("sessions", {})
        events = sample.jetstream.get(EVENTS_STREAM, {})
        lines.append(
            f"| {sample.calls} | {sample.seconds:.0f} | {memory} | {sample.readyz.get('streams', '?')} "
            f"| {sample.readyz.get('audit_backlog', '?')} | {sample.downstream.get('in_flight', '?')} "
            f"| {', '.join(f'{u}: {n}' for u, n in sorted(sessions.items()))} "
            f"| {events.get('messages', '?')} | {events.get('bytes', 0) / MIB:.1f} "
            f"| {events.get('num_subjects', '?')} |"
        )
    stats = end.downstream
    limits = [event_limit(name) for name in ("event_retention_seconds", "event_retention_bytes")]
    lines += [
        "",
        f"Downstream: {stats.get('started')} calls started, {stats.get('cancelled')} cancelled there, "
        f"{stats.get('completed')} ran to their end, {stats.get('in_flight')} still in flight.",
        "",
        "JetStream at the end: "
        + "; ".join(
            f"{name} {state.get('messages')} messages, {state.get('bytes', 0) / MIB:.1f} MiB "
            f"on {state.get('num_subjects')} subjects"
            for name, state in end.jetstream.items()
        )
        + f". {EVENTS_STREAM} is in NATS's memory and keeps every SSE answer's events "
        f"within {' and '.join(limits)}.",
    ]
    for title, kept in (("Other answers", tally.other_samples), ("Errors", tally.error_samples)):
        if kept:
            lines += ["", f"{title} (first {len(kept)}):", "", *(f"- `{s}`" for s in kept)]
    return "\n".join(lines) + "\n"


def event_limit(setting: str) -> str:
    """One of the edge's limits on the events stream as this run set it (or its default)."""
    variable = f"MCPGW_{setting.upper()}"
    field_info = EdgeSettings.model_fields.get(setting)
    default = "unset" if field_info is None else f"{field_info.default} (the default)"
    return f"{variable} = {os.environ.get(variable, default)}"


def failed(tally: Tally, samples: list[Sample]) -> bool:
    warm, end = samples[0], samples[-1]
    grew = any(
        growth(warm.rss[name], end.rss[name]) > GROWTH_LIMIT for name in warm.rss if name != "downstream"
    )
    return grew or tally.other > 0 or tally.errors > 0


async def soak(args: argparse.Namespace, gw: Gateway, downstream_url: str, process: psutil.Process) -> str:
    async with Sampler(gw, downstream_url, process) as sampler:
        if args.warmup >= args.calls:
            await sampler.sample(0)
        async with asyncio.timeout(args.max_seconds):
            tally, elapsed = await drive(args, gw, sampler)
        # Let what outlives the calls (resumable answers' pumps, the audit spool) settle.
        await asyncio.sleep(2.0)
        await sampler.sample(tally.done)
        report = markdown(args, tally, elapsed, sampler.samples)
        args.failed = failed(tally, sampler.samples)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1000, help="calls before the first sample")
    parser.add_argument("--every", type=int, default=2000, help="calls between samples")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="the run stops after this")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--serve-downstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.calls < 1 or args.workers < 1 or args.every < 1 or args.warmup < 0:
        parser.error("--calls, --workers and --every must be positive, --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_downstream:
        serve_downstream(args.serve_downstream)
        return 0
    with tempfile.TemporaryDirectory(prefix="mcpgw-soak-") as tmp:
        workdir = Path(tmp)
        with downstream(workdir) as (url, process), gateway(workdir, url) as gw:
            provision(gw)
            report = asyncio.run(soak(args, gw, url, process))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"soak-{stamp}.md"
    path.write_text(report)
    print(report)
    print(f"results: {path}", file=sys.stderr)
    return 1 if args.failed else 0


if __name__ == "__main__":
    sys.exit(main())
