"""Errors the connector raises for a downstream server:

DownstreamError
├── DownstreamUnavailableError   the connection closed mid-call
│   ├── NotConnectedError        this connector holds no session with it: nothing was sent
│   └── MissingCredentialsError  a per_user server, and the caller's key has no credentials for it
│       └── NeedsConnectionError   a per_user_oauth server the caller's identity has not connected
├── DownstreamTimeoutError       no answer within the call's timeout
├── DownstreamProtocolError      the downstream answered something that is not MCP (invalid JSON,
│                                an HTTP error without a JSON-RPC body, a response without a result)
├── DownstreamRejectedError      the downstream answered with a JSON-RPC error
└── ConnectorFaultError          the connector itself failed on the call (a bug): named, never a hang
"""

from __future__ import annotations

import mcp_types as types


class DownstreamError(Exception):
    def __init__(self, server: str, message: str) -> None:
        super().__init__(message)
        self.server = server


class DownstreamUnavailableError(DownstreamError):
    pass


class NotConnectedError(DownstreamUnavailableError):
    pass


class MissingCredentialsError(DownstreamUnavailableError):
    pass


class NeedsConnectionError(MissingCredentialsError):
    pass


class DownstreamTimeoutError(DownstreamError):
    pass


class DownstreamProtocolError(DownstreamError):
    pass


class ConnectorFaultError(DownstreamError):
    pass


class DownstreamRejectedError(DownstreamError):
    def __init__(self, server: str, error: types.ErrorData) -> None:
        super().__init__(server, error.message)
        self.error = error
