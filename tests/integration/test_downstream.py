"""The connector's Downstream against real MCP servers (the SDK's) over stdio and Streamable HTTP."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import orjson
import pytest

from services.connector.downstream import Downstream, Inventory, Status
from services.connector.errors import (
    DownstreamRejectedError,
    DownstreamTimeoutError,
    DownstreamUnavailableError,
)
from services.contracts import registry_pb2
from services.up.main import free_port
from tests.processes import ROOT, port_open, python_script, running, wait_until

pytestmark = pytest.mark.anyio

FIXTURE = ROOT / "tests" / "servers" / "fixture_server.py"
CONFORMANCE = ROOT / "tests" / "servers" / "conformance_server.py"


async def call(downstream: Downstream, tool: str, arguments: dict[str, Any] | None, **options: Any) -> Any:
    """`call_tool` with Python values in and out."""
    raw = await downstream.call_tool(
        tool, b"" if arguments is None else orjson.dumps(arguments), None, **options
    )
    result = orjson.loads(raw.json)
    assert raw.is_error == (result.get("isError") is True)
    return result


class Reports:
    """What a Downstream told the registry, waitable."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, list[str]]] = []
        self.inventory = Inventory()
        self.updates: list[tuple[str, str]] = []
        self._changed = anyio.Event()

    def updated(self, server: str, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/resources/updated":
            self.updates.append((server, params["uri"]))
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for_update(self, timeout: float = 10) -> tuple[str, str]:
        with anyio.fail_after(timeout):
            while not self.updates:
                await self._changed.wait()
        return self.updates.pop(0)

    async def __call__(self, status: Status, inventory: Inventory) -> None:
        self.seen.append((status.state, status.error, [t["name"] for t in inventory.tools]))
        if status.state == "connected":
            self.inventory = inventory
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Any, timeout: float = 15) -> tuple[str, str, list[str]]:
        with anyio.fail_after(timeout):
            while True:
                for report in self.seen:
                    if predicate(report):
                        return report
                await self._changed.wait()

    def clear(self) -> None:
        self.seen.clear()


@pytest.fixture
def http_fixture() -> Iterator[str]:
    port = free_port()
    with running(python_script(FIXTURE, "--http", str(port))) as process:
        wait_until(lambda: port_open(port), 15, "fixture server", process)
        yield f"http://127.0.0.1:{port}/mcp"


def stdio_config() -> registry_pb2.ServerConfig:
    config = registry_pb2.ServerConfig(name="fx", connection_type="stdio")
    config.stdio.command = sys.executable
    config.stdio.args.append(str(FIXTURE))
    return config


@pytest.fixture(params=["stdio", "http"])
def config(request: pytest.FixtureRequest) -> registry_pb2.ServerConfig:
    if request.param == "stdio":
        return stdio_config()
    url = request.getfixturevalue("http_fixture")
    return registry_pb2.ServerConfig(name="fx", connection_type="http", connection_string=url)


