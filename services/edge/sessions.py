"""Sessions as signed, expiring tokens, so any edge replica can serve any session.

A token is `<key id>.<claims>.<signature>`: base64url JSON claims (protocol version,
client name, virtual key id, endpoint, expiry, nonce) and an HMAC-SHA256 over the
first two parts. Ended sessions are remembered until their expiry so DELETE is final.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson

from services.edge.errors import SessionNotFoundError

KEY_ID = "k1"


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._key = hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32)
        self._ttl = ttl_seconds
        self._ended: dict[str, int] = {}

    def _sign(self, signed_part: str) -> str:
        return _b64(hmac.new(self._key, signed_part.encode(), hashlib.sha256).digest())

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
        signed_part = f"{KEY_ID}.{_b64(orjson.dumps(claims))}"
        return f"{signed_part}.{self._sign(signed_part)}"

    def resolve(self, token: str) -> Session:
        """The session a token names; SessionNotFoundError for a forged, expired or ended one."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != KEY_ID:
            raise SessionNotFoundError("Session not found: re-initialize")
        signed_part = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(signed_part), parts[2]):
            raise SessionNotFoundError("Session not found: re-initialize")
        try:
            claims = orjson.loads(_unb64(parts[1]))
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
        if session.expires_at < time.time() or session.nonce in self._ended:
            raise SessionNotFoundError("Session expired or ended: re-initialize")
        return session

    def end(self, session: Session) -> None:
        now = time.time()
        for nonce in [n for n, expiry in self._ended.items() if expiry < now]:
            del self._ended[nonce]
        self._ended[session.nonce] = session.expires_at
