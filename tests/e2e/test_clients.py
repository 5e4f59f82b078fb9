"""The official clients against the gateway, each doing what an MCP host does: list and
call tools, read a resource, get a prompt, follow progress, and answer the sampling and
elicitation requests a downstream tool raises mid-call.

Python over Streamable HTTP in `legacy` mode (the initialize handshake) and in `auto` mode
(which discovers 2026-07-28 here, so sampling and elicitation come back as input_required
rounds), Python over the legacy HTTP+SSE transport, and TypeScript over Streamable HTTP.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, ClientSession
from mcp.client.session import ClientRequestContext
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.processes import NODE, NODE_DIR

DEADLINE = 60
SAMPLED = "sampled by python"
ELICITED: dict[str, str | int | float | bool | list[str] | None] = {
    "username": "python",
    "email": "python@example.org",
}


async def sample(
    context: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=SAMPLED), model="test-model"
    )


async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content=ELICITED)


def text(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@dataclass
class Seen:
    """What a client saw, in the terms every client test checks."""

    tools: set[str] = field(default_factory=set)
    simple: str = ""
    sampling: str = ""
    elicitation: str = ""
    progress: list[float] = field(default_factory=list)
    resource: str = ""
    prompt: str = ""


async def exercise(session: Client | ClientSession) -> Seen:
    seen = Seen()
    seen.tools = {t.name for t in (await session.list_tools()).tools}
    seen.simple = text(await session.call_tool("test_simple_text", {}))
    seen.sampling = text(await session.call_tool("test_sampling", {"prompt": "hi"}))
    seen.elicitation = text(await session.call_tool("test_elicitation", {"message": "who?"}))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.progress.append(progress)

    await session.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
    contents = (await session.read_resource("test://static-text")).contents[0]
    seen.resource = contents.text if isinstance(contents, types.TextResourceContents) else ""
    message = (await session.get_prompt("test_simple_prompt")).messages[0].content
    seen.prompt = message.text if isinstance(message, types.TextContent) else ""
    return seen


def check(seen: Seen, sampled: str = SAMPLED, elicited: dict[str, Any] = ELICITED) -> None:
    assert {"test_simple_text", "test_sampling", "test_elicitation"} <= seen.tools
    assert seen.simple == "This is a simple text response for testing."
    assert seen.sampling == f"LLM response: {sampled}"
    assert seen.elicitation == f"User response: action=accept, content={json.dumps(elicited)}"
    assert seen.progress == [0, 50, 100]
    assert seen.resource == "This is the content of the static text resource."
    assert seen.prompt == "This is a simple prompt for testing."


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_python_client_over_streamable_http(conformance_gateway: str, mode: str) -> None:
    url = f"{conformance_gateway}/conf"
    with anyio.fail_after(DEADLINE):
        async with Client(url, mode=mode, sampling_callback=sample, elicitation_callback=elicit) as client:
            # auto settles on the newest revision: no handshake, input_required rounds.
            if mode == "auto":
                assert client.session.discover_result is not None
            else:
                assert client.session.initialize_result is not None
            check(await exercise(client))


@pytest.mark.anyio
async def test_the_python_client_with_its_own_transport(conformance_gateway: str) -> None:
    with anyio.fail_after(DEADLINE):
        async with (
            streamable_http_client(f"{conformance_gateway}/confhttp") as (read, write),
            ClientSession(read, write, sampling_callback=sample, elicitation_callback=elicit) as session,
        ):
            await session.initialize()
            check(await exercise(session))


@pytest.mark.anyio
async def test_the_python_client_over_legacy_sse(conformance_gateway: str) -> None:
    base = conformance_gateway.removesuffix("/mcp")
    with anyio.fail_after(DEADLINE):
        async with (
            sse_client(f"{base}/sse/conf") as (read, write),
            ClientSession(read, write, sampling_callback=sample, elicitation_callback=elicit) as session,
        ):
            initialized = await session.initialize()
            assert initialized.server_info.name == "mcpgw"
            check(await exercise(session))


@pytest.mark.skipif(not NODE.exists(), reason="node is not installed: run `make install`")
def test_the_typescript_client_over_streamable_http(conformance_gateway: str) -> None:
    completed = subprocess.run(
        [str(NODE), "client.mjs", f"{conformance_gateway}/conf"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["version"] == "2025-11-25"
    seen = Seen(
        tools=set(report["tools"]),
        simple=report["simple"],
        sampling=report["sampling"],
        elicitation=report["elicitation"],
        progress=report["progress"],
        resource=report["resource"],
        prompt=report["prompt"],
    )
    check(seen, "sampled by node", {"username": "node", "email": "node@example.org"})
