"""A "try it" call that runs too long is cancelled through the call (its RPC), never by
cutting off the task awaiting its result (that leaks grpcio's native ops, grpc/grpc#43360)."""

from __future__ import annotations

from typing import Any, cast

import anyio

from services.edge.calls import Call
from services.edge.console.tryit import result_within
from services.edge.errors import DownstreamRpcError


class SlowCall:
    """A call that answers only when cancelled, as a cancelled RPC ends: with an error."""

    def __init__(self, answer_after: float | None = None) -> None:
        self.answer_after = answer_after
        self.cancelled = anyio.Event()
        self.awaiting_cut = False

    def cancel(self) -> None:
        self.cancelled.set()

    async def result(self) -> bytes:
        try:
            if self.answer_after is not None:
                await anyio.sleep(self.answer_after)
                return b'{"content": []}'
            await self.cancelled.wait()
        except anyio.get_cancelled_exc_class():
            self.awaiting_cut = True
            raise
        raise DownstreamRpcError(-32000, "mcpgw: the call was cancelled by the client")


def run(call: SlowCall, seconds: float) -> Any:
    async def main() -> Any:
        with anyio.fail_after(5):
            return await result_within(cast(Call, call), seconds)

    return anyio.run(main)


def test_a_late_call_is_cancelled_through_the_call_not_cut_off() -> None:
    late = SlowCall()
    assert run(late, 0.05) is None
    assert late.cancelled.is_set() and not late.awaiting_cut


def test_a_call_in_time_answers_and_is_not_cancelled() -> None:
    prompt = SlowCall(answer_after=0.01)
    assert run(prompt, 5) == b'{"content": []}'
    assert not prompt.cancelled.is_set()
