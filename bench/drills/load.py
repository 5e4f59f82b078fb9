"""The drills' load: MCP clients whose request ids are unique in the run, every answer checked."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from bench.loadgen import ACCEPT, INITIALIZE_PARAMS, PROTOCOL_VERSION, ProtocolViolation, check_echo
from bench.loadgen import _sse_messages as sse_messages

HTTP_TOOL = "echo_echo"
STDIO_TOOL = "echostdio_echo"
TOOLS = (HTTP_TOOL, STDIO_TOOL)
CALL_SECONDS = 10.0
FAILURES = (ProtocolViolation, aiohttp.ClientError, TimeoutError, ValueError, KeyError)


@dataclass(frozen=True)
class CallRecord:
    """One tools/call as its client saw it (monotonic times)."""

    request_id: str
    tool: str
    started: float
    ended: float
    ok: bool
    error: str = ""


class DrillClient:
    """One client: its own connection and MCP session; ids are `<prefix>-<n>`, so unique per prefix."""

    def __init__(self, url: str, prefix: str, timeout: float = CALL_SECONDS) -> None:
        self._url = url
        self._prefix = prefix
        self._numbers = itertools.count(1)
        self._headers = {"accept": ACCEPT, "content-type": "application/json"}
        self._session: str | None = None
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def close(self) -> None:
        await self._http.close()

    async def _post(self, message: dict[str, Any]) -> tuple[int, str, bytes, str | None]:
        async with self._http.post(self._url, data=orjson.dumps(message), headers=self._headers) as response:
            body = await response.read()
            kind = response.headers.get("content-type", "").split(";")[0].strip()
            return response.status, kind, body, response.headers.get("mcp-session-id")

    async def _initialize(self) -> None:
        self._headers.pop("mcp-session-id", None)
        self._headers.pop("mcp-protocol-version", None)
        hello = {"jsonrpc": "2.0", "id": f"{self._prefix}-init", "method": "initialize"}
        status, _, body, session = await self._post({**hello, "params": INITIALIZE_PARAMS})
        if status != 200 or not session:
            raise ProtocolViolation(f"initialize: HTTP {status}: {body[:200]!r}")
        self._headers |= {"mcp-session-id": session, "mcp-protocol-version": PROTOCOL_VERSION}
        status, _, body, _ = await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if status != 202:
            raise ProtocolViolation(f"notifications/initialized: HTTP {status}, expected 202")
        self._session = session

    async def call(self, tool: str) -> CallRecord:
        """tools/call of an echo tool with the request id as its text; opens the session first if
        there is none (again after a 404, as the protocol tells a client to)."""
        request_id = f"{self._prefix}-{next(self._numbers)}"
        started = time.monotonic()
        try:
            if self._session is None:
                await self._initialize()
            await self._echo(request_id, tool)
        except FAILURES as exc:
            reason = f"{type(exc).__name__}: {exc}"[:200]
            return CallRecord(request_id, tool, started, time.monotonic(), False, reason)
        return CallRecord(request_id, tool, started, time.monotonic(), True)

    async def session_problems(self) -> list[str]:
        """What fails of a new session's own operations: logging/setLevel, DELETE, refusal after."""
        problems = []
        try:
            await self._initialize()
            level = {"jsonrpc": "2.0", "id": f"{self._prefix}-level", "method": "logging/setLevel"}
            status, kind, body, _ = await self._post({**level, "params": {"level": "info"}})
            answers = [orjson.loads(body)] if kind == "application/json" else sse_messages(body)
            errors = [a["error"] for a in answers if "error" in a]
            if status != 200 or errors:
                problems.append(f"logging/setLevel: HTTP {status} {errors[:1]}")
            async with self._http.delete(self._url, headers=self._headers) as response:
                body = await response.read()
                if response.status >= 300 or b'"error"' in body:
                    problems.append(f"DELETE: HTTP {response.status} {body[:100]!r}")
            # An ended session is refused from then on (404).
            status, _, body, _ = await self._post({"jsonrpc": "2.0", "id": "after", "method": "tools/list"})
            if status != 404:
                problems.append(f"after DELETE the session still answers: HTTP {status}")
        except FAILURES as exc:
            problems.append(f"{type(exc).__name__}: {exc}"[:200])
        finally:
            self._session = None
        return problems

    async def _echo(self, request_id: str, tool: str) -> None:
        params = {"name": tool, "arguments": {"text": request_id}}
        message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
        status, kind, body, _ = await self._post(message)
        if status == 404:
            self._session = None
            raise ProtocolViolation("tools/call: HTTP 404, the session is gone")
        if status != 200:
            raise ProtocolViolation(f"tools/call: HTTP {status}: {body[:200]!r}")
        if kind == "application/json":
            answers = [orjson.loads(body)]
        elif kind == "text/event-stream":
            answers = sse_messages(body)
        else:
            raise ProtocolViolation(f"tools/call: unexpected content-type {kind!r}")
        for answer in answers:
            if answer.get("id") == request_id:
                if "error" in answer:
                    raise ProtocolViolation(f"tools/call: error {answer['error']}")
                check_echo(answer["result"], request_id)
                return
        raise ProtocolViolation(f"tools/call: no answer with id {request_id}")


async def run_load(
    url: str,
    tag: str,
    *,
    workers: int,
    rate: float,
    duration: float,
    tools: Sequence[str] = TOOLS,
    until: Callable[[CallRecord], bool] | None = None,
    longest: float = 0.0,
) -> list[CallRecord]:
    """`workers` clients calling `tools` in turn for `duration` seconds, `rate` calls/s in all;
    with `until`, on past `duration` until a call satisfies it (`longest` seconds at most).

    Each worker paces itself to its share of the rate, so a failing gateway is not hammered
    faster than a working one (and a late call is not made up for with a burst).
    """
    records: list[CallRecord] = []
    interval = workers / rate
    began = time.monotonic()
    ends, latest = began + duration, began + max(duration, longest)
    satisfied = until is None

    def over() -> bool:
        now = time.monotonic()
        return now >= latest or (now >= ends and satisfied)

    async def worker(index: int) -> None:
        nonlocal satisfied
        client = DrillClient(url, f"{tag}-w{index}")
        next_at = began + interval * index / workers
        try:
            for turn in itertools.count():
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if over():
                    return
                record = await client.call(tools[(index + turn) % len(tools)])
                records.append(record)
                satisfied = satisfied or (until is not None and until(record))
                next_at = max(next_at + interval, time.monotonic())
        finally:
            await client.close()

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return records


def reasons(records: Sequence[CallRecord], since: float | None = None, top: int = 3) -> str:
    """The commonest failure reasons, counted (with when they ended, from `since`, if given)."""
    failed = [r for r in records if not r.ok]
    counted = Counter(r.error for r in failed)
    described = []
    for reason, n in counted.most_common(top):
        when = ""
        if since is not None:
            ended = [r.ended - since for r in failed if r.error == reason]
            when = f" ({min(ended):+.2f} s → {max(ended):+.2f} s)"
        described.append(f"{n} x {reason}{when}")
    return "; ".join(described)
