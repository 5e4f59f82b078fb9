"""The authorization server's HTTP endpoints, served by the edge when `mcp_server_auth_mode`
is `both` or `oauth`: RFC 8414 and RFC 9728 metadata, authorize, token, register (RFC
7591, or a Client ID Metadata Document instead), revoke (the `mcp` SDK's handlers, over
`GatewayProvider`), and the consent pages.

The issuer is the gateway's public URL, else the scheme and Host each request came by, so
one edge answers under every name its clients use; with headers-only auth all is 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import MetadataHandler, ProtectedResourceMetadataHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.handlers.revoke import RevocationHandler
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.middleware.client_auth import ClientAuthenticator
from mcp.server.auth.routes import build_metadata, cors_middleware
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import RequestBodyLimitMiddleware
from mcp.shared.auth import ProtectedResourceMetadata
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.contracts import registry_pb2
from services.edge.admission import Admission
from services.edge.catalog import Catalog
from services.edge.errors import EdgeError
from services.edge.identity.client_metadata import ClientDocuments
from services.edge.identity.consent import Consent
from services.edge.identity.credentials import PROTECTED_RESOURCE, base_url
from services.edge.identity.oidc import CALLBACK_PATH
from services.edge.identity.provider import CONSENT_PATH, SCOPES, GatewayProvider
from services.edge.identity.state import OAuthState
from services.edge.identity.tokens import AccessTokens

AUTHORIZATION_SERVER = "/.well-known/oauth-authorization-server"
PATHS = frozenset(
    {AUTHORIZATION_SERVER, "/authorize", "/token", "/register", "/revoke", CONSENT_PATH, CALLBACK_PATH}
)
REGISTRATION = ClientRegistrationOptions(enabled=True, valid_scopes=list(SCOPES), default_scopes=list(SCOPES))
REVOCATION = RevocationOptions(enabled=True)
MAX_BODY_BYTES = 64 * 1024


def is_oauth_path(path: str) -> bool:
    return path in PATHS or path.startswith(PROTECTED_RESOURCE)


class OAuthEndpoints:
    def __init__(
        self,
        state: OAuthState,
        tokens: AccessTokens,
        consent: Consent,
        catalog: Callable[[], Catalog],
        admission: Admission,
        documents: ClientDocuments,
        public_url: str = "",
    ) -> None:
        self._documents = documents
        self._state = state
        self._tokens = tokens
        self._consent = request_response(consent)
        self._catalog = catalog
        self._admission = admission
        self._public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        catalog = self._catalog()
        if catalog.governance.auth_mode == registry_pb2.AUTH_MODE_HEADERS:
            await Response(status_code=404)(scope, receive, send)
            return
        try:
            # Host against DNS rebinding; no Origin rule: browser-based clients call these
            # across origins (CORS), and the consent forms carry their own proof.
            self._admission.check_host(request)
        except EdgeError as exc:
            body = {"error": "invalid_request", "error_description": exc.message}
            await JSONResponse(body, exc.status)(scope, receive, send)
            return
        base = base_url(request, self._public_url)
        app = self._route(scope["path"], base, catalog) or Response(status_code=404)
        await RequestBodyLimitMiddleware(app, MAX_BODY_BYTES)(scope, receive, send)

    def _route(self, path: str, base: str, catalog: Catalog) -> ASGIApp | None:
        if path.startswith(PROTECTED_RESOURCE):
            resource = base + (path[len(PROTECTED_RESOURCE) :] or "/mcp")
            if not _is_resource(catalog, base, resource):
                return None
            # Validated from plain strings: the models keep a path-less URL as it is (an
            # AnyHttpUrl would gain a "/", and RFC 8414 compares issuers character by character).
            resource_metadata = ProtectedResourceMetadata.model_validate(
                {
                    "resource": resource,
                    "authorization_servers": [base],
                    "scopes_supported": list(SCOPES),
                    "resource_name": "mcpgw",
                }
            )
            return _cors(ProtectedResourceMetadataHandler(resource_metadata).handle, ["GET", "OPTIONS"])
        if path in (CONSENT_PATH, CALLBACK_PATH):
            return self._consent
        provider = GatewayProvider(
            self._state,
            self._documents,
            self._tokens,
            catalog.governance,
            base,
            lambda r: _is_resource(catalog, base, r),
        )
        authenticator = ClientAuthenticator(provider)
        if path == AUTHORIZATION_SERVER:
            metadata = build_metadata(base, None, REGISTRATION, REVOCATION)  # type: ignore[arg-type]
            metadata.authorization_response_iss_parameter_supported = True
            metadata.client_id_metadata_document_supported = True
            return _cors(MetadataHandler(metadata).handle, ["GET", "OPTIONS"])
        if path == "/authorize":
            return request_response(AuthorizationHandler(provider).handle)
        if path == "/token":
            return _cors(TokenHandler(provider, authenticator).handle, ["POST", "OPTIONS"])
        if path == "/register":
            return _cors(RegistrationHandler(provider, REGISTRATION).handle, ["POST", "OPTIONS"])
        if path == "/revoke":
            return _cors(RevocationHandler(provider, authenticator).handle, ["POST", "OPTIONS"])
        return None


def _cors(handler: Callable[[Request], Awaitable[Response]], methods: list[str]) -> ASGIApp:
    return cors_middleware(handler, methods)


def _is_resource(catalog: Catalog, base: str, resource: Any) -> bool:
    """Whether a resource indicator names an MCP endpoint of this gateway."""
    if not isinstance(resource, str) or not resource.startswith(base + "/"):
        return False
    path = resource[len(base) :].rstrip("/")
    if path in ("/mcp", "/sse"):
        return True
    name = path.removeprefix("/mcp/")
    return name != path and (name in catalog.per_server or name in catalog.groups)
