"""The Registry gRPC service: snapshots for edges, servers and catalog reports for connectors."""

from __future__ import annotations

import logging

import grpc
import orjson
from nats.aio.client import Client as NATS

from services import bus
from services.contracts import events_pb2, registry_pb2, registry_pb2_grpc
from services.registry.catalog import build_snapshot, server_config
from services.registry.store import RegistryStore, UnknownServerError
from services.rpc import abort

log = logging.getLogger(__name__)

STATES = frozenset({"connecting", "connected", "disconnected", "failed"})


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, store: RegistryStore, nc: NATS) -> None:
        self._store = store
        self._nc = nc
        self._cached: registry_pb2.Snapshot | None = None

    async def announce(self, revision: int) -> None:
        """Tell every edge and connector that `revision` is committed."""
        if self._nc.is_connected:
            await self._nc.publish(
                bus.REGISTRY_CHANGED, events_pb2.RegistryChanged(revision=revision).SerializeToString()
            )
        else:
            log.warning("revision %d not announced: NATS is down; edges will poll", revision)

    async def GetSnapshot(
        self, request: registry_pb2.GetSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.Snapshot:
        revision = await self._store.revision()
        if request.known_revision and request.known_revision == revision:
            return registry_pb2.Snapshot(revision=revision, not_modified=True)
        if self._cached is None or self._cached.revision != revision:
            self._cached = build_snapshot(await self._store.catalog())
        return self._cached

    async def ListServers(
        self, request: registry_pb2.ListServersRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListServersResponse:
        revision, servers = await self._store.servers()
        return registry_pb2.ListServersResponse(
            revision=revision, servers=[server_config(s) for s in servers]
        )

    async def ReportCatalog(
        self, request: registry_pb2.ReportCatalogRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ReportCatalogResponse:
        if request.state not in STATES:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"state must be one of {sorted(STATES)}")
        tools: list[tuple[str, str]] = []
        for raw in request.tools_json:
            name = _tool_name(raw)
            if name is None:
                await abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, "each tool must be a JSON object with a name"
                )
            tools.append((name, raw.decode()))
        try:
            revision, changed = await self._store.report_catalog(
                request.server, request.state, request.error, tools
            )
        except UnknownServerError:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no server named {request.server!r}")
        if changed:
            log.info(
                "server %s is %s with %d tools (revision %d)",
                request.server,
                request.state,
                len(tools),
                revision,
            )
            await self.announce(revision)
        return registry_pb2.ReportCatalogResponse(revision=revision)


def _tool_name(raw: bytes) -> str | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    name = value.get("name") if isinstance(value, dict) else None
    return name if isinstance(name, str) and name else None
