"""Console sign-outs across edges, against a real nats-server: a cookie signed out on one
edge is refused on another, and on an edge that starts afterwards; NATS away, the sign-out
still holds where it was made."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import nats
import pytest
from nats.aio.client import Client as NATS

from services.edge.console.session import ConsoleSessions
from services.edge.console.signouts import SignOuts

pytestmark = pytest.mark.anyio
SECRET, TOKEN = "shared-session-secret", "the-admin-token-0123456789"


class Edge:
    """One edge's console sessions, told of sign-outs by its own SignOuts."""

    def __init__(self, nc: NATS) -> None:
        self.sessions = ConsoleSessions(TOKEN, SECRET)
        self.signouts = SignOuts(nc)
        self.heard = anyio.Event()
        self.signouts.tell(self._ended)
        self.sessions.announce = self.signouts.publish

    def _ended(self, session_id: str, expires_at: int) -> None:
        self.sessions.ended(session_id, expires_at)
        self.heard.set()


@pytest.fixture
async def connections(nats_url: str) -> AsyncIterator[list[NATS]]:
    opened = [await nats.connect(nats_url) for _ in range(3)]
    yield opened
    for nc in opened:
        await nc.close()


async def test_a_sign_out_on_one_edge_ends_the_session_on_the_others(connections: list[NATS]) -> None:
    one, two, later = (Edge(nc) for nc in connections)
    async with anyio.create_task_group() as tg:
        await tg.start(one.signouts.run)
        await tg.start(two.signouts.run)
        session, cookie = one.sessions.issue()
        kept, kept_cookie = one.sessions.issue()
        assert two.sessions.session_of(cookie) == session
        await one.sessions.sign_out(session)
        assert one.sessions.session_of(cookie) is None
        with anyio.fail_after(5):
            await two.heard.wait()
        assert two.sessions.session_of(cookie) is None
        assert two.sessions.session_of(kept_cookie) == kept
        # An edge that starts after the sign-out reads it from the bucket.
        await tg.start(later.signouts.run)
        with anyio.fail_after(5):
            await later.heard.wait()
        assert later.sessions.session_of(cookie) is None
        tg.cancel_scope.cancel()


async def test_without_nats_the_sign_out_holds_where_it_was_made(connections: list[NATS]) -> None:
    edge = Edge(connections[0])
    # The bucket never opened: publishing fails, and says so, but the session still ends here.
    session, cookie = edge.sessions.issue()
    assert not await edge.signouts.publish(session.id, session.expires_at)
    await edge.sessions.sign_out(session)
    assert edge.sessions.session_of(cookie) is None
