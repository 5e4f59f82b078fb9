"""A downstream for tests: echo, slow calls, progress, a crash, and tools added at run time."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Annotated

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

server = MCPServer("fixture", instructions="Echo things back; count with progress.", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def sleep(seconds: float) -> str:
    """Answer after `seconds`."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


IN_FLIGHT = {"now": 0, "most": 0}


@server.tool()
async def hold(seconds: float) -> str:
    """Answer after `seconds`, saying how many calls of this tool ran at once, at most, so far."""
    IN_FLIGHT["now"] += 1
    IN_FLIGHT["most"] = max(IN_FLIGHT["most"], IN_FLIGHT["now"])
    try:
        await anyio.sleep(seconds)
    finally:
        IN_FLIGHT["now"] -= 1
    return f"most in flight: {IN_FLIGHT['most']}"


@server.tool()
async def count(to: int, ctx: Context) -> str:
    """Count to `to`, reporting each step as progress."""
    for step in range(1, to + 1):
        await ctx.report_progress(step, to)
    return f"counted to {to}"


@server.tool()
def weather(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
    """The weather of a region, which 2026-07-28 clients also send as the Mcp-Param-Region header."""
    return f"sunny in {region}"


@server.tool()
async def wait_for_cancel(marker: str) -> str:
    """Write `marker`.started, wait until the call is cancelled, then write `marker`."""
    with open(f"{marker}.started", "w") as started:  # noqa: ASYNC230 (a tiny file, before any wait)
        started.write("waiting")
    try:
        await anyio.sleep_forever()
    finally:
        # Blocking on purpose: nothing may be awaited in a cancelled task, and it is a tiny file.
        with open(marker, "w") as written:  # noqa: ASYNC230
            written.write("cancelled")
    return "never"


@server.tool()
def trace_context(ctx: Context) -> dict[str, str | None]:
    """The W3C trace context this call arrived with: in `_meta`, and over HTTP in the header."""
    meta = (ctx.request_context.params or {}).get("_meta") or {}
    headers = ctx.headers or {}
    return {
        "meta_traceparent": meta.get("traceparent"),
        "meta_tracestate": meta.get("tracestate"),
        "header_traceparent": headers.get("traceparent"),
    }


@server.tool()
def environment() -> list[str]:
    """The names of the environment variables this process was started with."""
    return sorted(os.environ)


@server.tool()
def environment_value(name: str) -> str:
    """The value of one environment variable of this process ("" when it is not set)."""
    return os.environ.get(name, "")


@server.tool()
def to_stderr(text: str) -> str:
    """Write `text` to stderr (where a gateway should log it under this server's name)."""
    print(text, file=sys.stderr, flush=True)
    return "written"


@server.tool()
def crash() -> str:
    """Exit the server process in the middle of the call."""
    os._exit(3)


@server.tool()
def fail(reason: str) -> str:
    """Fail the way a tool anticipates failing: an isError result carrying `reason`."""
    raise ToolError(reason)


@server.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Register a new echo-like tool `name` and tell the client the list changed."""

    def added(text: str) -> str:
        return f"{name}: {text}"

    server.add_tool(added, name=name, description=f"Added at run time as {name}.")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


if __name__ == "__main__":
    # While the file FIXTURE_GATE names exists the server cannot start: a downstream that is
    # down for a while, for lifecycle tests.
    gate = os.environ.get("FIXTURE_GATE")
    if gate and os.path.exists(gate):
        raise SystemExit(f"fixture: gate {gate} is closed")
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--http", type=int, default=0, help="serve Streamable HTTP on this port instead of stdio"
    )
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", port=args.http)
    else:
        server.run()
