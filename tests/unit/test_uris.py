"""Resource URIs in downstream results, as the aggregate /mcp names them."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest

from services.contracts import registry_pb2
from services.edge.auditing import AuditPublisher
from services.edge.catalog import build_view, server_capabilities
from services.edge.connector_client import ConnectorClient
from services.edge.errors import MethodNotFoundError
from services.edge.protocol import CallContext, McpHandler
from services.edge.signing import Signer
from services.edge.tasks import TaskIds
from services.edge.uris import exposed_result
from tests.unit.fakes import Audit


def test_every_place_a_result_names_a_resource_is_rewritten() -> None:
    result = {
        "contents": [{"uri": "demo://x", "text": "hi"}],
        "content": [
            {"type": "resource_link", "uri": "file:///a.txt", "name": "a"},
            {"type": "resource", "resource": {"uri": "test://embedded", "text": "e"}},
            {"type": "text", "text": "the word uri is not a URI", "uri": "kept"},
        ],
        "messages": [{"role": "user", "content": {"type": "resource", "resource": {"uri": "p://m"}}}],
        "structuredContent": {"uri": "data, not a resource"},
    }
    shown = orjson.loads(exposed_result("srv", orjson.dumps(result)))
    assert shown["contents"][0]["uri"] == "mcpgw://srv/demo://x"
    assert shown["content"][0]["uri"] == "mcpgw://srv/file:///a.txt"
    assert shown["content"][1]["resource"]["uri"] == "mcpgw://srv/test://embedded"
    assert shown["content"][2]["uri"] == "kept"
    assert shown["messages"][0]["content"]["resource"]["uri"] == "mcpgw://srv/p://m"
    assert shown["structuredContent"] == {"uri": "data, not a resource"}


def test_a_result_without_uris_keeps_its_bytes() -> None:
    raw = b'{"content":[{"type":"text","text":"x"}],"isError":false}'
    assert exposed_result("srv", raw) is raw


def test_a_server_endpoint_promises_exactly_what_the_server_offers() -> None:
    offered: dict[str, Any] = {"tools": {}, "logging": {}, "tasks": {"list": {}}, "experimental": {"x": {}}}
    assert server_capabilities(offered) == {
        "tools": {"listChanged": True},
        "logging": {},
        "tasks": {"list": {}},
        "experimental": {"x": {}},
    }


@pytest.mark.anyio
async def test_a_server_endpoint_refuses_what_its_server_does_not_offer() -> None:
    snapshot = registry_pb2.Snapshot(
        servers=[registry_pb2.ServerView(name="s", state="connected", capabilities_json=b'{"tools": {}}')]
    )
    view = build_view(snapshot, "s")
    handler = McpHandler(
        cast(ConnectorClient, None),
        cast(AuditPublisher, Audit()),
        "edge",
        timeout=lambda server, tool: 60.0,
        task_ids=TaskIds(Signer("test")),
    )
    with pytest.raises(MethodNotFoundError):
        await handler.request(CallContext(None, 1, view), "prompts/list", None)
    assert await handler.request(CallContext(None, 1, view), "tools/list", None) == b'{"tools":[]}'
