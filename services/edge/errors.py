"""Every way the edge refuses a message, mapped to JSON-RPC and HTTP in this one place.

EdgeError                        (JSON-RPC code, HTTP status)
├── ParseError                   -32700, 400   body is not JSON
├── InvalidRequestError          -32600, 400   not a JSON-RPC request the revision allows
├── MethodNotFoundError          -32601, 200   method the gateway does not serve
├── InvalidParamsError           -32602, 200   bad params, unknown tool or prompt
│   └── NestedTooDeepError         -32602, 400   nested deeper than the gateway carries
├── ResourceNotFoundError        -32002, 200   a resource URI no visible server offers
├── InternalError                -32603, 200   a fault of the gateway, never a stack trace
├── DownstreamRpcError           (as sent), 200  a downstream's own JSON-RPC error, passed on
├── ConnectionRequiredError      -32042 or -32001, 200  a per_user_oauth server the caller has not
│                                                   connected: the URL to connect it in the data
├── LimitedError                 -32029, 429   over a rate limit or budget: which, and retryAfter, in the data
├── EnvelopeError                (as the SDK's ladder says), 400  a 2026-07-28 envelope refused
└── TransportError               -32000, 4xx   an HTTP rule broken before JSON-RPC applies
    ├── NotAcceptableError             406   Accept lacks what the answer needs
    ├── UnsupportedMediaTypeError      415   body is not application/json
    ├── ForbiddenOriginError           403   Origin not allowed
    ├── ForbiddenHostError             403   Host not allowed (DNS rebinding)
    ├── UnauthorizedError              401   no credential (where required), or a key or token not good here
    ├── InsufficientScopeError         403   an access token without the scope the request needs
    ├── BodyTooLargeError              413   body over the configured limit
    ├── BadRequestError                400   e.g. missing Mcp-Session-Id, bad protocol version
    ├── SessionNotFoundError           404   unknown, expired or ended session
    ├── EndpointNotFoundError          404   /mcp/{name} names no connected server
    └── EventStreamNotFoundError       404   Last-Event-ID names no stream of the session
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
import orjson

JsonRpcId = str | int | None


class EdgeError(Exception):
    code: int = types.INTERNAL_ERROR
    status: int = 200
    # HTTP headers the refusal goes out with.
    headers: dict[str, str] = {}

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def error_object(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(EdgeError):
    code, status = types.PARSE_ERROR, 400


class InvalidRequestError(EdgeError):
    code, status = types.INVALID_REQUEST, 400


class MethodNotFoundError(EdgeError):
    code = types.METHOD_NOT_FOUND


class InvalidParamsError(EdgeError):
    code = types.INVALID_PARAMS


class NestedTooDeepError(InvalidParamsError):
    status = 400


class ResourceNotFoundError(EdgeError):
    code = -32002


class LimitedError(EdgeError):
    """A call refused by a limit: HTTP 429 with Retry-After where the transport answers it alone."""

    code, status = -32029, 429

    def __init__(self, message: str, data: Any, retry_after: int) -> None:
        super().__init__(message, data)
        self.headers = {"retry-after": str(retry_after)}


class ApprovalRequiredError(EdgeError):
    """A tool that needs a person's approval, called by a client that cannot be asked."""

    code = -32030

    def __init__(self, message: str, server: str, tool: str) -> None:
        super().__init__(message)
        self.server, self.tool = server, tool


class InternalError(EdgeError):
    code = types.INTERNAL_ERROR


class DownstreamRpcError(EdgeError):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message, data)
        self.code = code


class ConnectionRequiredError(EdgeError):
    """-32042 (URL elicitation required) for a 2025-11-25 client that declared URL
    elicitation, else -32001; either way the data names the server and the URL."""

    def __init__(self, code: int, message: str, data: Any) -> None:
        super().__init__(message, data)
        self.code = code


class EnvelopeError(EdgeError):
    """A 2026-07-28 request whose `_meta` envelope or routing headers the ladder refused."""

    status = 400

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message, data)
        self.code = code


class TransportError(EdgeError):
    code, status = -32000, 400


class NotAcceptableError(TransportError):
    status = 406


class UnsupportedMediaTypeError(TransportError):
    status = 415


class ForbiddenOriginError(TransportError):
    status = 403


class ForbiddenHostError(TransportError):
    status = 403


class UnauthorizedError(TransportError):
    status = 401
    headers = {"www-authenticate": 'Bearer realm="mcpgw"'}

    def __init__(self, message: str, data: Any = None, challenge: str | None = None) -> None:
        super().__init__(message, data)
        if challenge is not None:
            # RFC 6750's challenge, with RFC 9728's resource_metadata when OAuth is on.
            self.headers = {"www-authenticate": challenge}


class InsufficientScopeError(UnauthorizedError):
    status = 403


class BodyTooLargeError(TransportError):
    status = 413


class BadRequestError(TransportError):
    status = 400


class SessionNotFoundError(TransportError):
    code, status = -32001, 404


class EndpointNotFoundError(TransportError):
    status = 404


class EventStreamNotFoundError(TransportError):
    status = 404


def error_response(request_id: JsonRpcId, error: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "error": error})


def result_response(request_id: JsonRpcId, result_json: bytes) -> bytes:
    """The envelope around a result that is already JSON, spliced so it is never re-parsed."""
    return b'{"jsonrpc":"2.0","id":' + orjson.dumps(request_id) + b',"result":' + result_json + b"}"
