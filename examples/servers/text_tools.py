"""A small MCP server over stdio: text tools (the demo's stdio downstream)."""

from __future__ import annotations

import re

from mcp.server.mcpserver import MCPServer

server = MCPServer("text", instructions="Text utilities.")


@server.tool()
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


@server.tool()
def reverse(text: str) -> str:
    """Reverse a text, character by character."""
    return text[::-1]


@server.tool()
def slugify(text: str) -> str:
    """Turn a title into a URL slug."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


if __name__ == "__main__":
    server.run()
