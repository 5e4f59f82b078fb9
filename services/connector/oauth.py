"""Bearer tokens for downstreams behind OAuth 2.0: the client credentials grant (RFC 6749
section 4.4) fetched here, or for a person's authorization the access token registry issues
on the grant it keeps (`Issue`): registry alone spends refresh tokens, so replicas never
present a rotated one twice. Either is cached until it nears expiry, and renewed on a 401.

Secrets (`env.NAME` references) are resolved when a token is fetched; tokens and secrets
are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import anyio
import httpx2

from services.contracts import registry_pb2
from services.oauth import ClientAuth, TokenEndpointError, request_token

log = logging.getLogger(__name__)

# Refresh this long before expiry (or at a tenth of a short lifetime), so no call races it.
REFRESH_MARGIN_SECONDS = 30.0


class TokenError(ConnectionError):
    """The authorization server would not issue a token."""


class NotAuthorizedError(TokenError):
    """No person has authorized the gateway for this server yet."""


class AuthorizationEndedError(NotAuthorizedError):
    """The authorization server refused the grant (revoked, expired, or spent)."""


# An access token on a person's grant: given the token a downstream just refused (or ""),
# a token and how long to use it. Raises the errors above.
Issue = Callable[[str], Awaitable[tuple[str, float]]]


class TokenSource:
    def __init__(self, server: str, config: registry_pb2.OAuthClient, issue: Issue | None = None) -> None:
        self._server = server
        self._config = config
        self._issue = issue
        # Set once the grant is refused: only a new authorization helps then.
        self.ended = False
        self._token = ""
        self._refresh_at = 0.0
        self._lock = anyio.Lock()

    async def token(self, stale: str | None = None) -> str:
        """A valid access token; a new one when the cached one is near expiry or is `stale`
        (the one a downstream just refused)."""
        async with self._lock:
            if self._token and self._token != stale and time.monotonic() < self._refresh_at:
                return self._token
            self._token, usable = await self._fetch(stale or "")
            self._refresh_at = time.monotonic() + usable
            return self._token

    async def _fetch(self, stale: str) -> tuple[str, float]:
        """A token and how long to use it."""
        config = self._config
        if config.grant_type == "authorization_code":
            if self._issue is None:
                raise NotAuthorizedError(
                    f"server {self._server!r} is not authorized yet: "
                    f"POST /api/mcp/client/{self._server}/oauth/authorize and open the URL it gives"
                )
            try:
                return await self._issue(stale)
            except AuthorizationEndedError:
                self.ended = True
                raise
        form = {"grant_type": "client_credentials"}
        if config.scope:
            form["scope"] = config.scope
        if config.resource:
            form["resource"] = config.resource
        try:
            auth = ClientAuth(config.token_endpoint_auth_method or ClientAuth.BASIC)
            body = await request_token(config.token_url, config.client_id, config.client_secret, form, auth)
        except TokenEndpointError as exc:
            raise TokenError(f"server {self._server!r}: {exc}") from None
        token, lifetime = body.get("access_token"), body.get("expires_in", 3600)
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float):
            raise TokenError(f"server {self._server!r}: the token endpoint's answer has no access_token")
        log.info("server %s: got an access token for %.0f s", self._server, lifetime)
        return token, max(0.0, lifetime - min(REFRESH_MARGIN_SECONDS, lifetime / 10))


class BearerAuth(httpx2.Auth):
    """httpx auth for the SDK's session: the token on every request, one retry after a 401."""

    def __init__(self, credentials: TokenSource) -> None:
        self._credentials = credentials

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self._credentials.token()
        request.headers["authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token = await self._credentials.token(stale=token)
            request.headers["authorization"] = f"Bearer {token}"
            yield request
