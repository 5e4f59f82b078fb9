"""Code Mode through `mcpgw up`, driven by the official `mcp` client: a key in code mode
lists the four meta-tools, reads the stubs of a Python server over stdio and of
server-everything (the TypeScript SDK) over Streamable HTTP, and runs a script that calls
both; the audit shows the script's record and each inner call as its child. Scripts that
reach past the key's view, loop, allocate, recurse, or reach for the host are stopped with
the limit or refusal they met, and the gateway serves on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.conftest import AGENT_ADMIN, CLASSIC, CODER, EVERYTHING
from tests.processes import NODE

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not (NODE.exists() and EVERYTHING.exists()),
        reason="server-everything is not installed: run `make install`",
    ),
]
META = {"listToolFiles", "readToolFile", "getToolDocs", "executeToolCode"}


@asynccontextmanager
async def client(gateway: str, key: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http,
        streamable_http_client(f"{gateway}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def tool_names(session: ClientSession, wanted: set[str]) -> set[str]:
    """The listed tool names, once `wanted` are among them (servers connect in the background)."""
    with anyio.fail_after(30):
        while True:
            names = {tool.name for tool in (await session.list_tools()).tools}
            if wanted <= names:
                return names
            await anyio.sleep(0.1)


@asynccontextmanager
async def coder(gateway: str) -> AsyncIterator[ClientSession]:
    async with client(gateway, CODER) as session:
        await tool_names(session, META)
        # The script's modules arrive with the catalog: wait until both servers are there.
        with anyio.fail_after(30):
            while True:
                listed = await text(session, "listToolFiles", {})
                if "servers/everything.pyi" in listed and "servers/fixture.pyi" in listed:
                    break
                await anyio.sleep(0.1)
        yield session


async def text(session: ClientSession, tool: str, arguments: dict[str, Any]) -> str:
    result = await session.call_tool(tool, arguments)
    return "\n".join(c.text for c in result.content if c.type == "text")


async def run(session: ClientSession, code: str) -> tuple[bool, str, Any]:
    """(is_error, text, structuredContent) of one executeToolCode."""
    with anyio.fail_after(30):
        result = await session.call_tool("executeToolCode", {"code": code})
    shown = "\n".join(c.text for c in result.content if c.type == "text")
    return result.is_error, shown, result.structured_content


async def test_a_key_in_code_mode_lists_the_four_meta_tools_and_a_classic_key_its_tools(
    agent_gateway: str,
) -> None:
    async with client(agent_gateway, CODER) as session:
        assert await tool_names(session, META) == META
    async with client(agent_gateway, CLASSIC) as session:
        names = await tool_names(session, {"fixture_echo", "everything_get-sum"})
        assert names == {
            "fixture_echo", "fixture_fail", "fixture_sleep", "fixture_hold",
            "everything_echo", "everything_get-sum", "everything_get-structured-content",
        }  # fmt: skip


async def test_the_stubs_show_only_the_keys_tools_typed_from_their_schemas(agent_gateway: str) -> None:
    async with coder(agent_gateway) as session:
        assert (await text(session, "listToolFiles", {})).splitlines() == [
            "servers/everything.pyi",
            "servers/fixture.pyi",
        ]
        stub = await text(session, "readToolFile", {"fileName": "servers/fixture.pyi"})
        assert "async def echo(*, text: str) -> Any: ..." in stub
        assert "async def sleep(*, seconds: float) -> Any: ..." in stub
        assert "environment" not in stub  # the server has it; the key may not call it
        everything = await text(session, "readToolFile", {"fileName": "servers/everything.pyi"})
        assert "async def get_sum(*, a: float, b: float) -> Any: ..." in everything
        first = await text(
            session, "readToolFile", {"fileName": "servers/fixture.pyi", "startLine": 1, "endLine": 2}
        )
        assert first.splitlines() == stub.splitlines()[:2]
        docs = await text(session, "getToolDocs", {"server": "everything", "tool": "get-sum"})
        assert "a (float, required):" in docs and "structuredContent" in docs
        missing = await session.call_tool("readToolFile", {"fileName": "servers/nothing.pyi"})
        assert missing.is_error


async def test_a_script_calls_tools_of_two_servers_and_the_audit_shows_its_inner_calls(
    agent_gateway: str,
) -> None:
    code = """
