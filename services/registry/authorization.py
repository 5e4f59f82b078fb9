"""OAuth 2.0 authorization code with PKCE (RFC 6749 section 4.1, RFC 7636) for downstreams
that want a person's consent: registry makes the URL the person opens, and exchanges the
code the authorization server sends back for tokens, keeping the refresh token sealed:
the operator's once for a server, or, for a per_user_oauth server, each identity's own.

What the config leaves out (endpoints, the client id) is discovered and registered on the
first authorization (`discovery.py`) and kept sealed with the other credentials, so every
later flow and every connector uses the same client. A flow waits at most
`PENDING_SECONDS`, and its `state` is good once.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import anyio
import httpx2
import orjson

from services.contracts import registry_pb2
from services.oauth import ClientAuth, TokenEndpointError, request_token
from services.registry.config import ClientConfig, OAuthConfig
from services.registry.discovery import DISCOVERY_TIMEOUT_SECONDS, DiscoveryError, discover, register
from services.registry.governance import InvalidFieldError, MissingError
from services.registry.store import RegistryStore
from services.registry.user_tokens import Grant, UserTokens, refresh_token_name

PENDING_SECONDS = 600.0


def client_name(server: str) -> str:
    """The kept secret holding what was discovered and registered for a server."""
    return f"oauth-client:{server}"


def with_discovered(oauth: OAuthConfig, kept: str | None) -> OAuthConfig:
    """A server's OAuth config with what was discovered and registered filling its blanks."""
    if not kept or (oauth.complete and oauth.resource):
        return oauth
    found = orjson.loads(kept)
    fill = {
        field: found.get(field, "")
        for field in (
            "authorize_url",
            "token_url",
            "client_id",
            "client_secret",
            "resource",
            "token_endpoint_auth_method",
        )
        if not getattr(oauth, field)
    }
    if oauth.client_id:
        # A configured client keeps its configured secret and way of presenting it.
        fill.pop("client_secret", None)
        fill.pop("token_endpoint_auth_method", None)
    return oauth.model_copy(update=fill)


@dataclass(frozen=True, slots=True)
class Pending:
    server: str
    oauth: OAuthConfig
    verifier: str
    redirect_uri: str
    expires: float
    # The identity connecting a per_user_oauth server; "" for the operator's setup.
    key_id: str = ""


