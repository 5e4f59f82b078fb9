"""OAuth 2.0 authorization code with PKCE (RFC 6749 section 4.1, RFC 7636) for downstreams
that want a person's consent: registry makes the URL the person opens, and exchanges the
code the authorization server sends back for tokens, keeping the refresh token sealed:
the operator's once for a server, or, for a per_user_oauth server, each identity's own.

A flow waits at most `PENDING_SECONDS`, and its `state` is good once.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from services.contracts import registry_pb2
from services.oauth import TokenEndpointError, request_token
from services.registry.config import ClientConfig, OAuthConfig
from services.registry.governance import InvalidFieldError, MissingError
from services.registry.store import RegistryStore
from services.registry.user_tokens import UserTokens

PENDING_SECONDS = 600.0


def refresh_token_name(server: str) -> str:
    return f"oauth-refresh:{server}"


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

    def start(self, server: ClientConfig, redirect_uri: str, key_id: str = "") -> str:
        """The URL to send a person to, to authorize the gateway for `server` (as the
        identity `key_id`, for a per_user_oauth server)."""
        oauth = server.oauth
        if oauth is None or oauth.grant_type != "authorization_code":
            raise InvalidFieldError(
                "server", f"{server.name!r} is not configured for the authorization_code grant"
            )
        if key_id and not server.per_user_oauth:
            raise InvalidFieldError("key_id", f"{server.name!r} is not per_user_oauth: it is authorized once")
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
        separator = "&" if "?" in oauth.authorize_url else "?"
        return f"{oauth.authorize_url}{separator}{urlencode(query)}"

    async def complete(self, state: str, code: str) -> registry_pb2.CompletedAuthorization:
        """Exchange the code for tokens and keep the refresh token: the operator's (the
        server reconnects) or the identity's (its next call uses it)."""
        pending = self._pending.pop(state, None)
        if pending is None or pending.expires < time.monotonic():
            raise MissingError("no authorization is waiting for that state (it expired or was used)")
        oauth = pending.oauth
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier,
        }
        try:
            tokens = await request_token(oauth.token_url, oauth.client_id, oauth.client_secret, form)
        except TokenEndpointError as exc:
            raise InvalidFieldError("code", f"the authorization server refused it: {exc}") from None
        refresh = tokens.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            raise InvalidFieldError("code", "the authorization server issued no refresh token")
        if pending.key_id:
            await self._user_tokens.put(pending.server, pending.key_id, refresh)
            revision = await self._store.revision()
        else:
            revision = await self._store.put_secret(refresh_token_name(pending.server), refresh)
        return registry_pb2.CompletedAuthorization(
            revision=revision, server=pending.server, key_id=pending.key_id
        )
