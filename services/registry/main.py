"""Entry point of the registry service."""

from __future__ import annotations

import logging
import secrets

import anyio

from services import bus
from services.contracts import registry_pb2, registry_pb2_grpc
from services.metrics import gauge, service_metrics
from services.registry.config import GatewayConfig, load_config
from services.registry.governance import GovernanceStore
from services.registry.sealing import Sealer
from services.registry.servicer import RegistryServicer
from services.registry.store import RegistryStore
from services.rpc import HealthyServer
from services.runtime import started, stop_requested
from services.settings import RegistrySettings

log = logging.getLogger(__name__)


def registry_key(settings: RegistrySettings) -> str:
    """MCPGW_REGISTRY_KEY, or a key kept in the state directory (mode 0600), made on first use."""
    if settings.registry_key:
        return settings.registry_key
    path = settings.state_dir / "registry.key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


async def serve(settings: RegistrySettings) -> None:
    config = load_config(settings.config) if settings.config else GatewayConfig()
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = await RegistryStore.open(settings.database_url(), Sealer(registry_key(settings)))
    try:
        governance = GovernanceStore(store)
        async with store.exclusively():
            await store.apply_config(config)
            await governance.apply_config(config)
        _, servers = await store.servers()
        unset = (await governance.settings()).auth_mode == registry_pb2.AUTH_MODE_UNSPECIFIED
        if unset and any(s.config.per_user_oauth for s in servers):
            log.warning(
                "mcp_server_auth_mode is not set and a server is per_user_oauth: /mcp takes OAuth "
                "sign-in as well as virtual keys ('both'); set it to choose"
            )
        revision = await store.revision()
        nc = await bus.connect(settings.nats_url, "mcpgw-registry")
        servicer = RegistryServicer(store, nc, settings.connector_lost_seconds)
        metrics = service_metrics("mcpgw-registry")
        gauge(
            metrics.meter("mcpgw.registry"),
            "mcpgw.registry.revision",
            "the last committed revision of the registry",
            lambda: [(servicer.revision, {})],
        )
        server = HealthyServer(
            settings.registry_listen,
            "mcpgw.v1.Registry",
            lambda s: registry_pb2_grpc.add_RegistryServicer_to_server(servicer, s),
        )
        await server.start()
        log.info(
            "registry serving on %s, %d servers, revision %d",
            settings.registry_listen,
            len(config.mcp.client_configs),
            revision,
        )
        # Edges and connectors that started first are waiting for this revision.
        await servicer.announce(revision)

        async def keep_sweeping() -> None:
            # A connector replica that died without a word stops counting within a lost interval.
            while True:
                await anyio.sleep(settings.connector_lost_seconds / 2)
                try:
                    await servicer.sweep()
                except Exception:  # the store may be away a moment; the next sweep tries again
                    log.exception("sweeping connector replicas failed")

        with metrics.served(settings.metrics_listen):
            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_sweeping)
                started()
                await stop_requested()
                tg.cancel_scope.cancel()
        await server.stop()
        await nc.drain()
        metrics.shutdown()
    finally:
        await store.close()
