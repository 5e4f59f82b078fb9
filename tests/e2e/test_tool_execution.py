"""`POST /v1/mcp/tool/execute` through `mcpgw up`: a model's tool call in each shape an
application holds it (OpenAI chat, Responses, Anthropic) runs under the caller's key and
comes back as the matching tool-result message; several run at once; a call the key may not
make, or a body that is no tool call, is refused with a clear error. Every call is audited."""

from __future__ import annotations

import concurrent.futures
import json
import time
from typing import Any

import httpx2
import pytest

from tests.e2e.conftest import AGENT_ADMIN, CAREFUL, CLASSIC, CODER, EVERYTHING
from tests.processes import NODE

pytestmark = pytest.mark.skipif(
    not (NODE.exists() and EVERYTHING.exists()),
    reason="server-everything is not installed: run `make install`",
)


def execute(gateway: str, body: Any, form: str | None = None, key: str = CLASSIC) -> httpx2.Response:
    params = {"format": form} if form else {}
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 30
    while True:
        reply = httpx2.post(
            f"{gateway}/v1/mcp/tool/execute", params=params, json=body, headers=headers, timeout=30
        )
        # The servers' tools arrive with the catalog, a moment after the gateway is up.
        if b"Unknown tool" not in reply.content or time.monotonic() > deadline:
            return reply
        time.sleep(0.2)


def test_an_openai_chat_tool_call_comes_back_as_a_tool_message(agent_gateway: str) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "fixture_echo", "arguments": '{"text":"hi"}'},
    }
    reply = execute(agent_gateway, call)
    assert reply.status_code == 200, reply.text
    message = reply.json()
    assert message["role"] == "tool" and message["tool_call_id"] == "call_1"
    assert "hi" in message["content"]


def test_a_responses_function_call_comes_back_as_its_output(agent_gateway: str) -> None:
    call = {
        "type": "function_call",
        "call_id": "fc_7",
        "name": "everything_get-sum",
        "arguments": '{"a":2,"b":40}',
    }
    reply = execute(agent_gateway, call, "responses")
    assert reply.status_code == 200, reply.text
    output = reply.json()
    assert output["type"] == "function_call_output" and output["call_id"] == "fc_7"
    assert "42" in output["output"]


def test_an_anthropic_tool_use_comes_back_as_a_tool_result_and_a_tool_error_says_so(
    agent_gateway: str,
) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "everything_echo", "input": {"message": "hello"}}
    result = execute(agent_gateway, use, "anthropic").json()
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1"
    assert "hello" in result["content"][0]["text"] and "is_error" not in result
    failing = {"type": "tool_use", "id": "toolu_2", "name": "fixture_fail", "input": {"reason": "no luck"}}
    failed = execute(agent_gateway, failing, "anthropic").json()
    assert failed["is_error"] is True and "no luck" in failed["content"][0]["text"]


def test_several_calls_run_at_once_and_answer_in_order(agent_gateway: str) -> None:
    holds = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "fixture_hold", "arguments": '{"seconds":1}'},
        }
        for i in range(4)
    ]
    reply = execute(agent_gateway, holds)
    assert reply.status_code == 200, reply.text
    assert [m["tool_call_id"] for m in reply.json()] == ["call_0", "call_1", "call_2", "call_3"]
    # The downstream saw the four in flight together.
    assert {m["content"] for m in reply.json()} == {"most in flight: 4"}


def test_a_call_outside_the_keys_view_is_refused_as_an_unknown_tool(agent_gateway: str) -> None:
    call = {
        "id": "call_x",
        "type": "function",
        "function": {"name": "fixture_environment", "arguments": "{}"},
    }
    reply = httpx2.post(
        f"{agent_gateway}/v1/mcp/tool/execute", json=call, headers={"Authorization": f"Bearer {CLASSIC}"}
    )
    assert reply.status_code == 400
    assert reply.json() == {
        "error": {"type": "tool_execution_error", "message": "Unknown tool: fixture_environment"}
    }
    mixed = [
        call,
        {**call, "id": "call_y", "function": {"name": "fixture_echo", "arguments": '{"text":"ok"}'}},
    ]
    answers = execute(agent_gateway, mixed).json()
    assert answers[0] == {
        "error": {"type": "tool_execution_error", "message": "Unknown tool: fixture_environment"},
        "tool_call_id": "call_x",
    }
    assert answers[1]["tool_call_id"] == "call_y"


