"""Entry point of the audit service."""

from __future__ import annotations

import contextlib
import logging
import time

import anyio
import nats.errors

from services import bus
from services.audit.consumer import AuditConsumer
from services.audit.exporters import build_exporter, exported_event_ids, trace_processor
from services.audit.servicer import AuditServicer
from services.audit.store import AuditStore
from services.contracts import audit_pb2_grpc
from services.metrics import service_metrics
from services.rpc import HealthyServer
from services.runtime import started, stop_requested
from services.settings import AuditSettings

log = logging.getLogger(__name__)

RETENTION_EVERY_SECONDS = 3600.0


async def serve(settings: AuditSettings) -> None:
    exporter = build_exporter(settings)
    if not settings.audit_db:
        (settings.state_dir / "audit").mkdir(mode=0o700, parents=True, exist_ok=True)
    store = await AuditStore.open(settings.database_url(), settings.audit_chain)
    nc = await bus.connect(settings.nats_url, "mcpgw-audit")
    replicas = settings.nats_replicas
    await bus.retrying("creating the audit stream", lambda: bus.ensure_audit_stream(nc, replicas))
    metrics = service_metrics("mcpgw-audit")
    consumer = AuditConsumer(
        nc,
        exporter,
        settings.audit_durable,
        settings.audit_batch,
        exported_event_ids(settings),
        metrics,
        store,
        trace_processor(settings),
        settings.audit_gather_seconds,
    )
    server = HealthyServer(
        settings.audit_listen,
        "mcpgw.v1.Audit",
        lambda s: audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(store), s),
    )
    await server.start()
    log.info(
        "audit consuming %s as %s into %s, serving on %s",
        bus.AUDIT_STREAM,
        settings.audit_durable,
        settings.database_url().split("@")[-1],
        settings.audit_listen,
    )
    with metrics.served(settings.metrics_listen):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run)
            tg.start_soon(_retain, store, settings.audit_retention_days)
            started()
            await stop_requested()
            tg.cancel_scope.cancel()
    await server.stop()
    # Not drain(): draining a pull subscription whose fetch was cancelled waits out the
    # 30 s drain timeout. Acks are plain publishes, so a flush is enough to send them.
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        await nc.flush(timeout=2)
    await nc.close()
    consumer.close()
    exporter.shutdown()
    metrics.shutdown()
    await store.close()
    log.info("audit stopped after exporting %d records", consumer.exported)


async def _retain(store: AuditStore, days: float) -> None:
    """Every hour: remove records past retention (none when `days` is 0), log chain heads."""
    while True:
        if days:
            cutoff = time.time_ns() - int(days * 86_400 * 1e9)
            try:
                removed = await store.prune(cutoff)
            except Exception as exc:  # the database's errors are many and driver-specific
                log.warning("audit retention failed, retrying in an hour: %s", exc)
            else:
                if removed:
                    log.info("audit retention removed %d records older than %g days", removed, days)
        await _log_heads(store)
        await anyio.sleep(RETENTION_EVERY_SECONDS)


async def _log_heads(store: AuditStore) -> None:
    """Each chain's head in the log: kept apart from the database, a rewritten tail shows."""
    try:
        heads = await store.heads()
    except Exception as exc:  # the database's errors are many and driver-specific
        log.warning("cannot read the audit chains' heads: %s", exc)
        return
    for chain, (position, digest) in sorted(heads.items()):
        log.info("audit chain %s head: position %d, hash %s", chain, position, digest)
