"""The load generator: MCP clients in one process, driving one target for a fixed time.

Each worker is its own client: its own TCP connection, its own session (initialize,
then notifications/initialized), then `tools/call` (or `tools/list`) in a loop. Every
answer is checked: JSON or SSE framing, the echoed text, no error. The result is one
JSON object on stdout (see `Tally.report`).

Modes:
    call      tools/call of --tool with a unique text per call, checked on the way back
    list      tools/list (every page), checked to hold at least --min-tools tools
    sessions  open --count idle sessions (with --streams, each holding its GET
              stream open), print "ready", hold them until stdin closes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

PROTOCOL_VERSION = "2025-06-18"
ACCEPT = "application/json, text/event-stream"
INITIALIZE_PARAMS = {
    "protocolVersion": PROTOCOL_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "mcpgw-bench", "version": "1"},
}
ERROR_SAMPLES = 5


class ProtocolViolation(Exception):
    """The target answered something an MCP client cannot accept."""


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def failed(self, reason: str) -> None:
        self.errors += 1
        if len(self.error_samples) < ERROR_SAMPLES:
            self.error_samples.append(reason)

    def report(self, elapsed: float, warmup: int = 0) -> dict[str, Any]:
        return {
            "warmup": warmup,
            "calls": len(self.latencies),
            "errors": self.errors,
            "error_samples": self.error_samples,
            "elapsed": elapsed,
            "latencies_ms": [round(x * 1000, 4) for x in self.latencies],
        }


def _sse_messages(body: bytes) -> list[dict[str, Any]]:
    messages = []
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if data:
            messages.append(orjson.loads(data))
    return messages


class McpHttpClient:
    """A minimal, strict Streamable HTTP client over one aiohttp connection."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self._url = url
        self._headers = {"accept": ACCEPT, "content-type": "application/json", **headers}
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, force_close=False))
        self._ids = itertools.count(1)
        self.session_id: str | None = None

    async def close(self) -> None:
        await self._http.close()

    async def initialize(self) -> None:
        await self.request("initialize", INITIALIZE_PARAMS)
        self._headers["mcp-protocol-version"] = PROTOCOL_VERSION
        await self.notify("notifications/initialized")

    async def notify(self, method: str) -> None:
        body = orjson.dumps({"jsonrpc": "2.0", "method": method})
        async with self._http.post(self._url, data=body, headers=self._headers) as response:
            await response.read()
            if response.status != 202:
                raise ProtocolViolation(f"{method}: HTTP {response.status}, expected 202")

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        async with self._http.post(self._url, data=orjson.dumps(message), headers=self._headers) as response:
            body = await response.read()
            if response.status != 200:
                raise ProtocolViolation(f"{method}: HTTP {response.status}: {body[:200]!r}")
            if method == "initialize" and "mcp-session-id" in response.headers:
                self.session_id = response.headers["mcp-session-id"]
                self._headers["mcp-session-id"] = self.session_id
            kind = response.headers.get("content-type", "").split(";")[0].strip()
        if kind == "application/json":
            answers = [orjson.loads(body)]
        elif kind == "text/event-stream":
            answers = _sse_messages(body)
        else:
            raise ProtocolViolation(f"{method}: unexpected content-type {kind!r}")
        for answer in answers:
            if answer.get("id") == request_id:
                if "error" in answer:
                    raise ProtocolViolation(f"{method}: error {answer['error']}")
                return answer["result"]  # type: ignore[no-any-return]
        raise ProtocolViolation(f"{method}: no answer with id {request_id}")

    async def open_stream(self) -> aiohttp.ClientResponse:
        headers = {**self._headers, "accept": "text/event-stream"}
        del headers["content-type"]
        response = await self._http.get(self._url, headers=headers)
        if response.status != 200:
            raise ProtocolViolation(f"GET stream: HTTP {response.status}")
        return response


def check_echo(result: dict[str, Any], text: str) -> None:
    if result.get("isError"):
        raise ProtocolViolation(f"tool error: {result.get('content')}")
    content = result.get("content") or [{}]
    if content[0].get("text") != text:
        raise ProtocolViolation(f"wrong echo: {content[0]!r} for {text!r}")


class McpClient(Protocol):
    session_id: str | None

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]: ...


Step = Callable[[McpClient, int], Awaitable[None]]


def call_step(tool: str) -> Step:
    async def step(client: McpClient, n: int) -> None:
        text = f"{client.session_id or ''}:{n}"
        result = await client.request("tools/call", {"name": tool, "arguments": {"text": text}})
        check_echo(result, text)

    return step


