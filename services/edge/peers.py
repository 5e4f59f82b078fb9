"""Edge replicas reaching one another over NATS, so a client may land on any of them.

Some state lives on exactly one edge: the call a downstream's request waits in, and a
legacy SSE stream. A message for it that lands elsewhere goes to its edge on
`mcpgw.edge.<edge id>.<kind>`: a client's reply to a relayed request (its id names the
edge that sent it), a 2026-07-28 retry (its `requestState` names the edge that holds the
call), and a POST for a legacy SSE session (its id names the edge that holds the stream).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from services.edge.errors import (
    DownstreamRpcError,
    EdgeError,
    InternalError,
    InvalidParamsError,
    JsonRpcId,
    SessionNotFoundError,
)

log = logging.getLogger(__name__)

SUBJECT = "mcpgw.edge.{edge}.{kind}"
# What an edge id can be (settings.py checks its own), and the longest identifier minted
# with one: anything else a client sends never becomes part of a NATS subject.
EDGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_IDENTIFIER = 160
CANCEL = "mcpgw.edge.cancel"
# A resumed round's answer: a marker byte, then the result JSON or the error object.
RESULT, ERROR = b"R", b"E"

Resume = Callable[[str, str, object], Awaitable[bytes]]
"""(requestState, tool, inputResponses) -> the next round's result JSON, or an EdgeError."""
Deliver = Callable[[str, bytes, str], Awaitable[bool]]
"""(legacy SSE session id, POSTed body, key id) -> whether this edge holds the session."""


def owner(identifier: str) -> str:
    """The edge an identifier this gateway minted (`<edge id>-<local part>`) belongs to; ""
    for one no edge could have minted (it names a NATS subject, so never anything else)."""
    if len(identifier) > MAX_IDENTIFIER:
        return ""
    edge = identifier.rpartition("-")[0]
    return edge if EDGE_ID.fullmatch(edge) else ""


class Peers:
    def __init__(self, nc: NATS, edge_id: str, wait_seconds: float) -> None:
        self._nc = nc
        self.edge_id = edge_id
        self._wait = wait_seconds

    async def serve(
        self,
        on_reply: Callable[[JsonRpcId, dict[str, Any]], object],
        resume: Resume,
        deliver: Deliver,
        cancel: Callable[[str, str], object],
    ) -> None:
        """Answer what other edges send this one."""

        async def replied(msg: Msg) -> None:
            reply = orjson.loads(msg.data)
            on_reply(reply["id"], reply["answer"])

        async def resumed(msg: Msg) -> None:
            request = orjson.loads(msg.data)
            try:
                answer = RESULT + await resume(request["state"], request["tool"], request.get("responses"))
            except EdgeError as exc:
                answer = ERROR + orjson.dumps(exc.error_object())
            await msg.respond(answer)

        async def delivered(msg: Msg) -> None:
            headers = msg.headers or {}
            held = await deliver(headers.get("session", ""), msg.data, headers.get("key", ""))
            await msg.respond(b"1" if held else b"0")

        async def cancelled(msg: Msg) -> None:
            request = orjson.loads(msg.data)
            cancel(request["session"], request["id"])

        for kind, handler in (("reply", replied), ("resume", resumed), ("sse", delivered)):
            await self._nc.subscribe(SUBJECT.format(edge=self.edge_id, kind=kind), cb=handler)
        # Nothing names the edge running a call, so a cancellation goes to all of them.
        await self._nc.subscribe(CANCEL, cb=cancelled)

    async def reply(self, request_id: str, answer: dict[str, Any]) -> None:
        """Send a client's reply to the edge whose relayed request it answers."""
        subject = SUBJECT.format(edge=owner(request_id), kind="reply")
        await self._publish(subject, orjson.dumps({"id": request_id, "answer": answer}))

    async def _publish(self, subject: str, body: bytes) -> None:
        """Publish what a client sent on to another edge; one NATS refuses (over its payload
        limit, or NATS away) is dropped with a line in the log, as a lost message would be."""
        try:
            await self._nc.publish(subject, body)
        except NatsError as exc:
            log.info("not passed to another edge (%d bytes on %s): %s", len(body), subject, exc)

    async def resume(self, edge: str, state: str, tool: str, responses: object) -> bytes:
        """The next round of a call another edge holds."""
        body = orjson.dumps({"state": state, "tool": tool, "responses": responses})
        try:
            msg = await self._nc.request(SUBJECT.format(edge=edge, kind="resume"), body, timeout=self._wait)
        except (NoRespondersError, NatsTimeoutError):
            raise InternalError(f"The edge holding this call ({edge}) is gone; retry the call anew") from None
        except MaxPayloadError:
            raise InvalidParamsError(
                'Invalid params: "inputResponses" is too large to pass to the edge holding the call'
            ) from None
        except NatsError as exc:
            raise InternalError(f"The edge holding this call ({edge}) cannot be reached: {exc}") from None
        if msg.data.startswith(ERROR):
            error = orjson.loads(msg.data[len(ERROR) :])
            raise DownstreamRpcError(error["code"], error["message"], error.get("data"))
        # The result's bytes as the holding edge produced them, never re-encoded.
        return msg.data[len(RESULT) :]

    async def cancel(self, session_id: str, request_id: str) -> None:
        """Ask every edge to cancel a session's call (the one running it will)."""
        await self._publish(CANCEL, orjson.dumps({"session": session_id, "id": request_id}))

    async def deliver(self, session_id: str, body: bytes, key_id: str) -> None:
        """POST a legacy SSE session's message to the edge holding its stream."""
        subject = SUBJECT.format(edge=owner(session_id), kind="sse")
        try:
            msg = await self._nc.request(
                subject, body, timeout=5, headers={"session": session_id, "key": key_id}
            )
        except (NoRespondersError, NatsTimeoutError):
            msg = None
        except NatsError as exc:
            log.info("legacy SSE message not passed to the edge holding its session: %s", exc)
            msg = None
        if msg is None or msg.data != b"1":
            raise SessionNotFoundError("Session not found: open a new stream with GET /sse")
