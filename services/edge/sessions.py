"""Sessions as signed, expiring tokens, so any edge replica can serve any session.

A session id is a signed token (`signing.py`) of base64url JSON claims: protocol
version, client name, virtual key id, endpoint, expiry, nonce. Which sessions were ended
with DELETE is not the token's to say: `ended` answers it (SessionState, shared by every
edge), so DELETE is final everywhere.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from services.edge.errors import SessionNotFoundError
from services.edge.signing import Signer, TokenKind, b64, unb64

# What `Session.answers` holds for a client that declared (under `elicitation`) that it opens URLs.
URL_ELICITATION = "elicitation.url"


@dataclass(frozen=True, slots=True)
class Session:
    protocol_version: str
    client_name: str
    key_id: str
    expires_at: int
    nonce: str
    # The server or group of /mcp/{name} the session was opened on; "" for /mcp.
    endpoint: str = ""
    # Which server-to-client requests the client declared it answers (sampling, elicitation, roots).
    answers: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The session's public identifier (the nonce): safe in logs and audit events."""
        return self.nonce


class SessionCodec:
    def __init__(
        self, signer: Signer, ttl_seconds: int, ended: Callable[[str], bool] = lambda _: False
    ) -> None:
        self._signer = signer
        self._ttl = ttl_seconds
        # Whether a session (by nonce) was ended with DELETE, on any edge.
        self._ended = ended
        # Sessions this edge issued since it started (a metric).
        self.issued = 0

    def issue(
        self,
        protocol_version: str,
        client_name: str = "",
        key_id: str = "",
        endpoint: str = "",
        answers: tuple[str, ...] = (),
    ) -> str:
        claims = {
            "v": protocol_version,
            "c": client_name[:64],
            "k": key_id,
            "e": int(time.time()) + self._ttl,
            "n": secrets.token_urlsafe(12),
            "p": endpoint,
            "r": list(answers),
        }
        self.issued += 1
        return self._signer.sign(TokenKind.SESSION, b64(orjson.dumps(claims)))

    def resolve(self, token: str) -> Session:
        """The session a token names; SessionNotFoundError for a forged, expired or ended one."""
        encoded = self._signer.verify(TokenKind.SESSION, token)
        if encoded is None:
            raise SessionNotFoundError("Session not found: re-initialize")
        try:
            claims = orjson.loads(unb64(encoded))
            session = Session(
                str(claims["v"]),
                str(claims["c"]),
                str(claims["k"]),
                int(claims["e"]),
                str(claims["n"]),
                str(claims.get("p", "")),
                tuple(str(a) for a in claims.get("r", ())),
            )
        except (ValueError, KeyError, TypeError):
            raise SessionNotFoundError("Session not found: re-initialize") from None
        if session.expires_at < time.time() or self._ended(session.nonce):
            raise SessionNotFoundError("Session expired or ended: re-initialize")
        return session
