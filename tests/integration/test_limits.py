"""Rate limits and budgets over two edges sharing one NATS: a key's N calls per window are
exactly N across both edges, then refused with a correct retryAfter (HTTP 429 and
Retry-After), then allowed again in the next window; a $0.05 budget buys five $0.01 calls;
per-tool limits of a key and of a server; a limit set through the API holds on both edges
within a second; and every refusal is in the audit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest

from services.windows import Window
from tests.integration.test_gateway_http import ACCEPT
from tests.processes import ROOT, service_tree, stdio_server, wait_until

ADMIN = "admin-token-for-limit-tests"


def readme_config() -> dict[str, Any]:
    """The Bifrost config the README's Config reference shows."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Config reference") :]
    return json.loads(section[section.index("```json") + len("```json") : section.index("```\n\n")])  # type: ignore[no-any-return]


README_KEY = readme_config()["governance"]["virtual_keys"][0]
SELECTION = [
    {"mcp_client_name": "fixture", "tools_to_execute": ["*"]},
    {"mcp_client_name": "slow", "tools_to_execute": ["*"]},
]
WINDOW = "3s"
KEYS = {
    "rate": "sk-rate-limited-0123456789abcdef",
    "budget": "sk-budgeted-key-0123456789abcdef",
    "tool": "sk-tool-limited-0123456789abcdef",
    "live": "sk-live-changed-0123456789abcdef",
    "free": "sk-unlimited-00-0123456789abcdef",
}
CONFIG = {
    "governance": {
        "virtual_keys": [
            {"id": "vk-rate", "name": "rate", "value": KEYS["rate"], "mcp_configs": SELECTION,
             "rate_limit": {"request_max_limit": 7, "request_reset_duration": WINDOW}},
            {"id": "vk-budget", "name": "budget", "value": KEYS["budget"], "mcp_configs": SELECTION,
             "budget": {"max_limit": 0.05, "reset_duration": "1h"}},
            {"id": "vk-tool", "name": "tool", "value": KEYS["tool"], "mcp_configs": SELECTION,
             "tool_rate_limits": {"fixture_count": {"request_max_limit": 2, "request_reset_duration": "1h"}}},
            {"id": "vk-live", "name": "live", "value": KEYS["live"], "mcp_configs": SELECTION},
            {"id": "vk-free", "name": "free", "value": KEYS["free"], "mcp_configs": SELECTION},
            {**README_KEY, "mcp_configs": SELECTION},
        ]
    }
}  # fmt: skip
SERVER = {
    **stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py"),
    "tool_pricing": {"echo": 0.01},
    "tool_rate_limits": {"weather": {"request_max_limit": 3, "request_reset_duration": "1h"}},
}

# Two calls at once, two more waiting up to a second.
SLOW = {
    **stdio_server("slow", ROOT / "tests" / "servers" / "fixture_server.py"),
    "max_concurrency": 2,
    "max_queue": 2,
    "queue_timeout": "1s",
}


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("limits")
    env = {"MCPGW_ADMIN_TOKEN": ADMIN}
    with service_tree(tmp, [SERVER, SLOW], edges=2, env=env, config=CONFIG) as (one, two):
        yield one, two


class Client:
    """One key's session, sent to either edge."""

    def __init__(self, edges: tuple[str, str], key: str) -> None:
        self.edges = edges
        self.headers = {"accept": ACCEPT, "content-type": "application/json", "x-api-key": key}
        hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "limits"}}
        answer = self.post(0, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello})
        self.headers["mcp-session-id"] = answer.headers["mcp-session-id"]
        self.ids = iter(range(1, 10**6))

    def post(self, edge: int, body: dict[str, Any]) -> httpx2.Response:
        response = httpx2.post(f"{self.edges[edge]}/mcp", json=body, headers=self.headers, timeout=30)
        assert response.status_code != 500, response.text
        return response

    def call(self, edge: int, tool: str, arguments: dict[str, Any]) -> httpx2.Response:
        params = {"name": tool, "arguments": arguments}
        return self.post(
            edge, {"jsonrpc": "2.0", "id": next(self.ids), "method": "tools/call", "params": params}
        )


def ok(response: httpx2.Response) -> bool:
    body = response.json()
    return response.status_code == 200 and "result" in body and not body["result"].get("isError")


