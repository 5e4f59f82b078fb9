"""Signing in at the consent page with the operator's OpenID Connect provider: the
authorization code flow with PKCE, and the ID token's checks (OpenID Connect Core 1.0,
3.1.3.7), which yield the claim that names the person. A provider may keep the claims that
scopes ask for out of the ID token (Core 5.4): they are then read from its UserInfo
endpoint, whose `sub` must be the ID token's.

Discovery and the provider's keys are fetched when first needed and kept; an ID token
signed by a key not seen yet fetches the keys again, at most once per `KEYS_REFETCH_SECONDS`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
import httpx2
import jwt
from pydantic import BaseModel, ConfigDict, ValidationError

from services.edge.signing import b64
from services.oauth import TokenEndpointError, request_token
from services.settings import ConfigurationError, EdgeSettings

CALLBACK_PATH = "/oauth/oidc/callback"
HTTP_SECONDS = 10.0
METADATA_SECONDS = 3600.0
KEYS_REFETCH_SECONDS = 60.0
LEEWAY_SECONDS = 60
# Asymmetric only: an HMAC-signed ID token would be keyed by the client secret, which the
# gateway holds too, so it would prove nothing about who signed it.
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class SignInError(Exception):
    """The provider was unreachable, refused, or vouched for no one this gateway accepts;
    the message says which, and is shown to the person."""


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    claim: str
    scopes: str
    name: str

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> OidcConfig | None:
        """The provider the settings name; None when sign-in with a provider is off."""
        if not settings.oidc_issuer:
            return None
        if urlsplit(settings.oidc_issuer).scheme not in ("https", "http"):
            raise ConfigurationError(f"MCPGW_OIDC_ISSUER must be an https URL, not {settings.oidc_issuer!r}")
        if not settings.oidc_client_id:
            raise ConfigurationError("MCPGW_OIDC_ISSUER is set: set MCPGW_OIDC_CLIENT_ID too")
        if "openid" not in settings.oidc_scopes.split():
            raise ConfigurationError("MCPGW_OIDC_SCOPES must include openid")
        return cls(
            issuer=settings.oidc_issuer.rstrip("/"),
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret,
            claim=settings.oidc_claim,
            scopes=settings.oidc_scopes,
            name=settings.oidc_name or urlsplit(settings.oidc_issuer).hostname or settings.oidc_issuer,
        )


class ProviderMetadata(BaseModel):
    """The part of the provider's discovery document (OpenID Connect Discovery 1.0) used here."""

    model_config = ConfigDict(extra="ignore")

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None


def challenge_of(verifier: str) -> str:
    """The PKCE S256 code challenge of a verifier (RFC 7636)."""
    return b64(hashlib.sha256(verifier.encode()).digest())


