"""Signing in with an OpenID Connect provider, called directly: the ID token's checks, the
claim that names the person, keys' identities, and the person a token carries."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from services import virtual_keys
from services.contracts import registry_pb2
from services.edge.errors import UnauthorizedError
from services.edge.identity.oidc import SignInError, claim_value, verify_id_token
from services.edge.identity.provider import usable_key
from services.edge.identity.tokens import AccessTokens
from services.edge.policy import Governance
from services.edge.signing import Signer, TokenKind

ISSUER = "https://id.example.com"
CLIENT = "mcpgw"
NONCE = "n-0123456789"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def keyset(*entries: tuple[Any, str]) -> jwt.PyJWKSet:
    keys = []
    for private, kid in entries:
        algorithm = RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else ECAlgorithm
        keys.append({**json.loads(algorithm.to_jwk(private.public_key())), "kid": kid, "use": "sig"})
    return jwt.PyJWKSet.from_dict({"keys": keys})


def id_token(private: Any = RSA_KEY, kid: str | None = "k1", algorithm: str = "RS256", **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "u1", "aud": CLIENT, "iat": now, "exp": now + 300, "nonce": NONCE}
    claims.update(changes)
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, private, algorithm, headers)


def verify(token: str, keys: jwt.PyJWKSet | None = None) -> dict[str, Any]:
    keys = keys or keyset((RSA_KEY, "k1"))
    return verify_id_token(token, keys, issuer=ISSUER, client_id=CLIENT, nonce=NONCE)


def test_an_id_token_signed_by_the_provider_for_this_sign_in_passes() -> None:
    assert verify(id_token(email="ada@example.com"))["email"] == "ada@example.com"
    assert verify(id_token(EC_KEY, "e1", "ES256"), keyset((RSA_KEY, "k1"), (EC_KEY, "e1")))["sub"] == "u1"
    # No kid: the provider's only signing key.
    assert verify(id_token(kid=None))["sub"] == "u1"


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"aud": "another-client"}, "issued to another client"),
        ({"aud": [CLIENT, "other"]}, "not authorized for this one"),
        ({"iss": "https://evil.example.com"}, "not issued by https://id.example.com"),
        ({"nonce": "another"}, "belongs to another sign-in"),
        ({"nonce": None}, "belongs to another sign-in"),
        ({"exp": int(time.time()) - 3600}, "has expired"),
        ({"iat": None}, "not valid"),
        ({"sub": None}, "not valid"),
    ],
)
def test_an_id_token_for_something_else_is_refused(changes: dict[str, Any], refusal: str) -> None:
    with pytest.raises(SignInError, match=refusal):
        verify(id_token(**changes))


def test_several_audiences_pass_when_authorized_for_this_client() -> None:
    assert verify(id_token(aud=[CLIENT, "other"], azp=CLIENT))["azp"] == CLIENT


def test_a_symmetric_or_unsigned_id_token_or_a_foreign_key_is_refused() -> None:
    with pytest.raises(SignInError, match="not an asymmetric algorithm"):
        verify(jwt.encode({"sub": "u1"}, "client-secret-0123456789abcdef0123", "HS256"))
    with pytest.raises(SignInError, match="not an asymmetric algorithm"):
        verify(jwt.encode({"sub": "u1"}, "", "none"))
    with pytest.raises(SignInError, match="not valid"):
        verify(id_token(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    # A key the provider does not (yet) publish: the caller fetches its keys again.
    with pytest.raises(KeyError):
        verify(id_token(kid="rotated"))
    with pytest.raises(SignInError, match="not a JWT"):
        verify("not-a-jwt")


def test_the_claim_naming_the_person_must_be_there_and_an_email_verified() -> None:
    assert claim_value({"email": " ada@example.com "}, "email") == "ada@example.com"
    assert claim_value({"email": "ada@example.com", "email_verified": True}, "email") == "ada@example.com"
    assert claim_value({"preferred_username": "ada"}, "preferred_username") == "ada"
    with pytest.raises(SignInError, match="has not verified"):
        claim_value({"email": "ada@example.com", "email_verified": False}, "email")
    for claims in ({}, {"email": ""}, {"email": ["ada@example.com"]}):
        with pytest.raises(SignInError, match="no 'email' claim"):
            claim_value(claims, "email")


def test_the_consoles_roles_need_an_email_said_to_be_verified() -> None:
    verified = {"email": "ada@example.com", "email_verified": True}
    assert claim_value(verified, "email", verified=True) == "ada@example.com"
    for claims in ({"email": "ada@example.com"}, {"email": "ada@example.com", "email_verified": "true"}):
        with pytest.raises(SignInError, match="does not say it verified"):
            claim_value(claims, "email", verified=True)
    with pytest.raises(SignInError, match="has not verified"):
        claim_value({"email": "ada@example.com", "email_verified": False}, "email", verified=True)
    # Another claim than the email needs no email_verified.
    assert claim_value({"preferred_username": "ada"}, "preferred_username", verified=True) == "ada"


def test_the_pkce_verifier_is_derived_from_the_state_by_holders_of_the_secret() -> None:
    state = Signer("shared").sign(TokenKind.OIDC, "request.1")
    verifier = Signer("shared").derive(TokenKind.OIDC, state)
    assert (
        verifier
        == Signer("shared").derive(TokenKind.OIDC, state)
        != Signer("other").derive(TokenKind.OIDC, state)
    )
    assert 43 <= len(verifier) <= 128
    # No token's signature is a derived secret.
    assert Signer("shared").sign(TokenKind.OIDC, "derived." + state).rpartition(".")[2] != verifier


def governance(*keys: tuple[str, list[str], bool]) -> Governance:
    snapshot = registry_pb2.Snapshot()
    for key_id, identities, active in keys:
        snapshot.governance.keys.add(
            id=key_id,
            name=key_id,
            secret_hash=virtual_keys.digest(key_id),
            active=active,
            identities=identities,
        )
    return Governance.from_snapshot(snapshot)


def test_a_person_acts_as_the_key_naming_them_exactly_else_their_domain() -> None:
    rules = governance(("vk-ada", ["ada@example.com"], True), ("vk-all", ["*@example.com"], True))
    assert rules.identified("Ada@Example.COM").id == "vk-ada"
    assert rules.identified("bob@example.com").id == "vk-all"
    assert rules.assigned("bob@sub.example.com") is None
    with pytest.raises(UnauthorizedError, match=re.escape("no virtual key is assigned to eve@elsewhere.net")):
        rules.identified("eve@elsewhere.net")
    with pytest.raises(UnauthorizedError, match="deactivated"):
        governance(("vk-off", ["ada@example.com"], False)).identified("ada@example.com")


def test_a_grant_ends_when_its_person_is_no_longer_the_keys() -> None:
    before = governance(("vk-ada", ["ada@example.com"], True))
    after = governance(("vk-ada", ["someone@example.com"], True))
    moved = governance(("vk-ada", [], True), ("vk-other", ["ada@example.com"], True))
    assert usable_key(before, "vk-ada", "ada@example.com") is not None
    assert usable_key(after, "vk-ada", "ada@example.com") is None
    assert usable_key(moved, "vk-ada", "ada@example.com") is None
    # A grant made by presenting the key names no person, and lives with the key.
    assert usable_key(after, "vk-ada") is not None


def test_an_access_token_carries_the_person_to_every_edge() -> None:
    tokens = AccessTokens("shared", 600)
    claims = tokens.claims("vk-ada", "g1", "c1", ["mcp"], f"{ISSUER}/mcp", "ada@example.com")
    issued = tokens.issue(ISSUER, claims)
    assert AccessTokens("shared", 600).verify(issued, ISSUER, f"{ISSUER}/mcp").person == "ada@example.com"
    plain = tokens.issue(ISSUER, tokens.claims("vk-ada", "g1", "c1", ["mcp"], f"{ISSUER}/mcp"))
    assert tokens.verify(plain, ISSUER, f"{ISSUER}/mcp").person == ""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ada@example.com", ""),
        ("*@example.com", ""),
        ("ada", ""),
        ("", "1 to 256"),
        ("a" * 257, "1 to 256"),
        ("ada @example.com", "whitespace"),
        ("*@", "*@example.com"),
        ("*@a@b", "*@example.com"),
        ("ad*@example.com", "only allowed"),
    ],
)
def test_identities_are_checked(text: str, problem: str) -> None:
    found = virtual_keys.identity_problem(text)
    assert (problem in found and bool(found)) if problem else found == ""
