"""Opening the byte stream to a downstream server: stdio, Streamable HTTP or legacy SSE.

This is the pluggable seam: everything above it speaks JSON-RPC over the
`(read, write)` pair the `mcp` SDK transports yield. Values written `env.NAME` are
resolved here, at connect time, and never stored resolved.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TextIO

import anyio
import httpx2
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from services.connector.forwarding import HttpEndpoint
from services.connector.http import AiohttpTransport, client_session
from services.connector.oauth import BearerAuth, TokenSource
from services.contracts import registry_pb2
from services.references import resolve

# Keep-alive connections to one server, shared by its calls and the SDK session.
CONNECTIONS_PER_SERVER = 100

# What stdio servers write to stderr, one record per line, under the server's name.
child_log = logging.getLogger("services.connector.stderr")


def stdio_parameters(config: registry_pb2.StdioConfig) -> StdioServerParameters:
    """The child gets the SDK's safe minimum plus exactly what its config names."""
    env = {name: os.environ[name] for name in config.inherit_env if name in os.environ}
    env.update({name: resolve(value) for name, value in config.env.items()})
    return StdioServerParameters(
        command=config.command, args=list(config.args), env=env, cwd=config.cwd or None
    )


@contextmanager
def stderr_to_log(server: str) -> Iterator[TextIO]:
    """A file for a child's stderr whose lines go to the connector's log, named by server."""
    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "w")

    def pump() -> None:
        # A thread: the child writes whenever it likes, and a blocking read costs no loop time.
        with os.fdopen(read_fd, errors="replace") as reader:
            for line in reader:
                child_log.info("%s: %s", server, line.rstrip())

    threading.Thread(target=pump, name=f"stderr-{server}", daemon=True).start()
    try:
        yield writer
    finally:
        writer.close()


Transport = tuple[Any, Any, HttpEndpoint | None]
"""(read, write) of the SDK transport, and the HTTP endpoint when calls can go straight to it."""


@asynccontextmanager
async def open_transport(
    config: registry_pb2.ServerConfig, connect_timeout: float, credentials: TokenSource | None = None
) -> AsyncIterator[Transport]:
    """The server's transport; `credentials` are its bearer tokens when they are not the
    config's own (an identity's, for a per_user_oauth server)."""
    if config.connection_type == "stdio":
        with stderr_to_log(config.name) as errlog:
            async with stdio_client(stdio_parameters(config.stdio), errlog=errlog) as (read, write):
                yield read, write, None
        return
    url = resolve(config.connection_string)
    headers = {name: resolve(value) for name, value in config.headers.items()}
    if credentials is None and config.HasField("oauth"):
        credentials = TokenSource(config.name, config.oauth)
    auth = None if credentials is None else BearerAuth(credentials)
    if config.connection_type not in ("http", "sse"):
        raise ValueError(f"unknown connection_type {config.connection_type!r}")
    http = client_session(connect_timeout, CONNECTIONS_PER_SERVER)
    try:

        def client(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            # The SDK's httpx2 client, on the same connections as the forwarder.
            return httpx2.AsyncClient(
                headers=headers, timeout=timeout, auth=auth, transport=AiohttpTransport(http)
            )

        if config.connection_type == "sse":
            async with sse_client(
                url, headers=headers, timeout=connect_timeout, auth=auth, httpx_client_factory=client
            ) as (read, write):
                yield read, write, None
            return
        endpoint = HttpEndpoint(url, headers, http, credentials=credentials)

        async def learn_session(response: httpx2.Response) -> None:
            if session_id := response.headers.get("mcp-session-id"):
                endpoint.session_id = session_id

        # Reads wait as long as a tool may run; the call timeout above bounds them.
        sdk_client = client(headers, httpx2.Timeout(connect_timeout, read=None), auth)
        sdk_client.event_hooks["response"].append(learn_session)
        async with sdk_client, streamable_http_client(url, http_client=sdk_client) as (read, write):
            yield read, write, endpoint
    finally:
        # Shielded: this runs while the connection is being cancelled, and unclosed
        # keep-alive sockets would hold the downstream's graceful shutdown open.
        with anyio.CancelScope(shield=True):
            await http.close()
