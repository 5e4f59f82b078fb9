"""Tool search through `mcpgw up` with the `mcp` client: a key in search mode lists
searchTools and callTool, finds tools of a Python server and of server-everything by what
they do, and calls them through callTool or by name; the audit names the real tool."""

from __future__ import annotations

import time

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.e2e.conftest import AGENT_ADMIN, EVERYTHING, SEARCHER
from tests.processes import NODE

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not (NODE.exists() and EVERYTHING.exists()),
        reason="server-everything is not installed: run `make install`",
    ),
]


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_a_key_in_search_mode_finds_and_calls_tools_it_is_not_listed(agent_gateway: str) -> None:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {SEARCHER}"}, timeout=30) as http,
        streamable_http_client(f"{agent_gateway}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert {t.name for t in (await session.list_tools()).tools} == {"searchTools", "callTool"}
        with anyio.fail_after(30):
            while True:
                found = await session.call_tool("searchTools", {"query": "sum of two numbers", "limit": 3})
                assert found.structured_content is not None
                if found.structured_content["tools"]:
                    break
                await anyio.sleep(0.1)  # the servers' tools arrive with the catalog
        best = found.structured_content["tools"][0]
        assert best["name"] == "everything_get-sum"
        assert set(best["inputSchema"]["properties"]) == {"a", "b"}
        echo = await session.call_tool("searchTools", {"query": "echo text back"})
        assert "fixture_echo" in [t["name"] for t in echo.structured_content["tools"]]
        # Outside the key's view, nothing is found.
        hidden = await session.call_tool("searchTools", {"query": "environment variables"})
        assert "fixture_environment" not in text(hidden)
        summed = await session.call_tool(
            "callTool", {"name": "everything_get-sum", "arguments": {"a": 2, "b": 40}}
        )
        assert not summed.is_error and "42" in text(summed)
        direct = await session.call_tool("fixture_echo", {"text": "by name"})
        assert not direct.is_error and text(direct) == "by name"
        with pytest.raises(MCPError, match="Unknown tool: fixture_environment"):
            await session.call_tool("callTool", {"name": "fixture_environment", "arguments": {}})
    deadline = time.monotonic() + 30
    while True:
        records = httpx2.get(
            f"{agent_gateway}/api/audit",
            params={"key": "vk-searcher", "limit": 500},
            headers={"Authorization": f"Bearer {AGENT_ADMIN}"},
        ).json()["records"]
        if any(r["name"] == "everything_get-sum" and r["outcome"] == "ok" for r in records):
            break
        assert time.monotonic() < deadline, records
        await anyio.sleep(0.2)
