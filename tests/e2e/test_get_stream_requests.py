"""Sampling and elicitation a downstream raises outside any call, on its standalone GET stream,
reach the client through the gateway, and the client's answers get back to the downstream.

The TypeScript fixture (tests/node/conformance-server.mjs, `confts`) asks that way: its
`ask_sampling_on_get_stream` and `ask_elicitation_on_get_stream` tools send their request
without naming the call it serves, so the SDK puts it on the GET stream. Each test also runs
against the fixture directly, so that a failure through the gateway is the gateway's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client

DEADLINE = 60
SAMPLED = "sampled on the GET stream"
ELICITED: dict[str, str | int | float | bool | list[str] | None] = {"answer": "elicited on the GET stream"}


@pytest.fixture(params=["gateway", "direct"])
def confts(request: pytest.FixtureRequest) -> str:
    """The TypeScript fixture's URL: behind the gateway at /mcp/confts, or its own."""
    if request.param == "direct":
        return str(request.getfixturevalue("ts_fixture_url"))
    return f"{request.getfixturevalue('conformance_gateway')}/confts"


@dataclass
class Host:
    """A client host that answers sampling and elicitation and remembers what it was asked."""

    asked: list[str] = field(default_factory=list)

    async def sample(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        content = params.messages[0].content
        self.asked.append(content.text if isinstance(content, types.TextContent) else repr(content))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=SAMPLED), model="test-model"
        )

    async def elicit(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.asked.append(params.message)
        return types.ElicitResult(action="accept", content=ELICITED)

    async def call(self, url: str, tool: str, arguments: dict[str, Any]) -> str:
        """The text of `tool`'s result, called in a fresh session (the legacy handshake)."""
        with anyio.fail_after(DEADLINE):
            async with (
                streamable_http_client(url) as (read, write),
                ClientSession(
                    read, write, sampling_callback=self.sample, elicitation_callback=self.elicit
                ) as session,
            ):
                await session.initialize()
                result = await session.call_tool(tool, arguments)
        texts = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
        assert not result.is_error, texts
        return texts


@pytest.mark.anyio
async def test_sampling_on_the_get_stream_is_answered(confts: str) -> None:
    host = Host()
    answer = await host.call(confts, "ask_sampling_on_get_stream", {"prompt": "what is on the GET stream?"})
    assert host.asked == ["what is on the GET stream?"]
    assert answer == f"sampled: {SAMPLED}"


@pytest.mark.anyio
async def test_elicitation_on_the_get_stream_is_answered(confts: str) -> None:
    host = Host()
    answer = await host.call(confts, "ask_elicitation_on_get_stream", {"message": "who is there?"})
    assert host.asked == ["who is there?"]
    # The fixture writes the content as JavaScript's JSON.stringify does: no spaces.
    assert answer == f"elicited: accept {json.dumps(ELICITED, separators=(',', ':'))}"
