"""The edge writes an answer's head with its body, and a stream's head alone, promptly."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from services.edge.server import HeadWithBody

pytestmark = pytest.mark.anyio


class Recorded:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, data: tuple[bytes, ...]) -> None:
        self.writes.append(b"".join(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def wrapped() -> tuple[HeadWithBody, Recorded]:
    recorded = Recorded()
    return HeadWithBody(cast(asyncio.Transport, recorded), asyncio.get_running_loop()), recorded


async def test_a_head_and_a_body_written_in_one_turn_go_out_in_one_write() -> None:
    transport, recorded = wrapped()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"{}")
    transport.write(b"more")
    assert recorded.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}", b"more"]
    await asyncio.sleep(0)
    assert recorded.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}", b"more"]


async def test_a_streams_head_goes_out_alone_when_the_turn_ends() -> None:
    transport, recorded = wrapped()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert recorded.writes == []
    await asyncio.sleep(0)
    assert recorded.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    transport.write(b"data: 1\n\n")
    assert recorded.writes == [b"HTTP/1.1 200 OK\r\n\r\n", b"data: 1\n\n"]


async def test_closing_sends_a_held_head_first() -> None:
    transport, recorded = wrapped()
    transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    transport.close()
    assert recorded.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"] and recorded.closed
    await asyncio.sleep(0)
    assert len(recorded.writes) == 1
