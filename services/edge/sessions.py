"""Sessions as signed, expiring tokens, so any edge replica can serve any session.

A token is `<key id>.<claims>.<signature>`: base64url JSON claims (protocol version,
client name, virtual key id, endpoint, expiry, nonce) and an HMAC-SHA256 over the
first two parts. Which sessions were ended with DELETE is not the token's to say: `ended`
answers it (SessionState, shared by every edge), so DELETE is final everywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
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


class Signer:
    """HMAC-SHA256 over tokens the edge hands out, keyed by the secret all edges share."""

    def __init__(self, secret: str) -> None:
        # Without a shared secret, a random key: tokens are then good on this process only.
        self._key = hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32)

    def signature(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())

    def sign(self, text: str) -> str:
        """`text` and its signature, as one token."""
        return f"{text}.{self.signature(text)}"

    def verify(self, token: str) -> str | None:
        """The text a token signs, or None when it was not signed here (constant-time)."""
        text, _, signature = token.rpartition(".")
        return text if text and hmac.compare_digest(self.signature(text), signature) else None


class SessionCodec:
    def __init__(
        self, signer: Signer, ttl_seconds: int, ended: Callable[[str], bool] = lambda _: False
    ) -> None:
        self._signer = signer
        self._ttl = ttl_seconds
        # Whether a session (by nonce) was ended with DELETE, on any edge.
        self._ended = ended

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
        return self._signer.sign(f"{KEY_ID}.{_b64(orjson.dumps(claims))}")

    def resolve(self, token: str) -> Session:
        """The session a token names; SessionNotFoundError for a forged, expired or ended one."""
        signed = self._signer.verify(token)
        key_id, _, encoded = (signed or "").partition(".")
        if key_id != KEY_ID:
            raise SessionNotFoundError("Session not found: re-initialize")
        try:
            claims = orjson.loads(_unb64(encoded))
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
