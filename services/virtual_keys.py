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


# What a key's `identities` hold: a claim value an OpenID Connect provider vouches for.
DOMAIN_PREFIX = "*@"
MAX_IDENTITY = 256


def identity(text: str) -> str:
    """The form an identity is stored and matched in (claims compare case-insensitively)."""
    return text.strip().lower()


def identity_problem(text: str) -> str:
    """Why `text` cannot be a key's identity ("" when it can)."""
    value = identity(text)
    if not value or len(value) > MAX_IDENTITY:
        return f"must be 1 to {MAX_IDENTITY} characters"
    if any(c.isspace() for c in value):
        return "must not contain whitespace"
    if value.startswith(DOMAIN_PREFIX):
        domain = value[len(DOMAIN_PREFIX) :]
        if not domain or "@" in domain or "*" in domain:
            return 'a domain is written "*@example.com"'
    elif "*" in value:
        return 'a wildcard is only allowed as "*@domain"'
    return ""


def identity_domain(claim: str) -> str:
    """The domain entry a claim value would match ("" when it is not an address)."""
    _, at, domain = identity(claim).rpartition("@")
    return f"{DOMAIN_PREFIX}{domain}" if at and domain else ""
