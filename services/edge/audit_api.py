"""`/api/audit` and `/api/usage`: the audit service's store, through the management API.

Records come a page at a time in the order they were stored (`cursor` is the last one's
`seq`), or all of them as NDJSON with `format=ndjson`. Times are RFC 3339 or Unix seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import grpc
import orjson
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from services.contracts import audit_pb2, audit_pb2_grpc, events_pb2
from services.operations import OUTCOMES, method_of, outcome_name

T = TypeVar("T")
AUDIT_TIMEOUT = 30.0
PAGE = 1000
# The store keeps times and sequence numbers as signed 64-bit integers (nanoseconds).
INT64_MAX = 2**63 - 1
MAX_LATENCY_MS = INT64_MAX // 1_000_000
GROUPS = {
    "key": audit_pb2.USAGE_GROUP_KEY,
    "server": audit_pb2.USAGE_GROUP_SERVER,
    "tool": audit_pb2.USAGE_GROUP_TOOL,
}


class Unavailable(Exception):
    """The audit service did not answer; the message says how."""


class BadTime(ValueError):
    """A time that is neither RFC 3339 nor Unix seconds."""


class Format(StrEnum):
    JSON = "json"
    NDJSON = "ndjson"


def unix_nano(value: str | None, field: str) -> int:
    """An RFC 3339 time or Unix seconds, in nanoseconds (0 for none)."""
    if not value:
        return 0
    try:
        nanos = float(value) * 1e9
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadTime(f"{field}: not an RFC 3339 time or Unix seconds: {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        nanos = parsed.timestamp() * 1e9
    # NaN fails both comparisons, so it is refused with the rest.
    if not 0 <= nanos <= INT64_MAX:
        raise BadTime(f"{field}: {value!r} is before 1970 or after 2262")
    return int(nanos)


def _iso(nanos: int) -> str:
    return datetime.fromtimestamp(nanos / 1e9, UTC).isoformat(timespec="milliseconds")


def record_out(record: audit_pb2.AuditRecord) -> dict[str, Any]:
    event = record.event
    return {
        "seq": record.seq,
        "event_id": event.event_id,
        "time": _iso(event.end_unix_nano),
        "started": _iso(event.start_unix_nano),
        "duration_ms": round(max(0, event.end_unix_nano - event.start_unix_nano) / 1e6, 3),
        "method": method_of(event),
        "name": event.exposed_name,
        "server": event.server,
        "tool": event.tool,
        "key_id": event.virtual_key_id,
        "outcome": outcome_name(event),
        "error_code": event.error_code or None,
        "error_message": event.error_message or None,
        "cost": event.cost,
        "session": event.session,
        "request_id": event.request_id,
        "client_name": event.client_name,
        "client_address": event.client_address,
        "trace_id": event.trace_id,
        "span_id": event.span_id,
        "parent_span_id": event.parent_span_id or None,
        "edge_id": event.edge_id,
        "llm_request_id": event.llm_request_id or None,
        "approval": APPROVALS.get(event.approval),
        "approval_decided_by": APPROVERS.get(event.approval_decided_by),
        "chain": record.chain,
        "position": record.position,
        "hash": record.hash,
    }


APPROVALS = {
    events_pb2.APPROVAL_APPROVED: "approved",
    events_pb2.APPROVAL_DENIED: "denied",
    events_pb2.APPROVAL_TIMED_OUT: "timed_out",
    events_pb2.APPROVAL_UNASKED: "unasked",
}
APPROVERS = {events_pb2.APPROVER_CLIENT: "client", events_pb2.APPROVER_OPERATOR: "operator"}


def audit_routes(audit: audit_pb2_grpc.AuditStub) -> APIRouter:
    """The audit routes (the caller adds the admin token's dependency)."""
    router = APIRouter()

    async def rpc(call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"the audit service did not answer: {exc.code().name}") from None

    def record_filter(
        since: str | None,
        until: str | None,
        key: str | None,
        server: str | None,
        tool: str | None,
        method: str | None = None,
        outcome: str | None = None,
        min_latency_ms: float = 0.0,
    ) -> audit_pb2.RecordFilter:
        wanted = audit_pb2.RecordFilter(
            since_unix_nano=unix_nano(since, "since"),
            until_unix_nano=unix_nano(until, "until"),
            min_duration_ms=min_latency_ms,
        )
        for name, value in (("virtual_key_id", key), ("server", server), ("tool", tool), ("method", method)):
            if value is not None:
                setattr(wanted, name, value)
        if outcome is not None:
            wanted.outcome = OUTCOMES[outcome]
        return wanted

    async def pages(wanted: audit_pb2.RecordFilter, after: int) -> AsyncIterator[bytes]:
        while True:
            request = audit_pb2.ListRecordsRequest(filter=wanted, after_seq=after, limit=PAGE)
            page = await rpc(audit.ListRecords(request, timeout=AUDIT_TIMEOUT))
            for record in page.records:
                yield orjson.dumps(record_out(record)) + b"\n"
            if len(page.records) < PAGE:
                return
            after = page.records[-1].seq

    @router.get("/api/audit")
    async def list_records(
        since: Annotated[str | None, Query(max_length=64)] = None,
        until: Annotated[str | None, Query(max_length=64)] = None,
        key: Annotated[str | None, Query(max_length=64)] = None,
        server: Annotated[str | None, Query(max_length=64)] = None,
        tool: Annotated[str | None, Query(max_length=1024)] = None,
        method: Annotated[str | None, Query(max_length=200)] = None,
        outcome: Annotated[str | None, Query(pattern="^(ok|tool_error|error)$")] = None,
        min_latency_ms: Annotated[float, Query(ge=0, le=MAX_LATENCY_MS)] = 0.0,
        cursor: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
        limit: Annotated[int, Query(ge=1, le=PAGE)] = 100,
        format: Format = Format.JSON,
    ) -> Any:
        wanted = record_filter(since, until, key, server, tool, method, outcome, min_latency_ms)
        if format is Format.NDJSON:
            return StreamingResponse(pages(wanted, cursor), media_type="application/x-ndjson")
        request = audit_pb2.ListRecordsRequest(filter=wanted, after_seq=cursor, limit=limit)
        page = await rpc(audit.ListRecords(request, timeout=AUDIT_TIMEOUT))
        records = [record_out(r) for r in page.records]
        more = len(records) == limit
        return {"records": records, "next_cursor": str(page.records[-1].seq) if more else None}

    @router.get("/api/usage")
    async def usage(
        since: Annotated[str | None, Query(max_length=64)] = None,
        until: Annotated[str | None, Query(max_length=64)] = None,
        key: Annotated[str | None, Query(max_length=64)] = None,
        server: Annotated[str | None, Query(max_length=64)] = None,
        tool: Annotated[str | None, Query(max_length=1024)] = None,
        group_by: Annotated[str, Query(pattern="^(key|server|tool)(,(key|server|tool))*$")] = "server,tool",
    ) -> dict[str, Any]:
        groups = list(dict.fromkeys(group_by.split(",")))
        request = audit_pb2.UsageRequest(
            filter=record_filter(since, until, key, server, tool), group_by=[GROUPS[g] for g in groups]
        )
        answer = await rpc(audit.Usage(request, timeout=AUDIT_TIMEOUT))
        shown = {"key": "virtual_key_id", "server": "server", "tool": "tool"}
        return {
            "group_by": groups,
            "rows": [
                {
                    **{group: getattr(row, shown[group]) for group in groups},
                    "calls": row.calls,
                    "errors": row.errors,
                    "p50_ms": round(row.p50_ms, 3),
                    "p95_ms": round(row.p95_ms, 3),
                    "cost": row.cost,
                }
                for row in answer.rows
            ],
        }

    @router.get("/api/audit/verify")
    async def verify() -> dict[str, Any]:
        answer = await rpc(audit.Verify(audit_pb2.VerifyRequest(), timeout=AUDIT_TIMEOUT * 10))
        first = None
        if not answer.intact:
            first = {
                "chain": answer.chain,
                "position": answer.position,
                "event_id": answer.event_id,
                "problem": answer.problem,
            }
        return {"checked": answer.checked, "intact": answer.intact, "first_broken": first}

    return router
