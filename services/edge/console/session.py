"""The console's sign-in: a signed session cookie, a CSRF token derived from it, and the
Origin check every state-changing request passes.

The cookie carries `<session id>.<expiry>.<role>.<who>` signed (HMAC-SHA256) with a key
derived from the admin token and the edges' shared secret: any edge sharing both accepts it,
and changing the admin token ends every session. Signing out ends the session on every
edge (console/signouts.py). The role is `admin` (the admin token, or a provider sign-in the
console's admins name) or `viewer` (read-only).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import Response

from services.edge.admin import AdminToken, Guesses
from services.edge.signing import Signer, TokenKind, b64, unb64

COOKIE = "mcpgw_console"
COOKIE_PATH = "/ui"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 8 * 3600
ADMIN, VIEWER = "admin", "viewer"
ROLES = (ADMIN, VIEWER)


class ConsoleAuthError(Exception):
    """A request the console refuses: not signed in, or a state change that failed its checks."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in operator: the session's id, when it ends, and its CSRF token."""

    id: str
    expires_at: int
    csrf: str
    role: str = ADMIN
    # Who signed in: "admin token", or the claim a provider vouched for.
    who: str = "admin token"

    @property
    def read_only(self) -> bool:
        return self.role != ADMIN


class ConsoleSessions:
    """Issues and checks console sessions for holders of the admin token."""

    def __init__(
        self,
        admin_token: str,
        session_secret: str,
        seconds: int = SESSION_SECONDS,
        public_url: str = "",
        guesses: Guesses | None = None,
    ) -> None:
        # Where browsers reach the console (MCPGW_PUBLIC_URL; "": the scheme and Host each
        # request came by), for the Origin check and the cookies' Secure flag.
        self.public_url = public_url
        self._token = AdminToken(admin_token)
        # Wrong tokens per client address, counted with the API's (edge/admin.py).
        self.guesses = guesses or Guesses()
        # Keyed by the admin token too, so a new admin token ends every session at once; with
        # neither secret, a random key (Signer's for ""): sessions of this process only.
        material = f"console\0{session_secret}\0{self._token.digest.hex()}"
        self._signer = Signer(material if session_secret or admin_token else "")
        self._seconds = seconds
        # Seals what a browser carries once for its session (`seal`), keyed like the cookies.
        self._sealing = AESGCM(
            hashlib.sha256(self._signer.derive(TokenKind.CONSOLE, "sealing").encode()).digest()
        )
        # Sessions signed out before they expire, here or on another edge, by id, with their expiry.
        self._ended: dict[str, int] = {}
        # Tells the other edges of a sign-out here (console/signouts.py); None: this edge only.
        self.announce: Callable[[str, int], Awaitable[object]] | None = None

    @property
    def signer(self) -> Signer:
        return self._signer

    def token_matches(self, client: str, presented: str) -> bool:
        """Whether `presented` is the admin token, a wrong one counted against `client`
        (TooManyGuessesError past its limit): the management API's own check."""
        return self.guesses.admits(client, presented, self._token)

    def issue(
        self, now: float | None = None, role: str = ADMIN, who: str = "admin token"
    ) -> tuple[ConsoleSession, str]:
        """A new session and its cookie value."""
        if role not in ROLES:
            raise ValueError(f"no console role {role!r}")
        session_id = secrets.token_urlsafe(18)
        expires_at = int(now if now is not None else time.time()) + self._seconds
        cookie = self._signer.sign(TokenKind.CONSOLE, f"{session_id}.{expires_at}.{role}.{b64(who.encode())}")
        return ConsoleSession(session_id, expires_at, self._csrf(session_id), role, who), cookie

    def session_of(self, cookie: str | None, now: float | None = None) -> ConsoleSession | None:
        """The live session a cookie value carries, or None (forged, expired, signed out)."""
        if not cookie:
            return None
        text = self._signer.verify(TokenKind.CONSOLE, cookie)
        if text is None:
            return None
        parts = text.split(".")
        if len(parts) != 4:
            return None
        session_id, expiry, role, who = parts
        if not expiry.isdigit() or role not in ROLES or session_id in self._ended:
            return None
        expires_at = int(expiry)
        if expires_at <= (now if now is not None else time.time()):
            return None
        try:
            name = unb64(who).decode()
        except ValueError:
            return None
        return ConsoleSession(session_id, expires_at, self._csrf(session_id), role, name)

    async def sign_out(self, session: ConsoleSession, now: float | None = None) -> None:
        """End a session here, and on every other edge once they hear of it."""
        self.ended(session.id, session.expires_at, now)
        if self.announce is not None:
            await self.announce(session.id, session.expires_at)

    def ended(self, session_id: str, expires_at: int, now: float | None = None) -> None:
        """A session signed out, here or elsewhere (and those that expired meanwhile forgotten)."""
        moment = now if now is not None else time.time()
        self._ended = {sid: exp for sid, exp in self._ended.items() if exp > moment}
        if expires_at > moment:
            self._ended[session_id] = expires_at

    def set_cookie(
        self,
        answer: Response,
        request: Request,
        cookie: tuple[str, str],
        max_age: int,
        path: str,
        samesite: Literal["strict", "lax"] = "strict",
    ) -> Response:
        """`answer`, setting a console cookie (name, value): always HttpOnly, Secure when browsers
        reach the console over https, and only for `path`."""
        name, value = cookie
        secure = is_secure(request, self.public_url)
        answer.set_cookie(name, value, max_age, path=path, httponly=True, samesite=samesite, secure=secure)
        return answer

    def seal(self, session: ConsoleSession, text: str) -> str:
        """`text` encrypted for this session alone (AES-GCM, keyed like the cookies, so any
        edge can open it), for a value a browser carries once and must not read."""
        nonce = os.urandom(12)
        sealed = self._sealing.encrypt(nonce, text.encode(), session.id.encode())
        return b64(nonce + sealed)

    def unseal(self, session: ConsoleSession, sealed: str | None) -> str | None:
        """What `seal` sealed for this session, or None (absent, forged, another session's)."""
        if not sealed:
            return None
        try:
            raw = unb64(sealed)
            return self._sealing.decrypt(raw[:12], raw[12:], session.id.encode()).decode()
        except (ValueError, InvalidTag):
            return None

    def _csrf(self, session_id: str) -> str:
        return self._signer.derive(TokenKind.CONSOLE, f"csrf:{session_id}")

    @staticmethod
    def csrf_matches(session: ConsoleSession, presented: str | None) -> bool:
        """Whether a request carried its session's CSRF token (constant time)."""
        return presented is not None and hmac.compare_digest(
            session.csrf.encode(), presented.encode("utf-8", "surrogateescape")
        )


