"""The Registry gRPC service: snapshots for edges, servers and catalog reports for connectors."""

from __future__ import annotations

import logging

import grpc
import orjson
from nats.aio.client import Client as NATS

from services import bus
from services.contracts import events_pb2, registry_pb2, registry_pb2_grpc
from services.registry.catalog import build_snapshot, server_config
from services.registry.store import RegistryStore, StoredItem, UnknownServerError
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
        items: list[StoredItem] = []
        for kind, key, raws in (
            ("tool", "name", request.tools_json),
            ("prompt", "name", request.prompts_json),
            ("resource", "uri", request.resources_json),
            ("template", "uriTemplate", request.resource_templates_json),
        ):
            for raw in raws:
                value = _key(raw, key)
                if value is None:
                    await abort(
                        context,
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"each {kind} must be a JSON object with a non-empty {key!r}",
                    )
                items.append(StoredItem(request.server, kind, value, raw.decode()))
        capabilities = request.capabilities_json or b"{}"
        if _object(capabilities) is None:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "capabilities_json must be a JSON object")
        try:
            revision, changed = await self._store.report_catalog(
                request.server, request.state, request.error, items, capabilities.decode()
            )
        except UnknownServerError:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no server named {request.server!r}")
        if changed:
            log.info(
                "server %s is %s with %d tools, %d prompts, %d resources (revision %d)",
                request.server,
                request.state,
                len(request.tools_json),
                len(request.prompts_json),
                len(request.resources_json) + len(request.resource_templates_json),
                revision,
            )
            await self.announce(revision)
        return registry_pb2.ReportCatalogResponse(revision=revision)


def _object(raw: bytes) -> dict[str, object] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _key(raw: bytes, field: str) -> str | None:
    """The non-empty string `field` of a JSON object, or None when `raw` is not one."""
    value = _object(raw)
    key = None if value is None else value.get(field)
    return key if isinstance(key, str) and key else None
