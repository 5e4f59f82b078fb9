"""The Audit gRPC service: the queryable audit's records, usage figures and verification."""

from __future__ import annotations

import grpc

from services.audit.store import AuditStore, RecordFilter
from services.contracts import audit_pb2, audit_pb2_grpc
from services.operations import OUTCOME_NAMES, UNKNOWN_OUTCOME

GROUP_COLUMNS = {
    audit_pb2.USAGE_GROUP_KEY: "virtual_key_id",
    audit_pb2.USAGE_GROUP_SERVER: "server",
    audit_pb2.USAGE_GROUP_TOOL: "tool",
}


def record_filter(wanted: audit_pb2.RecordFilter) -> RecordFilter:
    return RecordFilter(
        since_unix_nano=wanted.since_unix_nano,
        until_unix_nano=wanted.until_unix_nano,
        virtual_key_id=wanted.virtual_key_id if wanted.HasField("virtual_key_id") else None,
        server=wanted.server if wanted.HasField("server") else None,
        tool=wanted.tool if wanted.HasField("tool") else None,
        method=wanted.method if wanted.HasField("method") else None,
        outcome=OUTCOME_NAMES.get(wanted.outcome, UNKNOWN_OUTCOME) if wanted.HasField("outcome") else None,
        min_duration_ms=wanted.min_duration_ms,
    )


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, store: AuditStore) -> None:
        self._store = store

    async def ListRecords(
        self, request: audit_pb2.ListRecordsRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.ListRecordsResponse:
        wanted = record_filter(request.filter)
        page = await self._store.records(wanted, request.after_seq, request.limit or 100)
        records = [
            audit_pb2.AuditRecord(seq=r.seq, chain=r.chain, position=r.position, event=r.event, hash=r.hash)
            for r in page
        ]
        return audit_pb2.ListRecordsResponse(records=records)

    async def Usage(
        self, request: audit_pb2.UsageRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.UsageResponse:
        by = tuple(dict.fromkeys(GROUP_COLUMNS[g] for g in request.group_by if g in GROUP_COLUMNS))
        groups = await self._store.usage(record_filter(request.filter), by or ("server", "tool"))
        return audit_pb2.UsageResponse(
            rows=[
                audit_pb2.UsageRow(
                    **usage.group,
                    calls=usage.calls,
                    errors=usage.errors,
                    p50_ms=usage.percentile(0.5),
                    p95_ms=usage.percentile(0.95),
                    cost=usage.cost,
                )
                for usage in groups
            ]
        )

    async def Verify(
        self, request: audit_pb2.VerifyRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.VerifyResponse:
        checked, finding = await self._store.verify()
        if finding is None:
            return audit_pb2.VerifyResponse(checked=checked, intact=True)
        return audit_pb2.VerifyResponse(
            checked=checked,
            intact=False,
            chain=finding.chain,
            position=finding.position,
            event_id=finding.event_id,
            problem=finding.problem.value,
        )
