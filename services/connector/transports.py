"""Opening the byte stream to a downstream server: stdio, Streamable HTTP or legacy SSE.

This is the pluggable seam: everything above it speaks JSON-RPC over the
`(read, write)` pair the `mcp` SDK transports yield. Values written `env.NAME` are
resolved here, at connect time, and never stored resolved.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from services.connector.forwarding import HttpEndpoint
from services.contracts import registry_pb2

ENV_PREFIX = "env."


class MissingSecretError(LookupError):
    """A config value references an environment variable the connector does not have."""


def resolve(value: str) -> str:
    """`env.NAME` becomes the value of NAME in the connector's environment."""
    if not value.startswith(ENV_PREFIX):
        return value
    name = value[len(ENV_PREFIX) :]
    resolved = os.environ.get(name)
    if resolved is None:
        raise MissingSecretError(f"environment variable {name} is not set")
    return resolved


def stdio_parameters(config: registry_pb2.StdioConfig) -> StdioServerParameters:
    """The child gets the SDK's safe minimum plus exactly what its config names."""
    env = {name: os.environ[name] for name in config.inherit_env if name in os.environ}
    env.update({name: resolve(value) for name, value in config.env.items()})
    return StdioServerParameters(
        command=config.command, args=list(config.args), env=env, cwd=config.cwd or None
    )


Transport = tuple[Any, Any, HttpEndpoint | None]
"""(read, write) of the SDK transport, and the HTTP endpoint when calls can go straight to it."""


@asynccontextmanager
async def open_transport(
    config: registry_pb2.ServerConfig, connect_timeout: float
) -> AsyncIterator[Transport]:
    if config.connection_type == "stdio":
        async with stdio_client(stdio_parameters(config.stdio), errlog=sys.stderr) as (read, write):
            yield read, write, None
        return
    url = resolve(config.connection_string)
    headers = {name: resolve(value) for name, value in config.headers.items()}
    if config.connection_type == "http":
        endpoint = HttpEndpoint(url, headers)

        async def learn_session(response: httpx2.Response) -> None:
            if session_id := response.headers.get("mcp-session-id"):
                endpoint.session_id = session_id

        # Reads wait as long as a tool may run; the call timeout above bounds them.
        timeout = httpx2.Timeout(connect_timeout, read=None)
        async with (
            httpx2.AsyncClient(
                headers=headers, timeout=timeout, event_hooks={"response": [learn_session]}
            ) as client,
            streamable_http_client(url, http_client=client) as (read, write),
        ):
            yield read, write, endpoint
        return
    if config.connection_type == "sse":
        async with sse_client(url, headers=headers, timeout=connect_timeout) as (read, write):
            yield read, write, None
        return
    raise ValueError(f"unknown connection_type {config.connection_type!r}")
