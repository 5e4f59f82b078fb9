"""Entry point of the connector service."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import grpc
import orjson
from nats.aio.msg import Msg

from services import bus
from services.connector.pool import DownstreamPool
from services.connector.servicer import ConnectorServicer
from services.connector.telemetry import SCOPE, DownstreamTelemetry
from services.contracts import connector_pb2_grpc, registry_pb2, registry_pb2_grpc
from services.metrics import gauge, service_metrics, total
from services.rpc import HealthyServer, channel
from services.runtime import started, stop_requested
from services.settings import ConnectorSettings
from services.telemetry import tracer_provider

log = logging.getLogger(__name__)

RESYNC_SECONDS = 30.0
FIRST_SYNC_SECONDS = 5.0
HEARD_BUFFER = 1024


async def serve(settings: ConnectorSettings) -> None:
    changed = bus.ChangeSignal()

    async def on_reconnect() -> None:
        changed.set()

    nc = await bus.connect(settings.nats_url, f"mcpgw-{settings.connector_id}", on_reconnect=on_reconnect)
    await nc.subscribe(bus.REGISTRY_CHANGED, cb=changed.on_message)
    subjects = {
        "notifications/resources/updated": bus.RESOURCE_UPDATED,
        "notifications/tasks/status": bus.TASK_STATUS,
    }
    # What downstreams said that edges pass on, waiting to be published (bounded: a burst
    # past it while NATS is slow is dropped and logged, not queued without end).
    heard_send, heard_receive = anyio.create_memory_object_stream[tuple[str, bytes]](HEARD_BUFFER)

    def heard(server: str, method: str, params: dict[str, Any]) -> None:
        # Every edge hears it and tells the sessions it concerns (subscribers, a task's owner).
        try:
            heard_send.send_nowait((subjects[method], orjson.dumps({"server": server, "params": params})))
        except anyio.WouldBlock:
            log.warning("server %s: %s dropped, NATS is not keeping up", server, method)

    async def publish_heard() -> None:
        async for subject, body in heard_receive:
            await nc.publish(subject, body)

    registry_channel = channel(settings.registry_addr)
    registry = registry_pb2_grpc.RegistryStub(registry_channel)
    pool = DownstreamPool(settings, registry, heard)
    spans = tracer_provider("mcpgw-connector")
    metrics = service_metrics("mcpgw-connector")
    meter = metrics.meter(SCOPE)
    servicer = ConnectorServicer(pool, DownstreamTelemetry(spans, metrics))
    gauge(
        meter,
        "mcpgw.downstream.connected",
        "1 while the server's session is connected",
        lambda: [(float(d.connected), {"mcpgw.server": d.name}) for d in pool.servers()],
    )
    total(
        meter,
        "mcpgw.downstream.connections",
        "times the server connected: its reconnects are this less one",
        lambda: [(d.connections, {"mcpgw.server": d.name}) for d in pool.servers()],
    )
    server = HealthyServer(
        settings.connector_listen,
        "mcpgw.v1.Connector",
        lambda s: connector_pb2_grpc.add_ConnectorServicer_to_server(servicer, s),
    )

    first_sync = anyio.Event()

    async def keep_in_sync() -> None:
        while True:
            try:
                await pool.sync()
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "cannot list servers from registry at %s: %s", settings.registry_addr, exc.details()
                )
            first_sync.set()
            await changed.wait(RESYNC_SECONDS)

    async def heartbeat() -> None:
        # Registry counts this replica's connections only while it hears from it.
        alive = registry_pb2.ReportAliveRequest(connector_id=settings.connector_id)
        while True:
            try:
                reply = await registry.ReportAlive(alive, timeout=settings.heartbeat_seconds)
                if reply.report_again:
                    # In its own task: reports may wait on registry, heartbeats must not.
                    tg.start_soon(pool.report_again)
            except grpc.aio.AioRpcError as exc:
                log.debug("heartbeat to registry failed: %s", exc.details())
            await anyio.sleep(settings.heartbeat_seconds)

    async def on_reconnect_request(msg: Msg) -> None:
        await pool.reconnect(msg.data.decode())

    async def on_user_disconnected(msg: Msg) -> None:
        gone = orjson.loads(msg.data)
        pool.disconnect(str(gone["server"]), str(gone["key_id"]))

    await nc.subscribe(bus.SERVER_RECONNECT, cb=on_reconnect_request)
    await nc.subscribe(bus.USER_DISCONNECTED, cb=on_user_disconnected)
    with metrics.served(settings.metrics_listen):
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            tg.start_soon(keep_in_sync)
            tg.start_soon(heartbeat)
            # Serve once the servers are known (their first connections under way, which calls
            # wait for), so a restarted connector's first calls find them; not for ever, though.
            with anyio.move_on_after(FIRST_SYNC_SECONDS):
                await first_sync.wait()
            await server.start()
            log.info("connector %s serving on %s", settings.connector_id, settings.connector_listen)
            tg.start_soon(publish_heard)
            started()
            await stop_requested()
            # Edges move new calls to other replicas while the calls running here finish.
            servicer.retire_streams()
            await server.stop()
            tg.cancel_scope.cancel()
    await nc.drain()
    await registry_channel.close()
    if spans is not None:
        # The last spans, exported before the process goes (bounded by the exporter's timeout).
        await anyio.to_thread.run_sync(spans.shutdown)
    metrics.shutdown()
