"""edge: the MCP server side that clients connect to."""
