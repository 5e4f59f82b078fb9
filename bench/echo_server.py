"""The bench's downstream: an `echo` tool, served over stateless Streamable HTTP (JSON) or stdio.

With `--tools N` it also serves N small extra tools (for the tools/list measurement).
"""

from __future__ import annotations

import argparse

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer


def build(name: str, extra_tools: int) -> MCPServer:
    server = MCPServer(name, log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return `text` unchanged."""
        return text

    for index in range(extra_tools):

        def constant(value: int = index) -> int:
            return value

        server.add_tool(
            constant, name=f"tool_{index:04d}", description=f"Returns {index}: one of many tools."
        )
    return server


async def serve_http(server: MCPServer, host: str, port: int) -> None:
    app = server.streamable_http_app(json_response=True, stateless_http=True, host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="echo")
    parser.add_argument("--stdio", action="store_true", help="serve over stdio instead of HTTP")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8940)
    parser.add_argument("--tools", type=int, default=0, help="extra tools to serve")
    args = parser.parse_args()
    server = build(args.name, args.tools)
    if args.stdio:
        server.run("stdio")
    else:
        anyio.run(serve_http, server, args.host, args.port)


if __name__ == "__main__":
    main()
