"""Every request the edge answers is recorded once, however it ends, with its trace."""

from __future__ import annotations

from typing import Any, cast

import pytest

from services.contracts import connector_pb2, events_pb2, registry_pb2
from services.edge.auditing import AuditPublisher
from services.edge.catalog import build_view
from services.edge.connector_client import ConnectorClient
from services.edge.errors import InvalidParamsError, MethodNotFoundError
from services.edge.protocol import CallContext, McpHandler
from services.edge.records import Sender
from services.edge.sessions import Session
from services.edge.signing import Signer
from services.edge.tasks import TaskIds
from services.telemetry import TraceContext
from tests.unit.fakes import Audit

pytestmark = pytest.mark.anyio

SESSION = Session("2025-11-25", "client", "key-1", 0, "session-1")
CLIENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Connector:
    """forward() as the handler uses it: records what it was sent, answers a prompt."""

    def __init__(self) -> None:
        self.forwarded: list[tuple[connector_pb2.ForwardRequest, TraceContext]] = []

    async def forward(self, request: connector_pb2.ForwardRequest, trace: TraceContext) -> Any:
        self.forwarded.append((request, trace))
        return connector_pb2.ForwardOutcome(result_json=b'{"messages":[]}')


def handler(audit: Audit, connector: Connector) -> McpHandler:
    return McpHandler(
        cast(ConnectorClient, connector),
        cast(AuditPublisher, audit),
        "edge-1",
        timeout=lambda server, tool: 60.0,
        task_ids=TaskIds(Signer("test")),
    )


def context(request_id: int = 9) -> CallContext:
    prompt = registry_pb2.CatalogEntry(
        exposed_name="srv_greet", server="srv", name="greet", definition_json=b'{"name":"greet"}'
    )
    server = registry_pb2.ServerView(name="srv", state="connected", capabilities_json=b'{"prompts": {}}')
    snapshot = registry_pb2.Snapshot(servers=[server], prompts=[prompt])
    return CallContext(
        SESSION, request_id, build_view(snapshot, None), sender=Sender("10.0.0.1", 4242, "1.1")
    )


async def test_a_local_answer_is_recorded_and_does_not_wait_for_its_record() -> None:
    audit, connector = Audit(), Connector()
    await handler(audit, connector).request(context(), "prompts/list", {"_meta": {"traceparent": CLIENT}})
    (event,) = audit.events
    assert (event.method, event.outcome, event.request_id) == ("prompts/list", events_pb2.OUTCOME_OK, "9")
    assert (event.trace_id, event.parent_span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert (event.session, event.virtual_key_id, event.protocol_version) == (
        "session-1",
        "key-1",
        "2025-11-25",
    )
    assert (event.client_address, event.client_port, event.http_version) == ("10.0.0.1", 4242, "1.1")
    assert audit.awaited == [] and connector.forwarded == []


async def test_a_forwarded_request_continues_the_trace_and_answers_once_its_record_is_stored() -> None:
    audit, connector = Audit(), Connector()
    await handler(audit, connector).request(context(), "prompts/get", {"name": "srv_greet"})
    (event,) = audit.events
    assert (event.method, event.exposed_name, event.server, event.tool) == (
        "prompts/get",
        "srv_greet",
        "srv",
        "greet",
    )
    [(request, trace)] = connector.forwarded
    assert request.method == "prompts/get" and (trace.trace_id, trace.span_id) == (
        event.trace_id,
        event.span_id,
    )
    assert audit.awaited == [1]


@pytest.mark.parametrize(
    ("method", "params", "refused"),
    [
        ("no/such/method", {}, MethodNotFoundError),
        ("prompts/get", {"name": "srv_nothing"}, InvalidParamsError),
        ("prompts/get", {"_meta": "not an object"}, InvalidParamsError),
    ],
)
async def test_a_refused_request_is_recorded_with_its_code(
    method: str, params: dict[str, Any], refused: type[Exception]
) -> None:
    audit, connector = Audit(), Connector()
    with pytest.raises(refused) as raised:
        await handler(audit, connector).request(context(), method, params)
    (event,) = audit.events
    assert event.method == method and event.outcome == events_pb2.OUTCOME_ERROR
    assert event.error_code == raised.value.code  # type: ignore[attr-defined]
    assert connector.forwarded == []


async def test_a_refused_tool_call_is_recorded_once() -> None:
    audit, connector = Audit(), Connector()
    with pytest.raises(InvalidParamsError):
        await handler(audit, connector).request(context(), "tools/call", {"name": "srv_nothing"})
    (event,) = audit.events
    assert (event.method, event.exposed_name, event.error_code) == ("tools/call", "srv_nothing", -32602)


async def test_the_llm_request_behind_an_operation_is_recorded_from_meta_or_header() -> None:
    audit, connector = Audit(), Connector()
    ctx = context()
    ctx.sender = Sender("10.0.0.1", 4242, "1.1", llm_request_id="chatcmpl-header")
    await handler(audit, connector).request(
        ctx, "prompts/list", {"_meta": {"llm_request_id": "chatcmpl-meta"}}
    )
    await handler(audit, connector).request(ctx, "prompts/list", {})
    with pytest.raises(InvalidParamsError):
        await handler(audit, connector).request(ctx, "tools/call", {"name": "srv_nothing"})
    assert [e.llm_request_id for e in audit.events] == ["chatcmpl-meta", "chatcmpl-header", "chatcmpl-header"]