class Authorizations:
    def __init__(self, store: RegistryStore, user_tokens: UserTokens) -> None:
        self._store = store
        self._user_tokens = user_tokens
        self._pending: dict[str, Pending] = {}
        # One discovery and registration at a time: two would register two clients.
        self._resolving = anyio.Lock()

    async def start(
        self, server: ClientConfig, redirect_uri: str, key_id: str = "", redirect_uris: tuple[str, ...] = ()
    ) -> str:
        """The URL to send a person to, to authorize the gateway for `server` (as the
        identity `key_id`, for a per_user_oauth server)."""
        if server.oauth is None or server.oauth.grant_type != "authorization_code":
            raise InvalidFieldError(
                "server", f"{server.name!r} is not configured for the authorization_code grant"
            )
        if key_id and not server.per_user_oauth:
            raise InvalidFieldError("key_id", f"{server.name!r} is not per_user_oauth: it is authorized once")
        oauth = await self._client(server, server.oauth, redirect_uris or (redirect_uri,))
        now = time.monotonic()
        self._pending = {s: p for s, p in self._pending.items() if p.expires > now}
        state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        self._pending[state] = Pending(
            server.name, oauth, verifier, redirect_uri, now + PENDING_SECONDS, key_id
        )
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        query = {
            "response_type": "code",
            "client_id": oauth.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if oauth.scope:
            query["scope"] = oauth.scope
        if oauth.resource:
            query["resource"] = oauth.resource
        separator = "&" if "?" in oauth.authorize_url else "?"
        return f"{oauth.authorize_url}{separator}{urlencode(query)}"

    async def complete(
        self, state: str, code: str, identity: bool = False
    ) -> registry_pb2.CompletedAuthorization:
        """Exchange the code for tokens and keep the refresh token: the operator's (the
        server reconnects) or the identity's (its next call uses it)."""
        pending = self._pending.pop(state, None)
        if pending is None or pending.expires < time.monotonic():
            raise MissingError("no authorization is waiting for that state (it expired or was used)")
        if bool(pending.key_id) != identity:
            # An identity's flow must come back where its browser is checked, and the
            # operator's where it began.
            raise MissingError("no authorization of this kind is waiting for that state")
        oauth = pending.oauth
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier,
        }
        if oauth.resource:
            form["resource"] = oauth.resource
        try:
            auth = ClientAuth(oauth.token_endpoint_auth_method or ClientAuth.BASIC)
            tokens = await request_token(oauth.token_url, oauth.client_id, oauth.client_secret, form, auth)
        except TokenEndpointError as exc:
            raise InvalidFieldError("code", f"the authorization server refused it: {exc}") from None
        grant = Grant.of(tokens)
        if grant is None:
            raise InvalidFieldError("code", "the authorization server issued no token")
        if pending.key_id:
            await self._user_tokens.put(pending.server, pending.key_id, grant)
            revision = await self._store.revision()
        else:
            revision = await self._store.put_secret(refresh_token_name(pending.server), grant.to_json())
        return registry_pb2.CompletedAuthorization(
            revision=revision, server=pending.server, key_id=pending.key_id
        )

    async def _client(
        self, server: ClientConfig, oauth: OAuthConfig, redirect_uris: tuple[str, ...]
    ) -> OAuthConfig:
        """The server's OAuth client, complete: as configured, as discovered and registered
        before, or discovered and registered now (and kept)."""
        async with self._resolving:
            kept = (await self._store.secrets()).get(client_name(server.name))
            known = with_discovered(oauth, kept)
            registered_for = set(orjson.loads(kept).get("redirect_uris", ())) if kept else set()
            if known.complete and (oauth.client_id or set(redirect_uris) <= registered_for):
                return known
            if known.client_id and not oauth.client_id:
                # Registering anew would orphan every token issued to the client registered before.
                raise InvalidFieldError(
                    "redirect_uri",
                    f"server {server.name!r}: the gateway registered itself for {sorted(registered_for)}, "
                    f"not {sorted(set(redirect_uris) - registered_for)}: reach the gateway by the URL it was "
                    "registered under (MCPGW_PUBLIC_URL), or configure a client_id",
                )
            server_url = oauth.server_url or server.connection_string or ""
            try:
                async with httpx2.AsyncClient(timeout=DISCOVERY_TIMEOUT_SECONDS) as http:
                    found = await discover(server_url, http)
                    client_id, client_secret, auth = oauth.client_id, oauth.client_secret, ""
                    if not client_id:
                        uris = sorted(registered_for | set(redirect_uris))
                        registered = await register(found, uris, oauth.scope, http, oauth.registration_url)
                        client_id, client_secret = registered.client_id, registered.client_secret
                        auth, registered_for = registered.auth.value, set(uris)
            except DiscoveryError as exc:
                raise InvalidFieldError("oauth", f"server {server.name!r}: {exc}") from None
            record = {
                "authorize_url": oauth.authorize_url or found.authorize_url,
                "token_url": oauth.token_url or found.token_url,
                "resource": oauth.resource or found.resource,
                "client_id": client_id,
                "client_secret": "" if oauth.client_id else client_secret,
                "token_endpoint_auth_method": auth,
                "redirect_uris": sorted(registered_for),
            }
            # Sealed with the other credentials; the revision moves, so connectors get the client.
            await self._store.put_secret(client_name(server.name), orjson.dumps(record).decode())
            return with_discovered(oauth, orjson.dumps(record).decode())
