"""Access tokens the edge issues: JWTs (the RFC 9068 profile) signed with a key every edge
derives from the shared session secret, so any edge verifies one without a round trip.

A token names its grant (`jti` is the grant id, so a revoked grant ends its tokens), the
virtual key whose policy it carries, the person who signed in as that key with the
OpenID Connect provider (if one did), the client, the scopes and the resource (`aud`) it
was issued for; it lives minutes, its grant's refresh token days.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
TOKEN_TYPE = "at+jwt"  # noqa: S105 (RFC 9068's media type, not a secret)
# The subject of a grant: the virtual key whose policy it carries.
KEY_SUBJECT = "vk:"
# The claim naming the person who signed in as that key with the OpenID Connect provider.
PERSON_CLAIM = "mcpgw_person"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says."""

    grant_id: str
    key_id: str
    client_id: str
    scopes: tuple[str, ...]
    resource: str
    expires_at: int
    person: str = ""


class InvalidTokenError(Exception):
    """Not a token this gateway issued for the resource, or an expired one (the message says which)."""


class AccessTokens:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        # Without a shared secret, a random key: tokens are then good on this process only.
        seed = secret.encode() if secret else secrets.token_bytes(32)
        self._key = hmac.new(seed, b"mcpgw oauth access token v1", hashlib.sha256).digest()
        self.ttl_seconds = ttl_seconds

    def issue(self, issuer: str, claims: AccessClaims) -> str:
        now = int(time.time())
        payload = {
            "iss": issuer,
            "sub": KEY_SUBJECT + claims.key_id,
            "aud": claims.resource,
            "client_id": claims.client_id,
            "scope": " ".join(claims.scopes),
            "jti": claims.grant_id,
            "iat": now,
            "exp": claims.expires_at,
        }
        if claims.person:
            payload[PERSON_CLAIM] = claims.person
        return jwt.encode(payload, self._key, algorithm=ALGORITHM, headers={"typ": TOKEN_TYPE})

    def claims(
        self, key_id: str, grant_id: str, client_id: str, scopes: list[str], resource: str, person: str = ""
    ) -> AccessClaims:
        """The claims of a token issued now."""
        expires_at = int(time.time()) + self.ttl_seconds
        return AccessClaims(grant_id, key_id, client_id, tuple(scopes), resource, expires_at, person)

    def verify(self, token: str, issuer: str, resource: str) -> AccessClaims:
        """The claims of a token issued by `issuer` for `resource`; InvalidTokenError else."""
        return self._decode(token, issuer, resource)

    def inspect(self, token: str, issuer: str) -> AccessClaims:
        """The claims of a token issued by `issuer`, whatever it is for (to revoke it)."""
        return self._decode(token, issuer, None)

    def _decode(self, token: str, issuer: str, resource: str | None) -> AccessClaims:
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=resource,
                issuer=issuer,
                options={
                    "require": ["exp", "iat", "aud", "iss", "sub", "jti"],
                    "verify_aud": resource is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("the access token has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidTokenError(f"the access token was not issued for {resource}") from None
        except jwt.InvalidIssuerError:
            raise InvalidTokenError(f"the access token was not issued by {issuer}") from None
        except jwt.PyJWTError:
            raise InvalidTokenError("the access token was not issued by this gateway") from None
        subject = str(payload["sub"])
        if not subject.startswith(KEY_SUBJECT):
            raise InvalidTokenError("the access token names no identity this gateway knows")
        return AccessClaims(
            grant_id=str(payload["jti"]),
            key_id=subject[len(KEY_SUBJECT) :],
            client_id=str(payload.get("client_id", "")),
            scopes=tuple(str(payload.get("scope", "")).split()),
            resource=str(payload["aud"]),
            expires_at=int(payload["exp"]),
            person=str(payload.get(PERSON_CLAIM, "")),
        )


def looks_like_jwt(credential: str) -> bool:
    """Whether a bearer credential has a JWT's shape (virtual keys never do)."""
    return credential.startswith("eyJ") and credential.count(".") == 2
