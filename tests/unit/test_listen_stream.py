"""ListenStream: the ASGI response of every long-lived notification stream."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from starlette.types import Message

from services.edge.listening import ListenStream
from services.edge.sse import KEEPALIVE, sse_event
from services.edge.streams import Outbox

pytestmark = pytest.mark.anyio


class Client:
    """The ASGI side of one stream: what was sent, and a disconnect on demand or once the
    response is complete (as ASGI servers say it)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.body_arrived = anyio.Event()
        self.kept_alive_twice = anyio.Event()
        self._gone = anyio.Event()

    async def receive(self) -> Message:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            self.body_arrived.set()
            if not message.get("more_body"):
                self._gone.set()
        if self.bodies.count(KEEPALIVE) >= 2:
            self.kept_alive_twice.set()

    def leave(self) -> None:
        self._gone.set()

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]

    @property
    def finished(self) -> bool:
        return any(m["type"] == "http.response.body" and not m.get("more_body") for m in self.sent)


class Held:
    """One ListenStream over an outbox of 8, its client, and whether `ended()` ran."""

    def __init__(self, keepalive: float = 60.0, closing: bytes | None = None) -> None:
        self.outbox = Outbox(8)
        self.client = Client()
        self.ended: list[str] = []
        self.response = ListenStream(
            self.outbox, b": open\n\n", keepalive, self._on_end, None if closing is None else lambda: closing
        )

    async def _on_end(self) -> None:
        self.ended.append("ended")

    async def serve(self) -> None:
        await self.response({"type": "http"}, self.client.receive, self.client.send)


async def test_messages_become_events_and_an_edge_close_ends_gracefully_with_the_closing() -> None:
    held = Held(closing=b"bye")
    outbox, client, ended = held.outbox, held.client, held.ended
    assert outbox.offer(b'{"a":1}')
    outbox.close()
    with anyio.fail_after(5):
        await held.serve()
    start = client.sent[0]
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert client.bodies == [b": open\n\n", sse_event(b'{"a":1}'), b"bye"]
    assert client.finished and ended == ["ended"]


async def test_messages_offered_while_the_stream_is_open_go_out_in_order() -> None:
    held = Held()
    outbox, client = held.outbox, held.client
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(held.serve)
            await client.body_arrived.wait()
            for n in range(5):
                assert outbox.offer(b"%d" % n)
            outbox.close()
    assert client.bodies == [b": open\n\n", *(sse_event(b"%d" % n) for n in range(5)), b""]


async def test_a_client_that_leaves_ends_the_stream_without_the_closing() -> None:
    held = Held(closing=b"bye")
    outbox, client, ended = held.outbox, held.client, held.ended
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(held.serve)
            await client.body_arrived.wait()
            client.leave()
    assert b"bye" not in client.bodies and not client.finished
    assert ended == ["ended"]
    # The outbox is closed with it: the hub's next offer fails fast.
    assert not outbox.offer(b"late")


async def test_a_quiet_stream_sends_keepalive_comments() -> None:
    held = Held(keepalive=0.01)
    outbox, client = held.outbox, held.client
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(held.serve)
            await client.kept_alive_twice.wait()
            outbox.close()
    assert client.bodies[0] == b": open\n\n" and client.finished
    assert client.bodies.count(KEEPALIVE) >= 2


async def test_an_idle_stream_holds_no_task_but_its_own() -> None:
    held = Held()
    outbox, client = held.outbox, held.client
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            before = len(asyncio.all_tasks())
            tg.start_soon(held.serve)
            await client.body_arrived.wait()
            assert outbox.offer(b"x")
            while len(client.bodies) < 2:
                await asyncio.sleep(0)
            # Written, its writer is gone: only the stream's own task is left.
            await asyncio.sleep(0)
            assert len(asyncio.all_tasks()) == before + 1
            client.leave()


async def test_an_answer_waits_for_room_and_a_closed_outbox_refuses_it() -> None:
    outbox = Outbox(1)
    assert outbox.offer(b"first")
    assert not outbox.offer(b"second")
    waiting = asyncio.ensure_future(outbox.put(b"second"))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert outbox.take() == b"first"
    assert await waiting is True
    assert outbox.take() == b"second"
    outbox.close()
    assert await outbox.put(b"third") is False
