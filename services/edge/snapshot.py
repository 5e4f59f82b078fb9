"""Keeping the edge's catalog current: refetch on `registry.changed`, poll as a fallback.

While the registry is unreachable the last good catalog keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import grpc

from services.bus import ChangeSignal
from services.contracts import registry_pb2, registry_pb2_grpc
from services.edge.catalog import Catalog

log = logging.getLogger(__name__)

OnChange = Callable[[Catalog, Catalog], Awaitable[None]]


class SnapshotFollower:
    def __init__(
        self, registry: registry_pb2_grpc.RegistryStub, poll_seconds: float, on_change: OnChange
    ) -> None:
        self.catalog = Catalog()
        self.loaded = anyio.Event()
        self.changed = ChangeSignal()
        self._registry = registry
        self._poll_seconds = poll_seconds
        self._on_change = on_change

    async def refresh(self) -> None:
        snapshot = await self._registry.GetSnapshot(
            registry_pb2.GetSnapshotRequest(known_revision=self.catalog.revision),
            timeout=10,
            wait_for_ready=True,
        )
        if snapshot.not_modified or snapshot.revision == self.catalog.revision:
            self.loaded.set()
            return
        previous, self.catalog = self.catalog, Catalog.from_snapshot(snapshot)
        self.loaded.set()
        log.info("catalog revision %d: %d tools", snapshot.revision, len(self.catalog.routes))
        await self._on_change(previous, self.catalog)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.refresh()
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "registry unreachable, serving revision %d: %s", self.catalog.revision, exc.details()
                )
                # Retry soon rather than after a full poll interval.
                await self.changed.wait(min(1.0, self._poll_seconds))
                continue
            await self.changed.wait(self._poll_seconds)
