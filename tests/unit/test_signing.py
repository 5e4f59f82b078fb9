import pytest

from services.edge.signing import Signer, TokenKind


def test_a_token_carries_its_text_to_every_edge_sharing_the_secret() -> None:
    token = Signer("shared").sign(TokenKind.REQUEST_STATE, "edge-1.abc")
    assert Signer("shared").verify(TokenKind.REQUEST_STATE, token) == "edge-1.abc"
    assert Signer("other").verify(TokenKind.REQUEST_STATE, token) is None


@pytest.mark.parametrize("issued", list(TokenKind))
@pytest.mark.parametrize("offered", list(TokenKind))
def test_a_token_of_one_kind_is_never_taken_for_another(issued: TokenKind, offered: TokenKind) -> None:
    signer = Signer("s")
    token = signer.sign(issued, "text")
    assert (signer.verify(offered, token) is not None) == (issued is offered)


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "s1",
        "s1.text.",
        "s1.text.é",  # not ASCII: compared as bytes, never a TypeError
        "s1.text.\udcff",
        "rs1.s1.text.AAAA",  # a kind smuggled inside the text
        "s1.te\x00xt.AAAA",
    ],
)
def test_forged_and_malformed_tokens_are_refused_without_raising(token: str) -> None:
    assert Signer("s").verify(TokenKind.SESSION, token) is None


def test_the_kind_is_signed_with_the_text() -> None:
    signer = Signer("s")
    token = signer.sign(TokenKind.SESSION, "text")
    assert signer.verify(TokenKind.TASK, token.replace("s1.", "task1.", 1)) is None
