"""Server configs at rest: sealed with Fernet (AES-128-CBC and HMAC-SHA256) under the
registry key, since they hold upstream credentials (headers, OAuth client secrets, stdio
environment values). Rows written before sealing are read as they are."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from services.settings import ConfigurationError

SEALED = "fernet:"


class Sealer:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))

    def seal(self, text: str) -> str:
        return SEALED + self._fernet.encrypt(text.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(SEALED):
            return stored
        try:
            return self._fernet.decrypt(stored[len(SEALED) :].encode()).decode()
        except InvalidToken:
            raise ConfigurationError(
                "a server config in the registry was sealed under another key: set MCPGW_REGISTRY_KEY to it"
            ) from None
