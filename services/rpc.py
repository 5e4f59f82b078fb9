"""gRPC plumbing every service shares: servers with the standard health service, and channels."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, NoReturn, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 1),
    ("grpc.lb_policy_name", "round_robin"),
    # Our services restart in a second or two: reconnect within a second of one coming back
    # (gRPC's default backoff starts at 1 s and grows to 2 minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Servers accept the keepalive pings their clients send (every 20 s, with or without calls):
# gRPC's default policy allows one per 5 minutes without data and answers more with
# GOAWAY too_many_pings, closing the channel under the calls that were about to use it.
#
# A call the server has received but its event loop has not yet taken up waits in a pending
# queue; past 1,000 there (gRPC's default soft limit) new calls are cancelled with a bare
# CANCELLED, so a burst of a few thousand calls at once loses a quarter of them. The queue is
# bounded still, far above the calls one edge holds in flight.
PENDING_CALLS = 100_000
SERVER_OPTIONS: list[tuple[str, int | str]] = [
    *CHANNEL_OPTIONS,
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.server.max_pending_requests", PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
]


class HealthyServer:
    """A `grpc.aio` server that also serves `grpc.health.v1`, SERVING once started."""

    def __init__(self, listen: str, service_name: str, register: Callable[[grpc.aio.Server], None]) -> None:
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self._service_name = service_name
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.server)
        register(self.server)
        self.port = self.server.add_insecure_port(listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {listen}")

    async def start(self) -> None:
        await self.server.start()
        for name in ("", self._service_name):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        for name in ("", self._service_name):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)


def channel(target: str) -> grpc.aio.Channel:
    """An insecure channel; a comma-separated target balances round robin over the addresses."""
    if "," in target:
        target = "ipv4:" + target
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


# What one message of a multiplexed stream carries at most (an item larger goes alone): far
# under the channels' 64 MiB, so a batch never fails for the size of its neighbours.
BATCH_BYTES = 4 * 1024 * 1024


class Sized(Protocol):
    def ByteSize(self) -> int: ...


T = TypeVar("T", bound=Sized)


class Coalescer(Generic[T]):
    """Items of a stream written as few messages as possible: each write takes every item
    ready by then (up to BATCH_BYTES), so N calls in flight cost far fewer than N writes.

    What it holds is bounded by what its caller has in flight (one item per call)."""

    def __init__(self, write: Callable[[list[T]], Awaitable[object]]) -> None:
        self._write = write
        self._items: list[T] = []
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, item: T) -> None:
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        """`run` returns once what was put is written."""
        self._closed = True
        self._ready.set()

    def unsent(self) -> list[T]:
        """Take what was put and not yet written: it never will be."""
        items, self._items = self._items, []
        return items

    async def run(self) -> None:
        """Write until closed; a write that raises ends it (the stream is broken)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._items:
                await self._write(self._take())
            if self._closed:
                return

    def _take(self) -> list[T]:
        items = self._items
        size, count = 0, 0
        for item in items:
            size += item.ByteSize()
            if count and size > BATCH_BYTES:
                break
            count += 1
        if count == len(items):
            self._items = []
            return items
        self._items = items[count:]
        return items[:count]


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """End an RPC with a status; `context.abort` raises, which its stubs do not say."""
    await context.abort(code, details)
    raise AssertionError("grpc.aio abort returned")
