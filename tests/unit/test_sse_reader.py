"""`server_events` against the WHATWG event-stream rules, over a real aiohttp response from an
in-process server, and over scripted chunk boundaries (TCP may merge writes, a script cannot)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

import aiohttp
import anyio.lowlevel
import httpx2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.connector.http import BOM, client_session, server_events

pytestmark = pytest.mark.anyio

EVENT_STREAM = "text/event-stream"
Event = httpx2.ServerSentEvent


def ev(data: str = "", event: str = "message", id: str = "", retry: int | None = None) -> Event:
    return Event(event=event, data=data, id=id, retry=retry)


@dataclass(frozen=True)
class Script:
    """What the origin writes for one request: each chunk as its own write."""

    chunks: Sequence[bytes]
    content_type: str = EVENT_STREAM
    # Drop the connection after the chunks instead of ending the body.
    break_off: bool = False
    # Let the loop run between writes: in one event loop the writes would otherwise reach the
    # socket before the client reads once, and arrive as one chunk.
    paced: bool = False


SCRIPTS = web.AppKey("scripts", dict[str, Script])


async def play(request: web.Request) -> web.StreamResponse:
    script = request.app[SCRIPTS].pop(request.match_info["name"])
    response = web.StreamResponse(headers={"content-type": script.content_type})
    await response.prepare(request)
    for chunk in script.chunks:
        await response.write(chunk)
        if script.paced:
            await anyio.lowlevel.checkpoint()
    if script.break_off:
        assert request.transport is not None
        request.transport.abort()
        return response
    await response.write_eof()
    return response


class Origin:
    """An in-process HTTP server whose bodies the test scripts, read through the connector's pool."""

    def __init__(self, server: TestServer, http: aiohttp.ClientSession) -> None:
        self._server = server
        self._http = http
        self._names = itertools.count()

    async def stream(
        self, *chunks: bytes, content_type: str = EVENT_STREAM, break_off: bool = False, paced: bool = False
    ) -> AsyncIterator[Event]:
        """The events of a body written as `chunks`, as they come."""
        name = str(next(self._names))
        self._server.app[SCRIPTS][name] = Script(chunks, content_type, break_off, paced)
        async with self._http.get(self._server.make_url(f"/{name}")) as response:
            assert response.status == 200
            async for event in server_events(response):
                yield event

    async def events(
        self, *chunks: bytes, content_type: str = EVENT_STREAM, paced: bool = False
    ) -> list[Event]:
        return [event async for event in self.stream(*chunks, content_type=content_type, paced=paced)]


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    app = web.Application()
    app[SCRIPTS] = {}
    app.router.add_get("/{name}", play)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with client_session(5, 4) as http:
            yield Origin(server, http)
    finally:
        await server.close()


class _Content:
    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


class _ScriptedResponse:
    """The part of an aiohttp.ClientResponse `server_events` reads, with exact chunk boundaries."""

    method = "GET"
    url = "http://127.0.0.1/scripted"
    status = 200

    def __init__(self, chunks: Sequence[bytes], content_type: str = EVENT_STREAM) -> None:
        self.content = _Content(chunks)
        self.raw_headers = ((b"content-type", content_type.encode()),)

    def release(self) -> None:
        pass


async def scripted(chunks: Sequence[bytes]) -> list[Event]:
    response = cast(aiohttp.ClientResponse, _ScriptedResponse(chunks))
    return [event async for event in server_events(response)]