def refused(response: httpx2.Response, limit: str) -> dict[str, Any]:
    """The refusal's data, after checking it is the JSON-RPC error a client can act on."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == -32029 and error["data"]["limit"] == limit, error
    assert response.headers["retry-after"] == str(error["data"]["retryAfter"])
    return error["data"]  # type: ignore[no-any-return]


def admin(base: str, method: str, path: str, body: Any = None) -> httpx2.Response:
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx2.request(method, f"{base}/api{path}", json=body, headers=headers, timeout=10)


def test_a_key_gets_exactly_its_calls_per_window_across_both_edges(edges: tuple[str, str]) -> None:
    client = Client(edges, KEYS["rate"])
    window = Window.parse(WINDOW)
    # Start at the beginning of a window, so the burst below falls in one.
    _, ends = window.bounds(time.time())
    time.sleep(max(0.0, ends - time.time()))
    started, _ = window.bounds(time.time())
    answers = [client.call(turn % 2, "fixture_echo", {"text": str(turn)}) for turn in range(12)]
    assert window.bounds(time.time())[0] == started, "the burst crossed a window: the machine is too slow"
    assert sum(ok(a) for a in answers) == 7
    assert all(ok(a) for a in answers[:7])
    data = [refused(a, "key") for a in answers[7:]]
    retry = max(d["retryAfter"] for d in data)
    assert 1 <= retry <= 3 and data[0]["max"] == "7 calls per 3s" and data[0]["scope"] == "key 'rate'"
    # Refused until the window ends; allowed again after, on either edge.
    deadline = time.time() + retry
    wait_until(lambda: ok(client.call(0, "fixture_echo", {"text": "again"})), retry + 2, "the next window")
    assert time.time() >= window.bounds(deadline - retry)[1] - 0.05
    assert ok(client.call(1, "fixture_echo", {"text": "and on the other edge"}))


def test_a_budget_of_five_cents_buys_five_one_cent_calls(edges: tuple[str, str]) -> None:
    client = Client(edges, KEYS["budget"])
    answers = [client.call(turn % 2, "fixture_echo", {"text": str(turn)}) for turn in range(8)]
    assert [ok(a) for a in answers] == [True] * 5 + [False] * 3
    data = refused(answers[5], "budget")
    assert data["max"] == "0.05 per 1h" and data["scope"] == "the budget of key 'budget'"
    # A tool with no price costs nothing of it.
    assert ok(client.call(0, "fixture_count", {"to": 1}))

    def usage() -> list[dict[str, Any]]:
        return admin(edges[1], "GET", "/keys/vk-budget").json()["usage"]  # type: ignore[no-any-return]

    # What both edges spent, once each has told (within a second).
    wait_until(lambda: usage()[0]["used"] == 0.05, 5, "the budget's usage")
    assert usage() == [
        {"limit": "budget", "tool": None, "used": 0.05, "max": 0.05, "reset_duration": "1h",
         "resets_at": usage()[0]["resets_at"]}
    ]  # fmt: skip


def test_per_tool_limits_of_a_key_and_of_a_server(edges: tuple[str, str]) -> None:
    tooly = Client(edges, KEYS["tool"])
    counted = [tooly.call(turn % 2, "fixture_count", {"to": 1}) for turn in range(3)]
    assert [ok(a) for a in counted] == [True, True, False]
    assert refused(counted[2], "key_tool")["scope"] == "key 'tool' on fixture_count"
    assert ok(tooly.call(0, "fixture_echo", {"text": "other tools are not limited"}))
    # The server's limit on weather is shared by every key.
    free = Client(edges, KEYS["free"])
    weather = [
        c.call(turn % 2, "fixture_weather", {"region": "eu"}) for turn, c in enumerate([tooly, free] * 2)
    ]
    assert [ok(a) for a in weather] == [True, True, True, False]
    assert refused(weather[3], "server_tool")["scope"] == "server 'fixture' on weather"


def test_a_limit_set_through_the_api_holds_on_both_edges_within_a_second(edges: tuple[str, str]) -> None:
    client = Client(edges, KEYS["live"])
    assert all(ok(client.call(turn % 2, "fixture_echo", {"text": "free"})) for turn in range(4))
    limit = {"request_max_limit": 1, "request_reset_duration": "1h"}
    changed = admin(edges[0], "PATCH", "/keys/vk-live", {"rate_limit": limit})
    assert changed.status_code == 200 and changed.json()["rate_limit"] == limit
    started = time.monotonic()
    allowed = 0
    for edge in (0, 1):
        while True:
            answer = client.call(edge, "fixture_echo", {"text": "limited"})
            if answer.status_code == 429:
                break
            allowed += ok(answer)
            assert time.monotonic() - started < 1.0, f"edge {edge} still allows calls after a second"
    # One call at most between both edges: the new limit's only call this window.
    assert allowed <= 1
    assert admin(edges[0], "PATCH", "/keys/vk-live", {"rate_limit": None}).json()["rate_limit"] is None
    wait_until(lambda: ok(client.call(1, "fixture_echo", {"text": "free again"})), 5, "the limit lifted")


def test_refusals_are_audited_naming_the_limit(edges: tuple[str, str]) -> None:
    Client(edges, KEYS["budget"]).call(1, "fixture_echo", {"text": "over budget"})

    def limited() -> list[dict[str, Any]]:
        records = admin(edges[0], "GET", "/audit?key=vk-budget&outcome=error&limit=50").json()["records"]
        return [r for r in records if r["name"] == "fixture_echo" and "over its budget" in r["error_message"]]

    wait_until(lambda: bool(limited()), 10, "the refusal's audit record")
    assert {r["key_id"] for r in limited()} == {"vk-budget"}


def test_limits_in_a_bad_shape_are_refused_naming_the_field(edges: tuple[str, str]) -> None:
    bad = admin(
        edges[0],
        "PATCH",
        "/keys/vk-free",
        {"rate_limit": {"request_max_limit": 5, "request_reset_duration": "5 fortnights"}},
    )
    assert bad.status_code == 422 and "reset_duration" in bad.text


async def held(edges: tuple[str, str], calls: int, seconds: float) -> list[dict[str, Any]]:
    """`calls` calls of the slow server's hold at once, alternating edges: their answers."""
    client = Client(edges, KEYS["free"])
    answers: list[dict[str, Any]] = []

    async def one(turn: int) -> None:
        params = {"name": "slow_hold", "arguments": {"seconds": seconds}}
        body = {"jsonrpc": "2.0", "id": turn, "method": "tools/call", "params": params}
        async with httpx2.AsyncClient(timeout=30) as http:
            answer = await http.post(f"{edges[turn % 2]}/mcp", json=body, headers=client.headers)
        answers.append(answer.json())

    async with anyio.create_task_group() as tg:
        for turn in range(calls):
            tg.start_soon(one, turn)
    return answers


