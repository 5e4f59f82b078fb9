"""What a request's credentials mean under the gateway's `mcp_server_auth_mode`: a virtual
key in a header, an access token this gateway issued (verified here, no round trip), or
nothing, which earns the OAuth challenge that starts a client's sign-in."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from services.contracts import registry_pb2
from services.edge.errors import InsufficientScopeError, UnauthorizedError
from services.edge.identity.provider import SCOPES, usable_key
from services.edge.identity.tokens import AccessTokens, InvalidTokenError, looks_like_jwt
from services.edge.policy import BEARER, Governance, KeyPolicy, presented_key

PROTECTED_RESOURCE = "/.well-known/oauth-protected-resource"


def resource_path(path: str) -> str:
    """The MCP endpoint a request path belongs to: /mcp, /mcp/{name} or /sse (with /message)."""
    if path.startswith("/mcp"):
        return path.rstrip("/") or "/mcp"
    return "/sse"


def base_url(request: Request, public_url: str) -> str:
    """Where clients reach the gateway: the configured public URL, else the scheme and Host
    this request came by (the Host already passed the allowlist)."""
    return base_of(request.scope.get("scheme", "http"), request.headers.get("host") or "", public_url)


def base_of(scheme: str, host: str, public_url: str) -> str:
    if public_url:
        return public_url.rstrip("/")
    return f"{scheme}://{host or 'localhost'}"


class Credentials:
    """Headers-only without OAuth state (tests, and `mcp_server_auth_mode` headers)."""

    def __init__(
        self,
        tokens: AccessTokens | None = None,
        revoked: Callable[[str], bool] = lambda _: False,
        public_url: str = "",
    ) -> None:
        self._tokens = tokens
        # Whether a grant (by id) was revoked, on any edge.
        self._revoked = revoked
        self._public_url = public_url

    def key_of(self, governance: Governance, request: Request) -> KeyPolicy | None:
        """The key whose policy the request acts under (None: no key where none is needed);
        UnauthorizedError (401) or InsufficientScopeError (403) with the challenge otherwise."""
        presented = presented_key(request.headers)
        mode = governance.auth_mode
        if mode == registry_pb2.AUTH_MODE_HEADERS or self._tokens is None:
            return governance.authenticate(presented)
        base = base_url(request, self._public_url)
        path = resource_path(request.url.path)
        challenge = f'Bearer resource_metadata="{base}{PROTECTED_RESOURCE}{path}", scope="{" ".join(SCOPES)}"'
        if presented is None:
            raise UnauthorizedError(
                "Unauthorized: sign in with OAuth, or send a virtual key", challenge=challenge
            )
        authorization = request.headers.get("authorization", "")
        if authorization[: len(BEARER)].lower() == BEARER and looks_like_jwt(presented):
            return self._token_key(governance, presented, base, path, challenge)
        if mode == registry_pb2.AUTH_MODE_OAUTH:
            raise UnauthorizedError(
                "Unauthorized: this gateway takes OAuth access tokens only; sign in with OAuth",
                challenge=challenge,
            )
        try:
            return governance.authenticate(presented)
        except UnauthorizedError as exc:
            raise UnauthorizedError(exc.message, challenge=challenge) from None

    def _token_key(
        self, governance: Governance, token: str, base: str, path: str, challenge: str
    ) -> KeyPolicy:
        assert self._tokens is not None
        refused = f'{challenge}, error="invalid_token"'
        try:
            claims = self._tokens.verify(token, base, base + path)
        except InvalidTokenError as exc:
            raise UnauthorizedError(f"Unauthorized: {exc}", challenge=refused) from None
        if self._revoked(claims.grant_id):
            raise UnauthorizedError(
                "Unauthorized: the access token was revoked; sign in again", challenge=refused
            )
        key = usable_key(governance, claims.key_id, claims.person)
        if key is None:
            raise UnauthorizedError(
                "Unauthorized: the identity this token was issued to is no longer active", challenge=refused
            )
        if not set(SCOPES) <= set(claims.scopes):
            raise InsufficientScopeError(
                f"Forbidden: the access token lacks the scope {' '.join(SCOPES)!r}",
                challenge=f'{challenge}, error="insufficient_scope"',
            )
        return key
