"""Probes that tell whether a service serves: `mcpgw up` waits on them, `mcpgw health` asks them."""

from __future__ import annotations

import asyncio

import grpc
import httpx2
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def tcp_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def grpc_serving(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def http_ok(url: str) -> bool:
    try:
        async with httpx2.AsyncClient(timeout=1) as client:
            return (await client.get(url)).status_code == 200
    except httpx2.HTTPError:
        return False
