"""Approval before sensitive tools, through `mcpgw up`: a key whose tools_to_auto_execute
leaves a tool out gets each call of it approved first. The client's user is asked through
elicitation (the `mcp` client and the TypeScript SDK's), may deny, or an operator decides
through the admin API while the call waits; nobody deciding in time, or a client that cannot
be asked, refuses the call. Every decision, and who made it, is in the audit."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, ClientSession
from mcp.client.session import ClientRequestContext, ElicitationFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.e2e.conftest import AGENT_ADMIN, CAREFUL, EVERYTHING
from tests.processes import NODE, NODE_DIR

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not (NODE.exists() and EVERYTHING.exists()),
        reason="server-everything is not installed: run `make install`",
    ),
]
ADMIN = {"Authorization": f"Bearer {AGENT_ADMIN}"}


@asynccontextmanager
async def careful(gateway: str, elicit: ElicitationFnT | None) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {CAREFUL}"}, timeout=30) as http,
        streamable_http_client(f"{gateway}/mcp", http_client=http) as (read, write),
        ClientSession(read, write, elicitation_callback=elicit) as session,
    ):
        await session.initialize()
        with anyio.fail_after(30):
            while "fixture_sleep" not in {t.name for t in (await session.list_tools()).tools}:
                await anyio.sleep(0.1)
        yield session


def answering(approve: bool, asked: list[types.ElicitRequestParams]) -> ElicitationFnT:
    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params)
        if approve:
            return types.ElicitResult(action="accept", content={"approve": True})
        return types.ElicitResult(action="decline")

    return elicit


def never_answering(asked: anyio.Event) -> ElicitationFnT:
    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return elicit


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def record(gateway: str, tool: str, approval: str, decided_by: str | None = None) -> dict[str, Any]:
    """The audit record of the careful key's latest call of `tool` with that approval (and
    decider), once the audit has stored it."""
    deadline = time.monotonic() + 30
    while True:
        params: dict[str, str | int] = {"key": "vk-careful", "tool": tool, "limit": 500}
        records = httpx2.get(f"{gateway}/api/audit", params=params, headers=ADMIN).json()["records"]
        found = [r for r in records if r["approval"] == approval and r["approval_decided_by"] == decided_by]
        if found:
            return found[-1]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, records
        time.sleep(0.2)


async def test_a_tool_that_needs_approval_runs_once_the_clients_user_approves(agent_gateway: str) -> None:
    asked: list[types.ElicitRequestParams] = []
    async with careful(agent_gateway, answering(True, asked)) as session:
        echoed = await session.call_tool("fixture_echo", {"text": "no approval needed"})
        assert not asked and text(echoed) == "no approval needed"
        slept = await session.call_tool("fixture_sleep", {"seconds": 0})
    assert not slept.is_error and text(slept) == "slept 0.0"
    [question] = asked
    assert isinstance(question, types.ElicitRequestFormParams)
    assert "fixture_sleep" in question.message and '"seconds":0' in question.message
    assert question.requested_schema["required"] == ["approve"]
    assert record(agent_gateway, "sleep", "approved", "client")["outcome"] == "ok"


async def test_a_2026_client_approves_in_an_input_required_round(agent_gateway: str) -> None:
    asked: list[types.ElicitRequestParams] = []
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {CAREFUL}"}, timeout=30) as http:
        transport = streamable_http_client(f"{agent_gateway}/mcp", http_client=http)
        async with Client(transport, mode="auto", elicitation_callback=answering(True, asked)) as client:
            # auto settles on 2026-07-28: no handshake, requests to the client as input rounds.
            assert client.session.discover_result is not None
            with anyio.fail_after(30):
                while "fixture_sleep" not in {t.name for t in (await client.list_tools()).tools}:
                    await anyio.sleep(0.1)
            slept = await client.call_tool("fixture_sleep", {"seconds": 0})
    assert not slept.is_error and text(slept) == "slept 0.0"
    [question] = asked
    assert "fixture_sleep" in question.message


async def test_a_denied_call_does_not_run_and_says_who_denied_it(agent_gateway: str) -> None:
    asked: list[types.ElicitRequestParams] = []
    async with careful(agent_gateway, answering(False, asked)) as session:
        denied = await session.call_tool("fixture_sleep", {"seconds": 0})
    assert denied.is_error and "the client's user denied the call of fixture_sleep" in text(denied)
    assert record(agent_gateway, "sleep", "denied", "client")["outcome"] == "error"


async def test_a_client_that_cannot_be_asked_gets_a_clear_error(agent_gateway: str) -> None:
    async with careful(agent_gateway, None) as session:
        with pytest.raises(MCPError) as refused:
            await session.call_tool("fixture_sleep", {"seconds": 0})
    assert refused.value.error.code == -32030
    assert "needs a person's approval" in refused.value.error.message
    assert "declared no elicitation" in refused.value.error.message
    assert record(agent_gateway, "sleep", "unasked")["outcome"] == "error"


async def test_an_operator_approves_a_waiting_call_through_the_api(agent_gateway: str) -> None:
    asked = anyio.Event()
    async with careful(agent_gateway, never_answering(asked)) as session, anyio.create_task_group() as tg:
        results: list[types.CallToolResult] = []

        async def call() -> None:
            results.append(await session.call_tool("fixture_sleep", {"seconds": 0}))

        tg.start_soon(call)
        with anyio.fail_after(10):
            await asked.wait()
            while not (pending := httpx2.get(f"{agent_gateway}/api/approvals", headers=ADMIN).json()):
                await anyio.sleep(0.05)
        [waiting] = pending
        assert waiting["tool"] == "fixture_sleep" and waiting["key_id"] == "vk-careful"
        decided = httpx2.post(f"{agent_gateway}/api/approvals/{waiting['id']}/approve", headers=ADMIN)
        assert decided.status_code == 204
    assert not results[0].is_error and text(results[0]) == "slept 0.0"
    assert record(agent_gateway, "sleep", "approved", "operator")["outcome"] == "ok"
    gone = httpx2.post(f"{agent_gateway}/api/approvals/{waiting['id']}/deny", headers=ADMIN)
    assert gone.status_code == 404


async def test_nobody_deciding_in_time_refuses_the_call(agent_gateway: str) -> None:
    asked = anyio.Event()
    async with careful(agent_gateway, never_answering(asked)) as session:
        with anyio.fail_after(20):
            timed_out = await session.call_tool("fixture_sleep", {"seconds": 0})
    assert timed_out.is_error and "nobody approved the call of fixture_sleep in time" in text(timed_out)
    assert record(agent_gateway, "sleep", "timed_out")["outcome"] == "error"


@pytest.mark.parametrize("answer", ["approve", "deny"])
def test_the_typescript_client_approves_and_denies_through_elicitation(
    agent_gateway: str, answer: str
) -> None:
    async def listed() -> None:
        async with careful(agent_gateway, None):
            pass  # the tool is in the catalog once this returns

    anyio.run(listed)
    argv = [str(NODE), "approve-client.mjs", f"{agent_gateway}/mcp", CAREFUL, "fixture_sleep", answer]
    done = subprocess.run(argv, cwd=NODE_DIR, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [question] = report["asked"]
    assert "fixture_sleep" in question["message"]
    shown = report["result"]["content"][0]["text"]
    if answer == "approve":
        assert not report["result"].get("isError") and shown == "slept 0.0"
    else:
        assert report["result"]["isError"] and "denied the call of fixture_sleep" in shown
