"""The set of live downstreams, kept equal to the servers the registry lists."""

from __future__ import annotations

import logging

import anyio
import anyio.abc
import grpc
import orjson

from services.connector.downstream import Downstream, Inventory, Report, Updated
from services.contracts import registry_pb2, registry_pb2_grpc
from services.settings import ConnectorSettings

log = logging.getLogger(__name__)

REPORT_DEADLINE_SECONDS = 10.0


class DownstreamPool:
    def __init__(
        self, settings: ConnectorSettings, registry: registry_pb2_grpc.RegistryStub, updated: Updated
    ) -> None:
        self._settings = settings
        self._updated = updated
        self._registry = registry
        self._running: dict[str, tuple[bytes, Downstream, anyio.CancelScope]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._sync_lock = anyio.Lock()

    def get(self, name: str) -> Downstream | None:
        entry = self._running.get(name)
        return None if entry is None else entry[1]

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    async def sync(self) -> None:
        """Start servers the registry added or changed, stop those it removed."""
        async with self._sync_lock:
            # wait_for_ready: at start-up the registry may not be listening yet.
            response = await self._registry.ListServers(
                registry_pb2.ListServersRequest(), timeout=10, wait_for_ready=True
            )
            wanted = {s.name: s for s in response.servers}
            for name in list(self._running):
                fingerprint = wanted[name].SerializeToString(deterministic=True) if name in wanted else None
                if fingerprint != self._running[name][0]:
                    log.info("server %s removed or changed: closing its session", name)
                    self._running.pop(name)[2].cancel()
            for name, config in wanted.items():
                if name not in self._running:
                    self._start(config)

    async def reconnect(self, name: str) -> None:
        """Close a server's session and open a new one (an operator asked for it)."""
        async with self._sync_lock:
            entry = self._running.pop(name, None)
            if entry is not None:
                log.info("server %s: reconnecting on request", name)
                entry[2].cancel()
        if entry is not None:
            await self.sync()

    def _start(self, config: registry_pb2.ServerConfig) -> None:
        assert self._tg is not None, "run() first"
        downstream = Downstream(
            config,
            self._reporter(config.name),
            self._updated,
            call_timeout=self._settings.call_timeout_seconds,
            connect_timeout=self._settings.connect_timeout_seconds,
            backoff_initial=self._settings.reconnect_initial_seconds,
            backoff_max=self._settings.reconnect_max_seconds,
        )
        scope = anyio.CancelScope()
        self._running[config.name] = (config.SerializeToString(deterministic=True), downstream, scope)

        async def supervise() -> None:
            with scope:
                await downstream.run()

        self._tg.start_soon(supervise)

    def _reporter(self, server: str) -> Report:
        async def report(state: str, error: str, inventory: Inventory) -> None:
            request = registry_pb2.ReportCatalogRequest(
                server=server,
                state=state,
                error=error,
                tools_json=[orjson.dumps(t) for t in inventory.tools],
                prompts_json=[orjson.dumps(p) for p in inventory.prompts],
                resources_json=[orjson.dumps(r) for r in inventory.resources],
                resource_templates_json=[orjson.dumps(t) for t in inventory.resource_templates],
                capabilities_json=orjson.dumps(inventory.capabilities),
                connector_id=self._settings.connector_id,
            )
            delay = 0.2
            with anyio.move_on_after(REPORT_DEADLINE_SECONDS):
                while True:
                    try:
                        # Shielded: a report cut off mid-RPC by a restart left the next one hanging.
                        with anyio.CancelScope(shield=True):
                            await self._registry.ReportCatalog(request, timeout=5, wait_for_ready=True)
                        return
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() == grpc.StatusCode.NOT_FOUND:
                            return  # the server was removed meanwhile; sync() will stop it
                        log.debug("report for %s failed: %s", server, exc.details())
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            log.warning("could not report %s as %s to the registry", server, state)

        return report