@pytest.mark.anyio
async def test_a_server_bulkhead_holds_across_both_edges_and_queued_calls_run_as_slots_free(
    edges: tuple[str, str],
) -> None:
    answers = await held(edges, 4, 0.5)
    texts = sorted(a["result"]["content"][0]["text"] for a in answers)
    # The two waiting ran once the first two finished; the downstream never saw three.
    assert texts == ["most in flight: 2"] * 4, answers


@pytest.mark.anyio
async def test_calls_beyond_the_queue_or_waiting_too_long_are_refused_clearly(edges: tuple[str, str]) -> None:
    answers = await held(edges, 5, 1.6)
    results = [a for a in answers if "result" in a]
    errors = [a["error"] for a in answers if "error" in a]
    assert [r["result"]["content"][0]["text"] for r in results] == ["most in flight: 2"] * 2
    assert len(errors) == 3 and all(
        e["code"] == -32029 and e["data"]["limit"] == "concurrency" for e in errors
    )
    messages = sorted(e["message"] for e in errors)
    # One found the queue full at once; two waited their second and gave up.
    assert sum("2 waiting, its most" in m for m in messages) == 1, messages
    assert sum("no free slot of its 2 within 1s" in m for m in messages) == 2, messages


def test_refusals_are_counted_in_the_metrics(edges: tuple[str, str]) -> None:
    client = Client(edges, KEYS["budget"])
    assert client.call(0, "fixture_echo", {"text": "still over budget"}).status_code == 429
    scraped = httpx2.get(f"{edges[0]}/metrics", timeout=10).text
    counted = [line for line in scraped.splitlines() if line.startswith("mcpgw_calls_limited_total{")]
    budget = [line for line in counted if 'mcpgw_virtual_key_id="vk-budget"' in line]
    assert budget and float(budget[0].rsplit(" ", 1)[1]) >= 1, counted


def mcpgw(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "services.cli", *args, "--url", base, "--admin-token", ADMIN]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def start_with_room(window: Window, seconds: float) -> None:
    """Wait out the window's end when fewer than `seconds` remain: what a test counts must
    land in one window (a usage shown just after the window rolled over reads 0)."""
    left = window.bounds(time.time())[1] - time.time()
    if left < seconds:
        time.sleep(left)


