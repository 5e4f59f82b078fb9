"""Virtual key secrets: minted and hashed by the registry, recognised by edges.

A secret is `vk_` and 192 random bits. Only its SHA-256 is stored: the secret carries
enough entropy that a slow hash would buy nothing, and edges hash every request's key.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "vk_"
# How much of a secret is kept in the clear, so people can tell their keys apart.
SHOWN = 8


def mint() -> str:
    return PREFIX + secrets.token_urlsafe(24)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def shown_prefix(secret: str) -> str:
    return secret[:SHOWN]