@contextlib.asynccontextmanager
async def serving(config: registry_pb2.ServerConfig) -> AsyncIterator[tuple[Downstream, Reports]]:
    """A running Downstream for `config`, once it reported itself connected."""
    reports = Reports()
    downstream = Downstream(
        config,
        reports,
        reports.updated,
        call_timeout=10,
        connect_timeout=10,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(downstream.run)
        await reports.wait_for(lambda r: r[0] == "connected")
        yield downstream, reports
        tg.cancel_scope.cancel()


@pytest.fixture
async def connected(config: registry_pb2.ServerConfig) -> AsyncIterator[tuple[Downstream, Reports]]:
    async with serving(config) as both:
        yield both


async def test_connects_reports_tools_and_forwards_raw_results(connected: tuple[Downstream, Reports]) -> None:
    downstream, reports = connected
    _, _, tools = await reports.wait_for(lambda r: r[0] == "connected")
    assert {"echo", "sleep", "crash", "fail", "add_tool"} <= set(tools)
    result = await call(downstream, "echo", {"text": "héllo"})
    assert result["content"] == [{"type": "text", "text": "héllo"}]
    assert result["structuredContent"] == {"result": "héllo"}


async def test_a_tool_failure_is_a_result_not_an_exception(connected: tuple[Downstream, Reports]) -> None:
    downstream, _ = connected
    result = await call(downstream, "fail", {"reason": "disk full"})
    assert result["isError"] is True
    assert "disk full" in result["content"][0]["text"]


async def test_a_hanging_call_times_out_and_the_session_survives(
    connected: tuple[Downstream, Reports],
) -> None:
    downstream, _ = connected
    with anyio.fail_after(5), pytest.raises(DownstreamTimeoutError, match=r"within 0\.3s"):
        await call(downstream, "sleep", {"seconds": 30}, timeout=0.3)
    assert (await call(downstream, "echo", {"text": "still here"}))["content"][0]["text"] == "still here"


async def test_a_list_change_is_refetched_and_reported(connected: tuple[Downstream, Reports]) -> None:
    downstream, reports = connected
    await call(downstream, "add_tool", {"name": "shout"})
    _, _, tools = await reports.wait_for(lambda r: r[0] == "connected" and "shout" in r[2])
    assert "echo" in tools
    assert (await call(downstream, "shout", {"text": "hi"}))["content"][0]["text"] == "shout: hi"


async def test_a_crash_fails_the_call_in_flight_then_reconnects() -> None:
    reports = Reports()
    downstream = Downstream(
        stdio_config(),
        reports,
        reports.updated,
        call_timeout=10,
        connect_timeout=10,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(downstream.run)
        await reports.wait_for(lambda r: r[0] == "connected")
        reports.clear()
        with anyio.fail_after(5), pytest.raises(DownstreamUnavailableError):
            await call(downstream, "crash", None)
        await reports.wait_for(lambda r: r[0] == "disconnected")
        await reports.wait_for(lambda r: r[0] == "connected")
        assert (await call(downstream, "echo", {"text": "back"}))["content"][0]["text"] == "back"
        tg.cancel_scope.cancel()


async def test_calls_to_a_server_that_is_not_connected_fail_at_once() -> None:
    config = registry_pb2.ServerConfig(
        name="gone", connection_type="http", connection_string=f"http://127.0.0.1:{free_port()}/mcp"
    )
    reports = Reports()
    downstream = Downstream(
        config,
        reports,
        reports.updated,
        call_timeout=10,
        connect_timeout=1,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    with pytest.raises(DownstreamUnavailableError, match="not connected"):
        await call(downstream, "echo", {"text": "x"})


@pytest.fixture(params=["stdio", "http"])
async def conformance(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Downstream, Reports]]:
    """The conformance fixture (tools, prompts, resources, templates) behind a Downstream."""
    with contextlib.ExitStack() as stack:
        config = registry_pb2.ServerConfig(name="conf", connection_type=request.param)
        if request.param == "stdio":
            config.stdio.command = sys.executable
            config.stdio.args.append(str(CONFORMANCE))
        else:
            port = free_port()
            process = stack.enter_context(running(python_script(CONFORMANCE, "--http", str(port))))
            wait_until(lambda: port_open(port), 15, "conformance fixture", process)
            config.connection_string = f"http://127.0.0.1:{port}/mcp"
        async with serving(config) as both:
            yield both


async def test_the_inventory_holds_every_list_the_server_announces(
    conformance: tuple[Downstream, Reports],
) -> None:
    _, reports = conformance
    inventory = reports.inventory
    assert {"tools", "prompts", "resources", "completions", "logging"} <= set(inventory.capabilities)
    assert "json_schema_2020_12_tool" in [t["name"] for t in inventory.tools]
    schema = next(t for t in inventory.tools if t["name"] == "json_schema_2020_12_tool")["inputSchema"]
    assert schema["$schema"].endswith("2020-12/schema") and "$defs" in schema
    assert [p["name"] for p in inventory.prompts][:2] == ["test_simple_prompt", "test_prompt_with_arguments"]
    assert "test://static-binary" in [r["uri"] for r in inventory.resources]
    assert [t["uriTemplate"] for t in inventory.resource_templates] == ["test://template/{id}/data"]


async def test_other_requests_are_forwarded_verbatim(conformance: tuple[Downstream, Reports]) -> None:
    downstream, _ = conformance
    read = orjson.loads(await downstream.request("resources/read", b'{"uri":"test://template/7/data"}'))
    assert orjson.loads(read["contents"][0]["text"]) == {
        "id": "7",
        "templateTest": True,
        "data": "Data for ID: 7",
    }
    prompt = orjson.loads(
        await downstream.request(
            "prompts/get", b'{"name":"test_prompt_with_arguments","arguments":{"arg1":"a","arg2":"b"}}'
        )
    )
    assert prompt["messages"][0]["content"]["text"] == "Prompt with arguments: arg1='a', arg2='b'"
    with pytest.raises(DownstreamRejectedError, match="Resource not found"):
        await downstream.request("resources/read", b'{"uri":"test://nowhere"}')


async def touch(downstream: Downstream, uri: str) -> str:
    return str((await call(downstream, "touch_resource", {"uri": uri}))["content"][0]["text"])


async def test_subscriptions_are_counted_and_updates_reported(
    conformance: tuple[Downstream, Reports],
) -> None:
    downstream, reports = conformance
    uri = b'{"uri":"test://watched-resource"}'
    watched = "test://watched-resource"
    # Two clients subscribe; the downstream hears of the first only, and of the last unsubscribe.
    for _ in range(2):
        assert orjson.loads(await downstream.request("resources/subscribe", uri)) == {}
    assert await touch(downstream, watched) == f"notified {watched}"
    assert await reports.wait_for_update() == ("conf", watched)
    await downstream.request("resources/unsubscribe", uri)
    assert await touch(downstream, watched) == f"notified {watched}"
    assert await reports.wait_for_update() == ("conf", watched)
    await downstream.request("resources/unsubscribe", uri)
    assert await touch(downstream, watched) == f"nobody subscribed to {watched}"
    # An unsubscribe without a subscription does not drive the count below zero.
    await downstream.request("resources/unsubscribe", uri)
    await downstream.request("resources/subscribe", uri)
    assert await touch(downstream, watched) == f"notified {watched}"
