"""Access tokens on the grants registry keeps (the operator's for a server, each identity's
for a per_user_oauth one). Registry alone spends refresh tokens, so one the authorization
server rotates is never presented twice: servers that detect reuse revoke the whole grant
when it is.

One refresh of a grant at a time, across every registry on the database: the refresher
leases the grant by a compare-and-set on its stored version, and the others wait for the
token it writes back. Every connector is handed the same access token until it nears expiry.
"""

from __future__ import annotations

import time
from dataclasses import replace

import anyio

from services.oauth import TOKEN_TIMEOUT_SECONDS, ClientAuth, TokenEndpointError, request_token
from services.registry.config import OAuthConfig
from services.registry.governance import MissingError
from services.registry.user_tokens import Grant, UserTokens

# A refresher that died holding a lease holds it no longer than this.
LEASE_SECONDS = TOKEN_TIMEOUT_SECONDS + 5.0
# How often a waiter looks for the token the lease holder writes back.
WAIT_PAUSE_SECONDS = 0.05


class GrantEndedError(Exception):
    """The authorization server refused the grant (revoked, expired, or reused): it is dropped."""


class TokenUnavailableError(Exception):
    """The token endpoint failed for now; the grant stays."""


class AccessTokens:
    def __init__(self, grants: UserTokens) -> None:
        self._grants = grants

    async def issue(self, server: str, oauth: OAuthConfig, key_id: str, stale: str = "") -> Grant:
        """The grant with a usable access token (not `stale`), renewed here if it needs it.
        MissingError when there is none, GrantEndedError when it is refused."""
        give_up = time.monotonic() + LEASE_SECONDS + TOKEN_TIMEOUT_SECONDS
        while True:
            found = await self._grants.read(server, key_id)
            if found is None:
                raise MissingError(
                    f"no authorization for {server!r}" + (f" by key {key_id!r}" if key_id else "")
                )
            grant, version = found
            now = time.time()
            if grant.refresh_in(now, stale) > 0:
                return grant
            if not grant.refresh_token:
                await self._grants.swap(server, key_id, version, None)
                raise GrantEndedError(
                    f"server {server!r}: the access token expired or was refused (no refresh token)"
                )
            if grant.lease_until > now:
                if time.monotonic() > give_up:
                    raise TokenUnavailableError(
                        f"server {server!r}: another registry's refresh did not finish"
                    )
                await anyio.sleep(WAIT_PAUSE_SECONDS)
                continue
            leased = await self._grants.swap(
                server, key_id, version, replace(grant, lease_until=now + LEASE_SECONDS)
            )
            if leased is None:
                continue  # another registry wrote it first: read what it wrote
            # Shielded: a rotated refresh token the server issued must be kept, or the grant is lost.
            with anyio.CancelScope(shield=True):
                renewed = await self._refresh(server, oauth, key_id, grant, leased)
            if renewed is not None:
                return renewed

    async def _refresh(
        self, server: str, oauth: OAuthConfig, key_id: str, grant: Grant, leased: str
    ) -> Grant | None:
        """The grant renewed at the token endpoint and kept; None when it was replaced or
        dropped meanwhile (a reconnect or a disconnect wins)."""
        form = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
        if oauth.scope:
            form["scope"] = oauth.scope
        if oauth.resource:
            form["resource"] = oauth.resource
        auth = ClientAuth(oauth.token_endpoint_auth_method or ClientAuth.BASIC)
        try:
            tokens = await request_token(oauth.token_url, oauth.client_id, oauth.client_secret, form, auth)
        except TokenEndpointError as exc:
            if exc.error == "invalid_grant":
                await self._grants.swap(server, key_id, leased, None)
                raise GrantEndedError(
                    f"server {server!r}: the authorization was revoked or expired ({exc})"
                ) from None
            await self._grants.swap(server, key_id, leased, grant)
            raise TokenUnavailableError(f"server {server!r}: {exc}") from None
        renewed = grant.renewed(tokens, time.time())
        if renewed is None or not renewed.access_token:
            await self._grants.swap(server, key_id, leased, grant)
            raise TokenUnavailableError(f"server {server!r}: the token endpoint's answer has no access_token")
        return renewed if await self._grants.swap(server, key_id, leased, renewed) is not None else None
