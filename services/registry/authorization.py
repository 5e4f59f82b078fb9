"""OAuth 2.0 authorization code with PKCE (RFC 6749 section 4.1, RFC 7636) for downstreams
that want a person's consent: registry makes the URL the person opens, and exchanges the
code the authorization server sends back for tokens, keeping the refresh token sealed:
the operator's once for a server, or, for a per_user_oauth server, each identity's own.

What the config leaves out (endpoints, the client id) is discovered and registered on the
first authorization (`discovery.py`) and kept sealed with the other credentials, so every
later flow and every connector uses the same client. A flow waits at most
`PENDING_SECONDS`, kept sealed in the store so that any registry completes it, and its
`state` is good once.
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
from services.registry.discovery import (
    DISCOVERY_TIMEOUT_SECONDS,
    AuthorizationServer,
    DiscoveryError,
    discover,
    register,
)
from services.registry.governance import InvalidFieldError, MissingError
from services.registry.store import RegistryStore, TooManyPendingError, client_name, refresh_token_name
from services.registry.user_tokens import Grant, UserTokens

PENDING_SECONDS = 600.0
# Discovery and registration together; the edge waits 30 s for a flow to start.
DISCOVERY_DEADLINE_SECONDS = 20.0


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
    # The identity connecting a per_user_oauth server; "" for the operator's setup.
    key_id: str = ""

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "server": self.server,
                "oauth": self.oauth.model_dump(mode="json"),
                "verifier": self.verifier,
                "redirect_uri": self.redirect_uri,
                "key_id": self.key_id,
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> Pending:
        kept = orjson.loads(text)
        return cls(
            kept["server"],
            OAuthConfig.model_validate(kept["oauth"]),
            kept["verifier"],
            kept["redirect_uri"],
            kept["key_id"],
        )


class Authorizations:
    def __init__(self, store: RegistryStore, user_tokens: UserTokens) -> None:
        self._store = store
        self._user_tokens = user_tokens
        # One discovery and registration at a time per server: two would register two clients.
        self._resolving: dict[str, anyio.Lock] = {}

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
        state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        pending = Pending(server.name, oauth, verifier, redirect_uri, key_id)
        try:
            await self._store.put_pending(state, pending.to_json(), time.time() + PENDING_SECONDS)
        except TooManyPendingError as exc:
            raise InvalidFieldError("server", f"{exc}: try again in a few minutes") from None
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
        kept = await self._store.take_pending(state)
        if kept is None:
            raise MissingError("no authorization is waiting for that state (it expired or was used)")
        pending = Pending.from_json(kept)
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
        async with self._resolving.setdefault(server.name, anyio.Lock()):
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
                    "registered under (MCPGW_PUBLIC_URL), or configure a client_id (any change to the "
                    "server's address or oauth section drops the registration)",
                )
            try:
                with anyio.fail_after(DISCOVERY_DEADLINE_SECONDS):
                    found, client_id, client_secret, auth, registered_for = await self._discover(
                        server, oauth, redirect_uris, registered_for
                    )
            except TimeoutError:
                raise InvalidFieldError(
                    "oauth",
                    f"server {server.name!r}: discovery and registration took over "
                    f"{DISCOVERY_DEADLINE_SECONDS:.0f} s",
                ) from None
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

    @staticmethod
    async def _discover(
        server: ClientConfig, oauth: OAuthConfig, redirect_uris: tuple[str, ...], registered_for: set[str]
    ) -> tuple[AuthorizationServer, str, str, str, set[str]]:
        """The server's endpoints, and the client: as configured, or registered now for every
        callback (with those registered before); (found, id, secret, auth method, callbacks)."""
        server_url = oauth.server_url or server.connection_string or ""
        async with httpx2.AsyncClient(timeout=DISCOVERY_TIMEOUT_SECONDS) as http:
            found = await discover(server_url, http)
            if oauth.client_id:
                return found, oauth.client_id, oauth.client_secret, "", registered_for
            uris = sorted(registered_for | set(redirect_uris))
            registered = await register(found, uris, oauth.scope, http, oauth.registration_url)
        return found, registered.client_id, registered.client_secret, registered.auth.value, set(uris)