def origin_of(request: Request, public_url: str = "") -> tuple[str, str]:
    """The scheme and host browsers reach the console at: the public URL's when it is set
    (behind a TLS-terminating proxy the request itself may say http and another Host),
    else the request's."""
    if public_url:
        parts = urlsplit(public_url)
        return parts.scheme, parts.netloc
    return request.url.scheme, request.headers.get("host", "")


def is_secure(request: Request, public_url: str = "") -> bool:
    """Whether the console's cookies are marked Secure: browsers reach it over https."""
    return origin_of(request, public_url)[0] == "https"


def same_origin(request: Request, public_url: str = "") -> bool:
    """Whether a state-changing request came from a page of this origin: its Origin (or, when
    a browser sent none, its Referer) names the scheme and host browsers reach the console at
    (`origin_of`)."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        return False
    parts = urlsplit(claimed)
    scheme, host = origin_of(request, public_url)
    return bool(host) and parts.netloc == host and parts.scheme == scheme


def check_change(
    sessions: ConsoleSessions, session: ConsoleSession, request: Request, form_csrf: str | None
) -> None:
    """ConsoleAuthError unless a state-changing request passes the Origin and CSRF checks."""
    if not same_origin(request, sessions.public_url):
        raise ConsoleAuthError(403, "This request did not come from a console page (Origin check).")
    presented = request.headers.get(CSRF_HEADER) or form_csrf
    if not sessions.csrf_matches(session, presented):
        raise ConsoleAuthError(403, "The form is stale or did not come from this console: reload the page.")