def list_step(min_tools: int) -> Step:
    """Every page of tools/list, following nextCursor as a client listing everything does."""

    async def step(client: McpClient, n: int) -> None:
        tools = 0
        cursor = None
        while True:
            result = await client.request("tools/list", {"cursor": cursor} if cursor else None)
            tools += len(result.get("tools", []))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        if tools < min_tools:
            raise ProtocolViolation(f"tools/list: {tools} tools < {min_tools}")

    return step


async def measure(workers: list[McpClient], step: Step, duration: float, warmup: int) -> dict[str, Any]:
    """One task per entry of `workers` runs `step` until `duration` is up; each step is timed."""
    tally = Tally()
    deadline = time.perf_counter() + duration

    async def worker(client: McpClient) -> None:
        for n in itertools.count(1):
            started = time.perf_counter()
            if started >= deadline:
                return
            try:
                await step(client, n)
            except (TimeoutError, ProtocolViolation, aiohttp.ClientError, KeyError) as exc:
                tally.failed(f"{type(exc).__name__}: {exc}")
                continue
            tally.latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in workers))
    return tally.report(time.perf_counter() - began, warmup=warmup)


async def drive_http(args: argparse.Namespace, step: Step) -> dict[str, Any]:
    headers = dict(h.split(":", 1) for h in args.header)
    clients = [McpHttpClient(args.url, headers) for _ in range(args.concurrency)]
    try:
        await asyncio.gather(*(c.initialize() for c in clients))
        for client in clients:  # warm every connection and code path once
            await step(client, 0)
        return await measure(list(clients), step, args.duration, warmup=len(clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients))


class StdioClient:
    """Newline-delimited JSON-RPC to one child process, requests multiplexed by id."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.ensure_future(self._read())
        self.session_id: str | None = "stdio"

    async def _read(self) -> None:
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            message = orjson.loads(line)
            future = self._pending.pop(message.get("id"), None)
            if future is not None and not future.done():
                future.set_result(message)
        for future in self._pending.values():
            future.set_exception(ProtocolViolation("the server closed stdout"))

    def _send(self, message: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(orjson.dumps(message) + b"\n")

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        answer = await future
        if "error" in answer:
            raise ProtocolViolation(f"{method}: error {answer['error']}")
        return answer["result"]  # type: ignore[no-any-return]

    async def initialize(self) -> None:
        await self.request("initialize", INITIALIZE_PARAMS)
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})


async def drive_stdio(args: argparse.Namespace, step: Step) -> dict[str, Any]:
    """Concurrent workers share the one stdio connection a stdio server has (answers match by id)."""
    process = await asyncio.create_subprocess_exec(
        *args.stdio.split(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    client = StdioClient(process)
    try:
        await client.initialize()
        return await measure([client] * args.concurrency, step, args.duration, warmup=0)
    finally:
        process.terminate()
        await process.wait()


async def hold_sessions(args: argparse.Namespace) -> dict[str, Any]:
    headers = dict(h.split(":", 1) for h in args.header)
    clients = [McpHttpClient(args.url, headers) for _ in range(args.count)]
    streams: list[aiohttp.ClientResponse] = []
    try:
        for start in range(0, len(clients), 50):
            batch = clients[start : start + 50]
            await asyncio.gather(*(c.initialize() for c in batch))
            if args.streams:
                streams.extend(await asyncio.gather(*(c.open_stream() for c in batch)))
            else:
                # An idle session keeps its token, not a connection.
                await asyncio.gather(*(c.close() for c in batch))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        return {"sessions": len(streams)}
    finally:
        for stream in streams:
            stream.close()
        await asyncio.gather(*(c.close() for c in clients))


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "sessions":
        return await hold_sessions(args)
    step = call_step(args.tool) if args.mode == "call" else list_step(args.min_tools)
    if args.stdio:
        return await drive_stdio(args, step)
    return await drive_http(args, step)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="MCP endpoint (Streamable HTTP)")
    parser.add_argument("--stdio", help="command of a stdio server to drive instead of --url")
    parser.add_argument("--mode", choices=("call", "list", "sessions"), default="call")
    parser.add_argument("--tool", default="echo")
    parser.add_argument("--header", action="append", default=[], help="extra header, name:value")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--min-tools", type=int, default=1)
    parser.add_argument("--count", type=int, default=1000, help="sessions to hold (sessions mode)")
    parser.add_argument("--streams", action="store_true", help="sessions mode: hold a GET stream per session")
    return parser.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        outcome = uvloop.run(main(parse_args()))
        sys.stdout.write(json.dumps(outcome) + "\n")
