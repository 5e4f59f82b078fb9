"""Entry point of the audit service."""

from __future__ import annotations

import contextlib
import logging

import anyio
import nats.errors

from services import bus
from services.audit.consumer import AuditConsumer
from services.audit.exporters import build_exporter, exported_event_ids
from services.metrics import service_metrics
from services.runtime import stop_requested
from services.settings import AuditSettings

log = logging.getLogger(__name__)


async def serve(settings: AuditSettings) -> None:
    exporter = build_exporter(settings)
    nc = await bus.connect(settings.nats_url, "mcpgw-audit")
    await bus.ensure_audit_stream(nc)
    metrics = service_metrics("mcpgw-audit")
    consumer = AuditConsumer(
        nc,
        exporter,
        settings.audit_durable,
        settings.audit_batch,
        exported_event_ids(settings),
        metrics.meter("mcpgw.audit"),
    )
    log.info("audit consuming %s as %s", bus.AUDIT_STREAM, settings.audit_durable)
    with metrics.served(settings.metrics_listen):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run)
            await stop_requested()
            tg.cancel_scope.cancel()
    # Not drain(): draining a pull subscription whose fetch was cancelled waits out the
    # 30 s drain timeout. Acks are plain publishes, so a flush is enough to send them.
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        await nc.flush(timeout=2)
    await nc.close()
    consumer.close()
    exporter.shutdown()
    metrics.shutdown()
    log.info("audit stopped after exporting %d records", consumer.exported)
