"""The `mcp` SDK's authorization-server provider protocol over the shared flow state: the
SDK's handlers speak OAuth (metadata, authorize, token, register, revoke); this decides.

One provider serves one request, for the issuer that request reached (`public_url`, or the
scheme and Host it came by), so tokens name the URL their client really used.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from services.edge.identity.client_metadata import ClientDocuments, is_document_url
from services.edge.identity.state import OAuthState
from services.edge.identity.tokens import AccessTokens, InvalidTokenError
from services.edge.policy import Governance, KeyPolicy

# What a token may be for: everything the identity's key reaches at the resource.
SCOPES = ("mcp",)
CONSENT_PATH = "/oauth/consent"


class GrantCode(AuthorizationCode):
    key_id: str
    issuer: str
    # Who signed in with the OpenID Connect provider as the key ("": the key was presented).
    person: str = ""


class GrantRefresh(RefreshToken):
    grant_id: str
    key_id: str
    person: str = ""


class GrantAccess(AccessToken):
    grant_id: str


def usable_key(governance: Governance, key_id: str, person: str = "") -> KeyPolicy | None:
    """The key a grant carries, when it still exists, is active, has not expired, and still
    names the person who signed in as it (removing them from its identities ends the grant)."""
    key = governance.by_id.get(key_id)
    if key is None or not key.active or (key.expires_at and key.expires_at <= time.time()):
        return None
    if person and governance.assigned(person) is not key:
        return None
    return key


class GatewayProvider:
    """OAuthAuthorizationServerProvider[GrantCode, GrantRefresh, GrantAccess] for one issuer."""

    def __init__(
        self,
        state: OAuthState,
        documents: ClientDocuments,
        tokens: AccessTokens,
        governance: Governance,
        issuer: str,
        is_resource: Callable[[str], bool],
    ) -> None:
        self._state = state
        self._documents = documents
        self._tokens = tokens
        self._governance = governance
        self._issuer = issuer
        self._is_resource = is_resource

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        if is_document_url(client_id):
            client = await self._documents.client(client_id)
            # A document that names no scope may ask for what this gateway grants.
            if client is not None and client.scope is None:
                client = client.model_copy(update={"scope": " ".join(SCOPES)})
            return client
        return await self._state.client(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        await self._state.put_client(client_info)

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        resource = params.resource or f"{self._issuer}/mcp"
        if not self._is_resource(resource):
            raise AuthorizeError("invalid_target", f"{resource[:200]} is not an MCP endpoint of this gateway")
        scopes = params.scopes or list(SCOPES)
        if unknown := set(scopes) - set(SCOPES):
            raise AuthorizeError("invalid_scope", f"unknown scopes: {' '.join(sorted(unknown))}")
        request_id = await self._state.put_request(
            {
                "client_id": client.client_id,
                "client_name": client.client_name or "",
                "params": params.model_dump(mode="json"),
                "resource": resource,
                "scopes": scopes,
                "issuer": self._issuer,
            }
        )
        return f"{self._issuer}{CONSENT_PATH}?request={request_id}"

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> GrantCode | None:
        record = await self._state.code(authorization_code)
        if record is None or record["client_id"] != client.client_id:
            return None
        return GrantCode.model_validate({**record, "code": authorization_code})

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: GrantCode
    ) -> OAuthToken:
        if await self._state.take_code(authorization_code.code) is None:
            raise TokenError("invalid_grant", "the authorization code was used already")
        if usable_key(self._governance, authorization_code.key_id, authorization_code.person) is None:
            raise TokenError("invalid_grant", "the identity this code was issued to is no longer active")
        grant = {
            "grant_id": secrets.token_urlsafe(16),
            "key_id": authorization_code.key_id,
            "person": authorization_code.person,
            "client_id": client.client_id,
            "scopes": authorization_code.scopes,
            "resource": authorization_code.resource or f"{self._issuer}/mcp",
        }
        return await self._issue(grant)

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> GrantRefresh | None:
        record = await self._state.refresh(refresh_token)
        if record is None:
            await self._state.replayed(refresh_token)
            return None
        if record["client_id"] != client.client_id or await self._state.grant_revoked(record["grant_id"]):
            return None
        return GrantRefresh.model_validate({**record, "token": refresh_token})

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: GrantRefresh, scopes: list[str]
    ) -> OAuthToken:
        if usable_key(self._governance, refresh_token.key_id, refresh_token.person) is None:
            raise TokenError("invalid_grant", "the identity of this grant is no longer active")
        grant = {
            "grant_id": refresh_token.grant_id,
            "key_id": refresh_token.key_id,
            "person": refresh_token.person,
            "client_id": client.client_id,
            "scopes": scopes or refresh_token.scopes,
            "resource": refresh_token.resource or f"{self._issuer}/mcp",
        }
        return await self._issue(grant, rotating=refresh_token.token)

    async def _issue(self, grant: dict[str, Any], rotating: str | None = None) -> OAuthToken:
        refresh = secrets.token_urlsafe(32)
        record = {**grant, "expires_at": int(time.time() + self._state.refresh_ttl_seconds)}
        if rotating is None:
            await self._state.put_refresh(refresh, record)
        elif not await self._state.rotate(rotating, refresh, record):
            raise TokenError("invalid_grant", "the refresh token was used already; the grant is revoked")
        claims = self._tokens.claims(
            grant["key_id"],
            grant["grant_id"],
            grant["client_id"],
            grant["scopes"],
            grant["resource"],
            grant["person"],
        )
        return OAuthToken(
            access_token=self._tokens.issue(self._issuer, claims),
            token_type="Bearer",  # noqa: S106 (the token type, not a secret)
            expires_in=self._tokens.ttl_seconds,
            scope=" ".join(grant["scopes"]),
            refresh_token=refresh,
        )

    async def load_access_token(self, token: str) -> GrantAccess | None:
        try:
            claims = self._tokens.inspect(token, self._issuer)
        except InvalidTokenError:
            return None
        return GrantAccess(
            token=token,
            client_id=claims.client_id,
            scopes=list(claims.scopes),
            expires_at=claims.expires_at,
            resource=claims.resource,
            grant_id=claims.grant_id,
        )

    async def revoke_token(self, token: GrantAccess | GrantRefresh) -> None:
        await self._state.revoke(token.grant_id)

    async def exchange_identity_assertion(
        self, client: OAuthClientInformationFull, params: Any
    ) -> OAuthToken:
        raise TokenError("unsupported_grant_type", "the JWT bearer grant is not supported by this gateway")
