"""Tokens the edge signs and any edge sharing its secret verifies: sessions, 2026-07-28
`requestState`s and task ids.

A token is `<kind>.<text>.<signature>`, an HMAC-SHA256 over kind and text. The kind is
signed with the text, so a token of one kind is never taken for another: a session id
offered as a `requestState` is refused as not issued, like a forged one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from enum import StrEnum


class TokenKind(StrEnum):
    """What a token is (each value also names its format's version)."""

    SESSION = "s1"
    REQUEST_STATE = "rs1"
    TASK = "task1"
    CONSENT = "consent1"
    CONNECT = "connect1"
    OIDC = "oidc1"
    CONSOLE = "console1"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    """Raises ValueError (binascii.Error) for text that is not base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """HMAC-SHA256 over tokens the edge hands out, keyed by the secret all edges share."""

    def __init__(self, secret: str) -> None:
        # Without a shared secret, a random key: tokens are then good on this process only.
        self._key = hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32)

    def _signature(self, signed: str) -> bytes:
        return base64.urlsafe_b64encode(hmac.new(self._key, signed.encode(), hashlib.sha256).digest()).rstrip(
            b"="
        )

    def sign(self, kind: TokenKind, text: str) -> str:
        """A token of `kind` carrying `text`."""
        signed = f"{kind}.{text}"
        return f"{signed}.{self._signature(signed).decode()}"

    def derive(self, kind: TokenKind, text: str) -> str:
        """A secret only holders of the key can compute from `text` (43 base64url characters)."""
        # Prefixed so no token's signature (always over "<kind>.") is ever a derived secret.
        return self._signature(f"derived:{kind}.{text}").decode()

    def verify(self, kind: TokenKind, token: str) -> str | None:
        """The text a token of `kind` carries, or None when it is not one signed here
        (constant-time; any input, even one that is not ASCII)."""
        signed, _, signature = token.rpartition(".")
        if not signed.startswith(f"{kind}."):
            return None
        presented = signature.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(self._signature(signed), presented):
            return None
        return signed[len(kind) + 1 :]