@pytest.mark.parametrize(
    ("body", "form", "said"),
    [
        (b"{not json", None, "the body is not valid JSON"),
        ({"id": "c", "type": "function"}, None, "body.function is missing"),
        (
            {"id": "c", "function": {"name": "fixture_echo", "arguments": "[1]"}},
            None,
            "must be a JSON object",
        ),
        ({"id": "c", "function": {"name": "fixture_echo", "arguments": "{"}}, None, "is not valid JSON"),
        ({"type": "function_call", "name": "fixture_echo"}, "responses", "body.call_id is missing"),
        (
            {"type": "tool_use", "id": "t", "name": "fixture_echo", "input": [1]},
            "anthropic",
            "body.input must be",
        ),
        ([], None, "a list of 1 to 64 tool calls"),
        ({"id": "c"}, "xml", "format must be one of"),
    ],
)
def test_a_body_that_is_no_tool_call_is_refused_naming_what_is_wrong(
    agent_gateway: str, body: Any, form: str | None, said: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = httpx2.post(
        f"{agent_gateway}/v1/mcp/tool/execute",
        params={"format": form} if form else {},
        content=content,
        headers={"Authorization": f"Bearer {CLASSIC}", "content-type": "application/json"},
    )
    assert reply.status_code == 400
    assert said in reply.json()["error"]["message"]


def test_a_key_in_code_mode_executes_the_meta_tools_and_every_call_is_audited(agent_gateway: str) -> None:
    call = {
        "id": "call_k",
        "type": "function",
        "function": {"name": "fixture_echo", "arguments": '{"text":"aud"}'},
    }
    assert execute(agent_gateway, call, key=CODER).status_code == 400  # in code mode: the meta-tools only
    meta = {"id": "call_m", "type": "function", "function": {"name": "listToolFiles", "arguments": "{}"}}
    assert "servers/fixture.pyi" in execute(agent_gateway, meta, key=CODER).json()["content"]
    assert execute(agent_gateway, call).status_code == 200
    deadline = time.monotonic() + 30
    while True:
        records = httpx2.get(
            f"{agent_gateway}/api/audit",
            params={"key": "vk-classic", "tool": "echo", "limit": 500},
            headers={"Authorization": f"Bearer {AGENT_ADMIN}"},
        ).json()["records"]
        if any(r["request_id"] == "call_k" and r["client_name"] == "tool-execute" for r in records):
            return
        assert time.monotonic() < deadline, records
        time.sleep(0.2)


def test_a_call_that_needs_approval_waits_for_an_operator(agent_gateway: str) -> None:
    call = {
        "id": "call_a",
        "type": "function",
        "function": {"name": "fixture_sleep", "arguments": '{"seconds":0}'},
    }
    admin = {"Authorization": f"Bearer {AGENT_ADMIN}"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(execute, agent_gateway, call, None, CAREFUL)
        deadline = time.monotonic() + 10
        while not (pending := httpx2.get(f"{agent_gateway}/api/approvals", headers=admin).json()):
            assert time.monotonic() < deadline and not answer.done()
            time.sleep(0.05)
        [waiting] = pending
        assert waiting["tool"] == "fixture_sleep" and waiting["key_id"] == "vk-careful"
        assert (
            httpx2.post(f"{agent_gateway}/api/approvals/{waiting['id']}/approve", headers=admin).status_code
            == 204
        )
        reply = answer.result(timeout=30)
    assert reply.status_code == 200 and reply.json()["content"] == "slept 0.0"