import asyncio
echoed, summed = await asyncio.gather(fixture.echo(text="code"), everything.get_sum(a=2, b=40))
weather = await everything.get_structured_content(location="Chicago")
print("inner calls done")
{"echoed": echoed, "sum": summed, "weather": sorted(weather)}
"""
    async with coder(agent_gateway) as session:
        is_error, shown, structured = await run(session, code)
    assert not is_error, shown
    assert structured["printed"] == "inner calls done\n"
    assert structured["toolCalls"] == 3
    result = structured["result"]
    # The Python SDK wraps a str-returning tool's value as structuredContent {"result": ...}.
    assert result["echoed"] == {"result": "code"}
    assert "42" in json.dumps(result["sum"])
    assert result["weather"] == ["conditions", "humidity", "temperature"]
    with anyio.fail_after(30):
        while True:
            records = audit(agent_gateway)
            parents = [r for r in records if r["name"] == "executeToolCode" and r["outcome"] == "ok"]
            inner = (
                [] if not parents else [r for r in records if r["parent_span_id"] == parents[0]["span_id"]]
            )
            if len(inner) == 3:
                break
            await anyio.sleep(0.2)
    parent = parents[0]
    assert parent["key_id"] == "vk-coder"
    assert {r["name"] for r in inner} == {
        "fixture_echo",
        "everything_get-sum",
        "everything_get-structured-content",
    }
    assert {(r["server"], r["trace_id"], r["key_id"]) for r in inner} == {
        ("fixture", parent["trace_id"], "vk-coder"),
        ("everything", parent["trace_id"], "vk-coder"),
    }


def audit(gateway: str) -> list[dict[str, Any]]:
    reply = httpx2.get(
        f"{gateway}/api/audit",
        params={"key": "vk-coder", "limit": 500},
        headers={"Authorization": f"Bearer {AGENT_ADMIN}"},
    )
    reply.raise_for_status()
    return reply.json()["records"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("code", "said"),
    [
        # Outside the key's view, as an unknown tool would be: the server has it, the key not.
        ("await fixture.environment()", "AttributeError"),
        ("import github", "ModuleNotFoundError"),
        ("await fixture.fail(reason='no luck')", "no luck"),
        ("while True:\n    pass", "execution time limit (1s)"),
        ("x = []\nwhile True:\n    x.append('y' * 100000)", "memory limit"),
        ("def down(n):\n    return down(n + 1)\ndown(0)", "recursion depth limit (100 frames)"),
        ("for i in range(11):\n    await fixture.echo(text=str(i))", "tool calls limit (10 calls)"),
        ("'z' * 100000", "result size limit"),
        ("import os\nos.listdir('/')", "PermissionError"),
        ("open('/etc/passwd').read()", "PermissionError"),
        ("import socket", "ModuleNotFoundError: No module named 'socket'"),
        ("import subprocess", "ModuleNotFoundError"),
        ("await fixture.echo('positional')", "keyword arguments only"),
        ("def (", "SyntaxError"),
    ],
    ids=[
        "tool-outside-the-view", "server-outside-the-view", "tool-error", "endless-loop",
        "unbounded-allocation",
        "unbounded-recursion", "too-many-tool-calls", "huge-result", "os", "file", "socket", "subprocess",
        "positional-arguments", "syntax",
    ],
)  # fmt: skip
async def test_a_script_is_stopped_by_the_limit_or_refusal_it_meets_and_the_gateway_serves_on(
    agent_gateway: str, code: str, said: str
) -> None:
    async with coder(agent_gateway) as session:
        is_error, shown, _ = await run(session, code)
        assert is_error and said in shown, shown
        assert "services/" not in shown  # the sandbox's traceback, never the gateway's
        # The same session goes on: a script runs, and so does a plain meta-tool.
        failed, shown, structured = await run(session, "await fixture.echo(text='still here')")
        assert not failed and structured["result"] == {"result": "still here"}, shown
