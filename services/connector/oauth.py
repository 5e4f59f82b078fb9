"""Bearer tokens for downstreams behind OAuth 2.0: the client credentials grant (RFC 6749
section 4.4), or the refresh token a person's authorization left in registry (section 6),
the access token cached and renewed before it expires, and again on a 401. A refresh token
the server rotates is kept, and handed to `on_rotate` (an identity's goes back to registry).

Secrets (`env.NAME` references) are resolved when a token is fetched; tokens and secrets
are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

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
    """The authorization server refused the refresh token (revoked, expired, or spent)."""


# A refused refresh token: how many times registry is asked for a newer one, and the pauses
# between asks (a replica that rotated it writes it back within moments).
RELOAD_ATTEMPTS = 2
RELOAD_PAUSES = (0.25, 0.5)
# How long a token that never expires is kept before it is looked at again.
YEAR_SECONDS = 365 * 24 * 3600.0


class TokenSource:
    def __init__(
        self,
        server: str,
        config: registry_pb2.OAuthClient,
        on_rotate: Callable[[str, str], Awaitable[None]] | None = None,
        current: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self._server = server
        self._config = config
        self._on_rotate = on_rotate
        # The refresh token registry holds now: another replica may have rotated the one here.
        self._current = current
        # Set once the refresh token is refused: only a new authorization helps then.
        self.ended = False
        # The refresh token that was refused then ("" for an access token).
        self.refused = ""
        self._token = ""
        self._refresh_at = 0.0
        self._lock = anyio.Lock()
        self._refresh = ""
        self.fetched = 0

    async def _request(self, form: dict[str, str]) -> dict[str, Any]:
        """The token endpoint's answer; a refused refresh token is looked up again in registry
        (a replica sharing it may have rotated it) before the authorization counts as ended."""
        config = self._config
        auth = ClientAuth(config.token_endpoint_auth_method or ClientAuth.BASIC)
        for attempt in range(RELOAD_ATTEMPTS + 1):
            try:
                return await request_token(
                    config.token_url, config.client_id, config.client_secret, form, auth
                )
            except TokenEndpointError as exc:
                refused = form.get("refresh_token")
                if refused is None or exc.error != "invalid_grant":
                    raise TokenError(f"server {self._server!r}: {exc}") from None
                current = await self._reload(refused, attempt)
                if current is None:
                    self.ended, self.refused = True, refused
                    raise AuthorizationEndedError(
                        f"server {self._server!r}: the authorization was revoked or expired ({exc})"
                    ) from None
                self._refresh = form["refresh_token"] = current
        raise AssertionError("unreachable")

    async def _reload(self, refused: str, attempt: int) -> str | None:
        """Registry's refresh token when it is not the one just refused; None when it is
        (after a moment for a replica's rotation to land), or there is no registry to ask."""
        if self._current is None or attempt >= RELOAD_ATTEMPTS:
            return None
        for pause in (0.0, *RELOAD_PAUSES):
            await anyio.sleep(pause)
            current = await self._current()
            if current and current != refused:
                return current
        return None

    async def token(self, stale: str | None = None) -> str:
        """A valid access token; a new one when the cached one is near expiry or is `stale`
        (the one a downstream just refused)."""
        async with self._lock:
            if self._token and self._token != stale and time.monotonic() < self._refresh_at:
                return self._token
            self._token, lifetime = await self._fetch(stale)
            self._refresh_at = time.monotonic() + max(
                0.0, lifetime - min(REFRESH_MARGIN_SECONDS, lifetime / 10)
            )
            return self._token

    async def _fetch(self, stale: str | None = None) -> tuple[str, float]:
        config = self._config
        if config.access_token and not config.refresh_token:
            # A server that issues no refresh token: the authorization's token, while it lasts.
            left = (
                config.access_token_expires_at - time.time()
                if config.access_token_expires_at
                else YEAR_SECONDS
            )
            if stale == config.access_token or left <= 0:
                self.ended = True
                raise AuthorizationEndedError(
                    f"server {self._server!r}: the access token expired or was refused (no refresh token)"
                )
            return config.access_token, left
        if config.refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": self._refresh or config.refresh_token}
        elif config.grant_type == "authorization_code":
            raise NotAuthorizedError(
                f"server {self._server!r} is not authorized yet: "
                f"POST /api/mcp/client/{self._server}/oauth/authorize and open the URL it gives"
            )
        else:
            form = {"grant_type": "client_credentials"}
        if config.scope:
            form["scope"] = config.scope
        if config.resource:
            form["resource"] = config.resource
        body = await self._request(form)
        token, lifetime = body.get("access_token"), body.get("expires_in", 3600)
        rotated = body.get("refresh_token")
        spent = self._refresh or config.refresh_token
        if isinstance(rotated, str) and rotated and rotated != spent:
            # A server that rotates refresh tokens: the old one is spent, so keep the newest.
            self._refresh = rotated
            if self._on_rotate is not None:
                await self._on_rotate(spent, rotated)
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float):
            raise TokenError(f"server {self._server!r}: the token endpoint's answer has no access_token")
        self.fetched += 1
        log.info("server %s: got an access token for %.0f s", self._server, lifetime)
        return token, float(lifetime)


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
