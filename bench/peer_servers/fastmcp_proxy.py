"""FastMCP's proxy with its defaults, in front of one Streamable HTTP server (runs in its own venv).

python fastmcp_proxy.py URL PORT
"""

import sys

from fastmcp.server import create_proxy  # type: ignore[import-not-found]  # the peer venv has it

if __name__ == "__main__":
    url, port = sys.argv[1], int(sys.argv[2])
    create_proxy(url, name="fastmcp-proxy").run(
        transport="http", host="127.0.0.1", port=port, show_banner=False, log_level="WARNING"
    )
