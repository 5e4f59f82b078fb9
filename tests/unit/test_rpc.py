"""The shared gRPC server and channel settings, against a real server on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from services.rpc import HealthyServer, channel

pytestmark = pytest.mark.anyio

BURST = 2_500


async def _slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(1.0)
    return request


def _register(server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(_slow)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Slow", {"Call": handler})])


@pytest.fixture
async def server() -> AsyncIterator[HealthyServer]:
    healthy = HealthyServer("127.0.0.1:0", "t.Slow", _register)
    await healthy.start()
    yield healthy
    await healthy.stop(0)


async def test_a_burst_of_unary_calls_all_complete(server: HealthyServer) -> None:
    # gRPC's default pending-call limit (1,000) cancels part of such a burst before the
    # event loop takes the calls up; every call must be answered.
    async with channel(f"127.0.0.1:{server.port}") as chan:
        call = chan.unary_unary("/t.Slow/Call")
        await chan.channel_ready()
        results = await asyncio.gather(
            *(call(b"x", timeout=60) for _ in range(BURST)), return_exceptions=True
        )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert failed == [], f"{len(failed)} of {BURST} failed, e.g. {failed[0]!r}"