def test_the_cli_sets_limits_and_shows_their_usage(edges: tuple[str, str]) -> None:
    created = mcpgw(
        edges[0], "keys", "create", "cli-limited", "--tools", "fixture:*", "--rate-limit", "50/1h",
        "--budget", "2.5/1M", "--tool-rate-limit", "fixture_count=3/1h", "--max-concurrency", "4", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["rate_limit"] == {"request_max_limit": 50, "request_reset_duration": "1h"}
    assert key["budget"] == {"max_limit": 2.5, "reset_duration": "1M", "calendar_aligned": False}
    assert key["tool_rate_limits"] == {
        "fixture_count": {"request_max_limit": 3, "request_reset_duration": "1h"}
    }
    assert key["max_concurrency"] == 4
    client = Client(edges, key["secret"])
    start_with_room(Window.parse("1h"), 30)
    assert ok(client.call(1, "fixture_count", {"to": 1})) and ok(
        client.call(0, "fixture_echo", {"text": "x"})
    )
    wanted = {("key", None): (2, 50), ("key_tool", "fixture_count"): (1, 3), ("budget", None): (0.01, 2.5)}

    def usage() -> dict[tuple[str, str | None], tuple[float, float]]:
        shown = mcpgw(edges[1], "keys", "show", key["id"], "--json")
        assert shown.returncode == 0, shown.stderr
        return {(u["limit"], u["tool"]): (u["used"], u["max"]) for u in json.loads(shown.stdout)["usage"]}

    # Each edge tells what it spent within a second; each look is a CLI process of its own,
    # slow on a loaded machine, so the wait is for several looks, and names the last.
    seen: list[object] = []

    def spent() -> bool:
        seen[:] = [usage()]
        return seen[0] == wanted

    try:
        wait_until(spent, 20, "the usage")
    except AssertionError as exc:
        raise AssertionError(f"usage {seen} never became {wanted}") from exc
    lifted = mcpgw(edges[0], "keys", "update", key["id"], "--rate-limit", "none", "--json")
    assert lifted.returncode == 0 and json.loads(lifted.stdout)["rate_limit"] is None
    bad = mcpgw(edges[0], "keys", "update", key["id"], "--budget", "lots")
    assert bad.returncode != 0 and "AMOUNT/WINDOW" in bad.stderr


def test_the_readme_config_loads_and_is_enforced(edges: tuple[str, str]) -> None:
    assert README_KEY["rate_limit"] == {"request_max_limit": 100, "request_reset_duration": "1m"}
    client = Client(edges, README_KEY["value"])
    start_with_room(Window.parse("1m"), 5)
    answers = [client.call(turn % 2, "fixture_echo", {"text": str(turn)}) for turn in range(101)]
    assert sum(ok(a) for a in answers) == 100
    assert refused(answers[100], "key")["max"] == "100 calls per 1m"

    def budget() -> dict[str, Any]:
        usage = admin(edges[0], "GET", "/keys/vk-research").json()["usage"]
        return next(u for u in usage if u["limit"] == "budget")

    wait_until(lambda: budget()["used"] == 1.0, 5, "100 calls at $0.01 charged to the budget")
    spent = budget()
    assert spent["max"] == 10.0 and spent["reset_duration"] == "1M"
    # Calendar-aligned: the budget resets on the 1st of next month, midnight UTC.
    assert spent["resets_at"].endswith("-01T00:00:00+00:00")


def test_a_group_limit_is_shared_by_every_key_holding_the_group(edges: tuple[str, str]) -> None:
    group = {
        "name": "limited-group",
        "tools": [{"mcp_client_name": "fixture", "tools_to_execute": ["environment"]}],
        "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1h"},
    }
    created = admin(edges[0], "POST", "/groups", group)
    assert created.status_code == 201 and created.json()["rate_limit"] == group["rate_limit"], created.text
    secrets = []
    for name in ("member-one", "member-two"):
        key = admin(edges[1], "POST", "/keys", {"name": name, "groups": ["limited-group"]})
        assert key.status_code == 201, key.text
        secrets.append(key.json()["secret"])
    clients = [Client(edges, secret) for secret in secrets]

    def call(turn: int) -> httpx2.Response:
        return clients[turn % 2].call(turn % 2, "fixture_environment", {})

    # Both keys see the group's tool on /mcp: 3 calls between them, then refusals.
    wait_until(lambda: ok(call(0)), 5, "the group's keys on both edges")
    answers = [call(turn) for turn in range(1, 4)]
    assert [ok(a) for a in answers] == [True, True, False]
    assert refused(answers[2], "group")["scope"] == "group 'limited-group'"
    bad = admin(edges[0], "PUT", "/groups/limited-group", {**group, "rate_limit": {"request_max_limit": 0}})
    assert bad.status_code == 422