# (body, the events the WHATWG rules dispatch for it)
CASES: dict[str, tuple[bytes, list[Event]]] = {
    # The spec's own examples (HTML, "9.2.6 Interpreting an event stream" and its notes).
    "whatwg multi-line data": (b"data: YHOO\ndata: +2\ndata: 10\n\n", [ev("YHOO\n+2\n10")]),
    "whatwg comment, ids, one space stripped": (
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        [ev("first event", id="1"), ev("second event"), ev(" third event")],
    ),
    # The last block is discarded: it is not followed by a blank line.
    "whatwg empty data": (b"data\n\ndata\ndata\n\ndata:", [ev(""), ev("\n")]),
    "whatwg space after the colon is optional": (b"data:test\n\ndata: test\n\n", [ev("test"), ev("test")]),
    "event names, reset after each event": (
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\ndata: 113411\n\n",
        [ev("73857293", "add"), ev("2153", "remove"), ev("113411")],
    ),
    # What an MCP server sends first on a resumable stream: an id to resume from, no message.
    "priming event": (
        b'id: ev-1\nretry: 100\ndata:\n\nid: ev-2\ndata: {"jsonrpc":"2.0"}\n\n',
        [ev("", id="ev-1", retry=100), ev('{"jsonrpc":"2.0"}', id="ev-2")],
    ),
    "comments anywhere": (b": keep-alive\ndata: a\n: between\ndata: b\n\n:\n\n", [ev("a\nb")]),
    "id persists until changed": (
        b"id: 7\ndata: a\n\ndata: b\n\nid:\ndata: c\n\n",
        [ev("a", id="7"), ev("b", id="7"), ev("c")],
    ),
    "id with NUL ignored": (b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", [ev("a", id="1"), ev("b", id="1")]),
    # httpx2 reports retry on the event that set it; the forwarder keeps the last one it saw.
    "retry numeric": (b"retry: 2500\ndata: a\n\ndata: b\n\n", [ev("a", retry=2500), ev("b")]),
    "retry not numeric": (
        b"retry: soon\ndata: a\n\nretry: 1.5\ndata: b\n\nretry: 12abc\ndata: c\n\nretry:\ndata: d\n\n",
        [ev("a"), ev("b"), ev("c"), ev("d")],
    ),
    "fields with no colon": (b"event\ndata\n\n", [ev("")]),
    "unknown fields ignored": (b"foo: bar\nbaz\n\ndata: x\nfoo\n\n", [ev("x")]),
    "one space stripped, nothing else": (
        b"data:  two\n\ndata:\ttab\n\ndata: a: b\n\n",
        [ev(" two"), ev("\ttab"), ev("a: b")],
    ),
    "CR, LF and CRLF mixed": (
        b"data: cr\rdata: lf\ndata: crlf\r\n\revent: e\r\ndata: x\r\n\n",
        [ev("cr\nlf\ncrlf"), ev("x", "e")],
    ),
    "leading BOM dropped": (BOM + b"data: x\n\n", [ev("x")]),
    # Only one: a second BOM is part of the first field's name, which no field has.
    "only one BOM dropped": (BOM + BOM + b"data: x\n\ndata: y\n\n", [ev("y")]),
    "BOM inside a value kept": (b"data: " + BOM + b"x\n\n", [ev("\ufeffx")]),
    "UTF-8 across bytes": ("data: é — 🚀\n\n".encode(), [ev("é — 🚀")]),
    "invalid UTF-8 replaced": (b"data: \xff\n\n", [ev("\ufffd")]),
    "NUL in data kept": (b"data: a\x00b\n\n", [ev("a\x00b")]),
    "unterminated final event, LF": (b"data: a\n\ndata: b\n", [ev("a")]),
    "unterminated final event, CRLF": (b"data: a\n\ndata: b\r\n", [ev("a")]),
    "unterminated final event, no line end": (b"data: a\n\ndata: b", [ev("a")]),
}


@pytest.mark.parametrize(("body", "expected"), CASES.values(), ids=CASES.keys())
async def test_a_body_in_one_write(origin: Origin, body: bytes, expected: list[Event]) -> None:
    assert await origin.events(body) == expected


def one_byte_chunks(body: bytes) -> list[bytes]:
    """`body` a byte at a time, but a leading BOM whole (a split BOM is a finding of its own, below)."""
    head = len(BOM) if body.startswith(BOM) else 0
    return ([body[:head]] if head else []) + [body[i : i + 1] for i in range(head, len(body))]


@pytest.mark.parametrize(("body", "expected"), CASES.values(), ids=CASES.keys())
async def test_a_body_written_byte_by_byte(origin: Origin, body: bytes, expected: list[Event]) -> None:
    # The client reads a few bytes at a time (TCP merges some writes); the scripted tests pin each cut.
    assert await origin.events(*one_byte_chunks(body), paced=True) == expected


@pytest.mark.parametrize(("body", "expected"), CASES.values(), ids=CASES.keys())
async def test_a_body_in_one_byte_chunks(body: bytes, expected: list[Event]) -> None:
    assert await scripted(one_byte_chunks(body)) == expected


@pytest.mark.parametrize(("body", "expected"), CASES.values(), ids=CASES.keys())
async def test_a_body_split_anywhere_in_two(body: bytes, expected: list[Event]) -> None:
    # Not inside a leading BOM (see the finding below).
    first = len(BOM) if body.startswith(BOM) else 1
    for cut in range(first, len(body)):
        assert await scripted([body[:cut], body[cut:]]) == expected, f"split at byte {cut}"


async def test_a_broken_connection_ends_in_a_read_error_after_the_whole_events(origin: Origin) -> None:
    # The forwarder resumes on this error (an httpx2.TransportError); the half event is not dispatched.
    seen: list[Event] = []

    async def read() -> None:
        async for event in origin.stream(b"id: 1\ndata: one\n\ndata: tw", break_off=True):
            seen.append(event)

    with pytest.raises(httpx2.ReadError):
        await read()
    assert seen == [ev("one", id="1")]


# Where httpx2's parser departs from the WHATWG rules: the first three are mended in
# `services/connector/http.py`, the rest are documented and harmless to the forwarder.


async def test_a_final_line_ended_by_a_lone_cr_is_not_dispatched(origin: Origin) -> None:
    # The end of the stream never dispatches an event (httpx2 alone would flush the CR as a
    # blank line and dispatch "b").
    assert await origin.events(b"data: a\n\ndata: b\r") == [ev("a")]
    assert await scripted([b"data: a\n\ndata: b\r", b"\n"]) == [ev("a")]


async def test_a_bom_split_across_chunks_is_dropped() -> None:
    assert await scripted([BOM[:1], BOM[1:] + b"data: x\n\n"]) == [ev("x")]
    assert await scripted([BOM[:2], BOM[2:], b"data: x\n\n"]) == [ev("x")]
    assert await scripted([BOM, b"data: x\n\n"]) == [ev("x")]


async def test_an_event_stream_is_utf8_whatever_its_charset_says(origin: Origin) -> None:
    body = "data: é\n\n".encode()
    assert await origin.events(body, content_type=f"{EVENT_STREAM}; charset=utf-8") == [ev("é")]
    assert await origin.events(body, content_type=f"{EVENT_STREAM}; charset=iso-8859-1") == [ev("é")]


async def test_finding_blocks_without_data_are_dispatched(origin: Origin) -> None:
    # WHATWG: no event (an empty data buffer dispatches nothing), though id and retry still take
    # effect. httpx2 dispatches them with empty data, which the forwarder skips after noting id/retry.
    assert await origin.events(b"id: 5\n\nretry: 100\n\n") == [ev(id="5"), ev(id="5", retry=100)]


@pytest.mark.parametrize(("value", "retry"), [(b"-5", -5), (b"+5", 5), (b" 5", 5), (b"1_0", 10)])
async def test_finding_retry_takes_more_than_ascii_digits(origin: Origin, value: bytes, retry: int) -> None:
    # WHATWG: only ASCII digits set the reconnection time; httpx2 uses int(), which takes signs,
    # spaces and underscores. A negative retry makes the forwarder resume at once.
    assert await origin.events(b"retry: " + value + b"\ndata: x\n\n") == [ev("x", retry=retry)]


async def test_an_event_over_one_mib_is_read(origin: Origin) -> None:
    # httpx2 bounds an event at 1 MiB by default; results (images, files) are often larger.
    big = b"x" * (2 * 1024 * 1024)
    assert await origin.events(b"data: " + big + b"\n\n") == [ev(big.decode())]
