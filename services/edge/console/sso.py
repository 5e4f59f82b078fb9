"""Signing in to the console with the edge's OpenID Connect provider (the one the consent
page uses): the authorization code flow with PKCE, a state signed by this console and a
nonce kept in a short-lived cookie, and the claim matched against the console's admins
and viewers (addresses, or "*@domain")."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request

from services.edge.console.session import ADMIN, VIEWER
from services.edge.identity.credentials import base_url
from services.edge.identity.oidc import OpenIDProvider, SignInError
from services.edge.signing import Signer, TokenKind, b64, unb64
from services.virtual_keys import identity, identity_domain

CALLBACK_PATH = "/ui/oidc/callback"
NONCE_COOKIE = "mcpgw_console_nonce"
# The cookie is only ever needed at the callback.
NONCE_PATH = "/ui/oidc"
STATE_SECONDS = 600


def role_of(claim: str, admins: frozenset[str], viewers: frozenset[str], domains: bool = False) -> str | None:
    """The role a provider's claim gets: admin before viewer, an address before its domain
    ("*@domain" only with `domains`: when the claim is a verified email, not a name a person
    may choose, such as preferred_username)."""
    names = {identity(claim), identity_domain(claim) if domains else ""} - {""}
    if names & admins:
        return ADMIN
    if names & viewers:
        return VIEWER
    return None


def people(text: str) -> frozenset[str]:
    """A comma-separated list of addresses and "*@domain" entries, as they are matched."""
    return frozenset(identity(p) for p in text.split(",") if p.strip())


@dataclass(frozen=True, slots=True)
class SignedIn:
    who: str
    role: str
    target: str


class ConsoleSso:
    """The console's side of a provider sign-in."""

    def __init__(
        self,
        provider: OpenIDProvider,
        signer: Signer,
        admins: frozenset[str],
        viewers: frozenset[str],
        public_url: str,
    ) -> None:
        self.provider, self._signer = provider, signer
        self._admins, self._viewers, self._public_url = admins, viewers, public_url

    @property
    def name(self) -> str:
        return self.provider.config.name

    def _redirect(self, request: Request) -> str:
        return base_url(request, self._public_url) + CALLBACK_PATH

    async def start(self, request: Request, target: str) -> tuple[str, str]:
        """The provider's authorization URL, and the nonce to keep in this browser's cookie;
        SignInError when the provider cannot be reached."""
        state = self._signer.sign(TokenKind.CONSOLE, f"sso.{int(time.time())}.{b64(target.encode())}")
        nonce = secrets.token_urlsafe(18)
        verifier = self._signer.derive(TokenKind.CONSOLE, f"verifier:{state}")
        url = await self.provider.authorization_url(self._redirect(request), state, nonce, verifier)
        return url, nonce

    async def finish(self, request: Request) -> SignedIn:
        """Who the provider's answer vouches for and their role; SignInError saying why not."""
        query = request.query_params
        if query.get("error"):
            raise SignInError(f"the provider refused: {query.get('error')}")
        state = query.get("state", "")
        text = self._signer.verify(TokenKind.CONSOLE, state)
        parts = (text or "").split(".")
        if len(parts) != 3 or parts[0] != "sso" or not parts[1].isdigit():
            raise SignInError("this sign-in was not started here")
        if int(parts[1]) + STATE_SECONDS < time.time():
            raise SignInError("this sign-in took too long: start again")
        nonce = request.cookies.get(NONCE_COOKIE)
        if not nonce:
            raise SignInError("this sign-in was started in another browser")
        verifier = self._signer.derive(TokenKind.CONSOLE, f"verifier:{state}")
        # The console's roles trust an email claim only when the provider says it verified it.
        claim = await self.provider.identify(
            query.get("code", ""), self._redirect(request), verifier, nonce, verified=True
        )
        role = role_of(claim, self._admins, self._viewers, domains=self.provider.config.claim == "email")
        if role is None:
            raise SignInError(f"{claim} may not use this console")
        target = unb64(parts[2]).decode()
        return SignedIn(claim, role, target if target.startswith("/ui") else "/ui")
