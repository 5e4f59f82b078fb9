"""The OAuth 2.0 token endpoint (RFC 6749 section 3.2) as registry and connector reach it:
one request, one way to authenticate the client, one error.

registry exchanges an authorization code (with its PKCE verifier) there; the connector
asks for client-credentials and refresh-token grants. Both go through `request_token`, so
a fix to client authentication or error handling is made once. Values may be `env.NAME`
references, resolved here and never logged.
"""

from __future__ import annotations

import secrets
import time
from enum import StrEnum
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from services.references import resolve

TOKEN_TIMEOUT_SECONDS = 10.0


class ClientAuth(StrEnum):
    """How the client authenticates at the token endpoint (RFC 7591's names)."""

    BASIC = "client_secret_basic"
    POST = "client_secret_post"
    # RFC 7523: a JWT signed with the client's private key (then its `client_secret`).
    PRIVATE_KEY_JWT = "private_key_jwt"
    NONE = "none"


JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 60


def client_assertion(client_id: str, token_url: str, private_key_pem: str) -> str:
    """An RFC 7523 client assertion: issued by and about the client, for the token endpoint,
    good for a minute and once (`jti`); RS256, ES256 or EdDSA as the key's type says."""
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise TokenEndpointError(f"the client's private key is not a PEM private key: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = "ES256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = "EdDSA"
    else:
        kind = type(key).__name__
        raise TokenEndpointError(f"the client's private key is a {kind}: use RSA, EC or Ed25519")
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "jti": secrets.token_urlsafe(16),
        "iat": now,
        "exp": now + ASSERTION_SECONDS,
    }
    return jwt.encode(claims, key, algorithm=algorithm)


class TokenEndpointError(ConnectionError):
    """The token endpoint could not be reached, or refused, or answered no token JSON;
    `error` is a refusal's RFC 6749 error code (such as "invalid_grant"), else ""."""

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error


async def request_token(
    token_url: str,
    client_id: str,
    client_secret: str,
    form: dict[str, str],
    auth: ClientAuth = ClientAuth.BASIC,
) -> dict[str, Any]:
    """The token endpoint's JSON answer to `form`. A confidential client (with a secret)
    authenticates with HTTP Basic, in the form (client_secret_post), or with an assertion
    signed by its private key (private_key_jwt); a public one names itself in the form."""
    client_id = resolve(client_id)
    try:
        async with httpx2.AsyncClient(timeout=TOKEN_TIMEOUT_SECONDS) as client:
            if client_secret and auth is ClientAuth.BASIC:
                response = await client.post(
                    resolve(token_url), data=form, auth=(client_id, resolve(client_secret))
                )
            elif client_secret and auth is ClientAuth.PRIVATE_KEY_JWT:
                url = resolve(token_url)
                asserted = {
                    **form,
                    "client_id": client_id,
                    "client_assertion_type": JWT_BEARER,
                    "client_assertion": client_assertion(client_id, url, resolve(client_secret)),
                }
                response = await client.post(url, data=asserted)
            elif client_secret and auth is ClientAuth.POST:
                posted = {**form, "client_id": client_id, "client_secret": resolve(client_secret)}
                response = await client.post(resolve(token_url), data=posted)
            else:
                response = await client.post(resolve(token_url), data={**form, "client_id": client_id})
    except httpx2.HTTPError as exc:
        raise TokenEndpointError(f"the token endpoint is unreachable: {exc}") from None
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        # Only RFC 6749's error fields are named: the rest of a body may echo what was sent.
        code = body.get("error") if isinstance(body, dict) else None
        code = code[:64] if isinstance(code, str) else ""
        described = body.get("error_description") if isinstance(body, dict) else None
        detail = f": {described[:160]}" if isinstance(described, str) else ""
        raise TokenEndpointError(
            f"the token endpoint refused ({response.status_code}, {code or 'no error code'}){detail}", code
        )
    if not isinstance(body, dict):
        raise TokenEndpointError("the token endpoint answered something that is not a JSON object")
    return body