def verify_id_token(
    token: str, keys: jwt.PyJWKSet, *, issuer: str, client_id: str, nonce: str
) -> dict[str, Any]:
    """The claims of an ID token the provider signed for this client and this sign-in;
    SignInError naming the check that failed. KeyError when its key is not in `keys`."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise SignInError("the provider's ID token is not a JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise SignInError(
            f"the provider's ID token is signed with {algorithm!r}, not an asymmetric algorithm"
        )
    kid = header.get("kid")
    if kid is None:
        usable = [k for k in keys.keys if k.public_key_use in (None, "sig")]
        if len(usable) != 1:
            raise KeyError("the ID token names no key, and the provider publishes several")
        key = usable[0]
    else:
        key = keys[kid]
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            audience=client_id,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError:
        raise SignInError("the provider's ID token has expired") from None
    except jwt.InvalidAudienceError:
        raise SignInError("the provider's ID token was issued to another client") from None
    except jwt.InvalidIssuerError:
        raise SignInError(f"the ID token was not issued by {issuer}") from None
    except jwt.PyJWTError as exc:
        raise SignInError(f"the provider's ID token is not valid: {exc}") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise SignInError("the provider's ID token is for several clients and not authorized for this one")
    if claims.get("nonce") != nonce:
        raise SignInError("the provider's ID token belongs to another sign-in")
    return claims


def claim_value(claims: dict[str, Any], name: str, verified: bool = False) -> str:
    """The claim that names the person; SignInError when it is absent or, for an email,
    unverified: `email_verified` false or, with `verified` (the console's roles), not true."""
    value = claims.get(name)
    if not isinstance(value, str) or not value.strip():
        raise SignInError(f"the provider did not say who you are: its ID token has no {name!r} claim")
    if name == "email" and claims.get("email_verified") is False:
        raise SignInError(f"the provider has not verified the address {value}")
    if name == "email" and verified and claims.get("email_verified") is not True:
        raise SignInError(f"the provider does not say it verified the address {value}")
    return value.strip()


class OpenIDProvider:
    """The operator's provider, as the consent page's sign-in button reaches it."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._lock = anyio.Lock()
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._keys: jwt.PyJWKSet | None = None
        self._keys_at = 0.0

    async def authorization_url(self, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
        metadata = await self._discovered()
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.config.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge_of(verifier),
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return f"{metadata.authorization_endpoint}{separator}{urlencode(query)}"

    async def identify(
        self, code: str, redirect_uri: str, verifier: str, nonce: str, verified: bool = False
    ) -> str:
        """The claim naming the person whose sign-in returned `code`; SignInError else (and,
        with `verified`, when an email claim is not said to be verified)."""
        metadata = await self._discovered()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        try:
            answer = await request_token(
                metadata.token_endpoint, self.config.client_id, self.config.client_secret, form
            )
        except TokenEndpointError as exc:
            raise SignInError(str(exc)) from None
        token = answer.get("id_token")
        if not isinstance(token, str):
            raise SignInError("the provider answered without an ID token (is the openid scope asked for?)")
        checks = {"issuer": metadata.issuer, "client_id": self.config.client_id, "nonce": nonce}
        try:
            claims = verify_id_token(token, await self._signing_keys(), **checks)
        except KeyError:
            # Keys rotate: fetch them again, once, before refusing.
            try:
                claims = verify_id_token(token, await self._signing_keys(refresh=True), **checks)
            except KeyError:
                raise SignInError(
                    "the provider's ID token is signed with a key it does not publish"
                ) from None
        if self.config.claim not in claims and metadata.userinfo_endpoint and "access_token" in answer:
            info = await _userinfo(metadata.userinfo_endpoint, str(answer["access_token"]), claims["sub"])
            claims = {**info, **claims}
        return claim_value(claims, self.config.claim, verified)

    async def _discovered(self) -> ProviderMetadata:
        async with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_SECONDS:
                url = f"{self.config.issuer}/.well-known/openid-configuration"
                try:
                    metadata = ProviderMetadata.model_validate(await _get_json(url))
                except ValidationError as exc:
                    raise SignInError(
                        f"{url} is not OpenID Connect discovery: {exc.errors()[0]['msg']}"
                    ) from None
                if metadata.issuer.rstrip("/") != self.config.issuer:
                    raise SignInError(f"{url} names the issuer {metadata.issuer}, not {self.config.issuer}")
                self._metadata, self._metadata_at = metadata, time.monotonic()
            return self._metadata

    async def _signing_keys(self, refresh: bool = False) -> jwt.PyJWKSet:
        metadata = await self._discovered()
        async with self._lock:
            stale = refresh and time.monotonic() - self._keys_at > KEYS_REFETCH_SECONDS
            if self._keys is None or stale:
                try:
                    self._keys = jwt.PyJWKSet.from_dict(await _get_json(metadata.jwks_uri))
                except jwt.PyJWTError as exc:
                    raise SignInError(
                        f"the provider's keys at {metadata.jwks_uri} are unusable: {exc}"
                    ) from None
                self._keys_at = time.monotonic()
            return self._keys


async def _userinfo(url: str, access_token: str, subject: str) -> dict[str, Any]:
    """The UserInfo claims (Core 5.3), when they are about the ID token's subject."""
    info = await _get_json(url, {"authorization": f"Bearer {access_token}"})
    if not isinstance(info, dict):
        raise SignInError("the provider's UserInfo answer is not a JSON object")
    if info.get("sub") != subject:
        raise SignInError("the provider's UserInfo is about someone other than its ID token")
    return info


async def _get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    try:
        async with httpx2.AsyncClient(timeout=HTTP_SECONDS) as http:
            response = await http.get(url, headers={"accept": "application/json", **(headers or {})})
    except httpx2.HTTPError as exc:
        raise SignInError(f"the sign-in provider is unreachable at {url}: {exc}") from None
    if response.status_code != 200:
        raise SignInError(f"the sign-in provider answered {response.status_code} at {url}")
    try:
        return response.json()
    except ValueError:
        raise SignInError(f"the sign-in provider answered something that is not JSON at {url}") from None
