"""Calls waiting on their client's input, for 2026-07-28 clients (multi round-trip requests).

Such a client cannot be sent requests. When a downstream asks for sampling, elicitation or
roots during a call, the client's request ends with an `input_required` result naming the
asks; the client retries with `inputResponses` and the signed `requestState`, and the call,
still running here, carries on from where it waited.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.edge.calls import Call
from services.edge.errors import InvalidParamsError
from services.edge.signing import Signer, TokenKind

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Ask:
    method: str
    params_json: bytes
    answer: asyncio.Future[dict[str, Any]]


@dataclass(slots=True, eq=False)
class PendingCall:
    """One call that may be waiting for its client; `ask` is what the downstream's requests go to."""

    id: str
    tool: str
    state: str
    task: asyncio.Task[bytes] | None = None
    asks: dict[str, _Ask] = field(default_factory=dict)
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    # Where the notifications of the round in progress go; None between rounds.
    sink: Callable[[bytes], object] | None = None
    expiry: asyncio.TimerHandle | None = None
    _keys: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def ask(self, method: str, params_json: bytes) -> dict[str, Any]:
        key = f"input-{next(self._keys)}"
        self.asks[key] = _Ask(method, params_json, asyncio.get_running_loop().create_future())
        self.asked.set()
        try:
            return await self.asks[key].answer
        finally:
            self.asks.pop(key, None)

    def notify(self, message: bytes) -> None:
        if self.sink is not None:
            self.sink(message)

    async def relay(self, call: Call) -> bytes:
        """Run `call`: its notifications go to the round in progress, its requests to the
        client as input requests, answered by a later retry."""
        asking: set[asyncio.Task[None]] = set()

        async def pump() -> None:
            with call.messages:
                async for message in call.messages:
                    parsed = orjson.loads(message)
                    if "id" in parsed and "method" in parsed:
                        task = asyncio.ensure_future(self._relay_ask(call, parsed))
                        asking.add(task)
                        task.add_done_callback(asking.discard)
                    else:
                        self.notify(message)

        pumping = asyncio.ensure_future(pump())
        try:
            return await call.result()
        finally:
            pumping.cancel()
            for task in asking:
                task.cancel()

    async def _relay_ask(self, call: Call, request: dict[str, Any]) -> None:
        answer = await self.ask(str(request["method"]), orjson.dumps(request.get("params") or {}))
        call.reply(str(request["id"]), answer)

    def answer(self, responses: dict[str, Any]) -> None:
        """Hand the client's answers to the asks they name; others stay open."""
        for key, response in responses.items():
            waiting = self.asks.pop(key, None)
            if waiting is not None and not waiting.answer.done():
                waiting.answer.set_result({"result": response})

    def input_required(self) -> bytes:
        requests = {
            key: {"method": a.method, "params": orjson.Fragment(a.params_json or b"{}")}
            for key, a in self.asks.items()
        }
        return orjson.dumps(
            {"resultType": "input_required", "inputRequests": requests, "requestState": self.state}
        )


class InputRounds:
    """The calls of this edge that wait on a client, by the id their `requestState` carries."""

    def __init__(self, edge_id: str, signer: Signer, wait_seconds: float) -> None:
        self.edge_id = edge_id
        self._signer = signer
        self._wait = wait_seconds
        self._calls: dict[str, PendingCall] = {}

    def start(self, tool: str, running: Call) -> PendingCall:
        """Run `running` as a call that may wait on its client between rounds."""
        call_id = secrets.token_hex(8)
        call = PendingCall(
            call_id, tool, self._signer.sign(TokenKind.REQUEST_STATE, f"{self.edge_id}.{call_id}")
        )
        call.task = asyncio.ensure_future(call.relay(running))
        self._calls[call_id] = call
        return call

    def holder(self, state: object) -> str:
        """The edge holding the call a retry's `requestState` names."""
        if (
            not isinstance(state, str)
            or (signed := self._signer.verify(TokenKind.REQUEST_STATE, state)) is None
        ):
            raise InvalidParamsError('Invalid params: "requestState" was not issued by this gateway')
        return signed.rpartition(".")[0]

    async def carry_on(
        self, state: str, tool: str, responses: object, sink: Callable[[bytes], object] | None = None
    ) -> bytes:
        """The next round of a call this edge holds, given the answers a retry carries."""
        return await self.round(self._resume(state, tool, responses), sink)

    def _resume(self, state: str, tool: str, responses: object) -> PendingCall:
        signed = self._signer.verify(TokenKind.REQUEST_STATE, state) or ""
        edge_id, _, call_id = signed.rpartition(".")
        call = self._calls.get(call_id) if edge_id == self.edge_id else None
        if call is None or call.tool != tool:
            raise InvalidParamsError('Invalid params: "requestState" names no waiting call; retry it anew')
        if responses is not None and not isinstance(responses, dict):
            raise InvalidParamsError('Invalid params: "inputResponses" must be an object')
        if call.expiry is not None:
            call.expiry.cancel()
        call.answer(responses or {})
        return call

    async def round(self, call: PendingCall, sink: Callable[[bytes], object] | None) -> bytes:
        """The call's result if it ends before asking anything open; else `input_required`."""
        assert call.task is not None
        call.sink = sink
        try:
            if not call.asks:
                call.asked.clear()
                asked = asyncio.ensure_future(call.asked.wait())
                await asyncio.wait({call.task, asked}, return_when=asyncio.FIRST_COMPLETED)
                asked.cancel()
        finally:
            call.sink = None
        if call.task.done():
            self._calls.pop(call.id, None)
            return call.task.result()
        call.expiry = asyncio.get_running_loop().call_later(self._wait, self._expire, call)
        return call.input_required()

    def _expire(self, call: PendingCall) -> None:
        log.info("call %s of %s waited %.0f s for client input; cancelled", call.id, call.tool, self._wait)
        self._calls.pop(call.id, None)
        if call.task is not None:
            call.task.cancel()

    async def close(self) -> None:
        for call in list(self._calls.values()):
            self._expire(call)
            if call.task is not None:
                with contextlib.suppress(BaseException):
                    await call.task
