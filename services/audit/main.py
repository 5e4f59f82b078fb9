"""Entry point of the audit service."""

from __future__ import annotations

import logging

import anyio

from services import bus
from services.audit.consumer import AuditConsumer
from services.audit.exporters import build_exporter
from services.runtime import stop_requested
from services.settings import AuditSettings

log = logging.getLogger(__name__)


async def serve(settings: AuditSettings) -> None:
    exporter = build_exporter(settings)
    nc = await bus.connect(settings.nats_url, "mcpgw-audit")
    await bus.ensure_audit_stream(nc)
    consumer = AuditConsumer(nc, exporter, settings.audit_durable, settings.audit_batch)
    log.info("audit consuming %s as %s", bus.AUDIT_STREAM, settings.audit_durable)
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await stop_requested()
        tg.cancel_scope.cancel()
    await nc.drain()
    consumer.close()
    exporter.shutdown()
    log.info("audit stopped after exporting %d records", consumer.exported)
