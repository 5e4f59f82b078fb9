"""A small MCP server over Streamable HTTP: arithmetic and time (the demo's HTTP downstream)."""

from __future__ import annotations

import argparse
import datetime

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("clock", instructions="Arithmetic and the time.", log_level="WARNING")


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def utc_now() -> str:
    """The current UTC time in ISO 8601."""
    return datetime.datetime.now(datetime.UTC).isoformat()


@server.tool()
async def countdown(steps: int, ctx: Context) -> str:
    """Count down from `steps`, reporting progress at each step."""
    for done in range(1, steps + 1):
        await ctx.report_progress(done, steps, f"step {done} of {steps}")
        await anyio.sleep(0.01)
    return f"counted down from {steps}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server.run("streamable-http", host=args.host, port=args.port)
