import pytest

from services.edge.errors import SessionNotFoundError
from services.edge.sessions import SessionCodec
from services.edge.signing import Signer


def test_a_token_round_trips_on_every_edge_sharing_the_secret() -> None:
    token = SessionCodec(Signer("shared"), 60).issue("2025-06-18", "cursor", "vk-1")
    session = SessionCodec(Signer("shared"), 60).resolve(token)
    assert (session.protocol_version, session.client_name, session.key_id) == ("2025-06-18", "cursor", "vk-1")


def test_a_token_signed_with_another_secret_is_not_found() -> None:
    token = SessionCodec(Signer("one"), 60).issue("2025-06-18")
    with pytest.raises(SessionNotFoundError):
        SessionCodec(Signer("two"), 60).resolve(token)


@pytest.mark.parametrize(
    "mangle", [lambda t: t + "x", lambda t: t.replace(".", "", 1), lambda t: "s1.e30.AAAA"]
)
def test_tampered_tokens_are_not_found(mangle: object) -> None:
    codec = SessionCodec(Signer("s"), 60)
    token = codec.issue("2025-06-18")
    with pytest.raises(SessionNotFoundError):
        codec.resolve(mangle(token))  # type: ignore[operator]


def test_expired_and_ended_sessions_are_not_found() -> None:
    expired = SessionCodec(Signer("s"), -1)
    with pytest.raises(SessionNotFoundError, match="expired"):
        expired.resolve(expired.issue("2025-06-18"))
    ended: set[str] = set()
    codec = SessionCodec(Signer("s"), 60, ended.__contains__)
    token = codec.issue("2025-06-18")
    ended.add(codec.resolve(token).id)
    with pytest.raises(SessionNotFoundError, match="ended"):
        codec.resolve(token)
