"""Wrong admin tokens per client address: past the limit a client is refused (429, with
Retry-After) before its token is checked, on the API and the console's sign-in alike."""

from __future__ import annotations

from unittest import mock

import anyio
import httpx2
import pytest

from services.edge.admin import GUESSES_PER_MINUTE, AdminToken, Guesses, TooManyGuessesError, create_admin_api
from services.edge.console.pages import Console
from services.edge.console.session import ConsoleSessions

TOKEN = "the-admin-token-0123456789"
FORM = {"content-type": "application/x-www-form-urlencoded", "origin": "http://127.0.0.1"}


HELD = AdminToken(TOKEN)


def test_a_client_past_its_wrong_guesses_waits_and_others_do_not() -> None:
    guesses = Guesses(per_minute=3)
    for _ in range(3):
        assert not guesses.admits("10.0.0.1", "guess", HELD)
    with pytest.raises(TooManyGuessesError) as refused:
        guesses.admits("10.0.0.1", TOKEN, HELD)
    assert 0 < refused.value.retry_after <= 60
    assert guesses.admits("10.0.0.2", TOKEN, HELD)


def test_no_token_is_no_guess_and_the_right_one_is_not_counted() -> None:
    guesses = Guesses(per_minute=2)
    for _ in range(5):
        assert not guesses.admits("a", "", HELD)
        assert guesses.admits("a", TOKEN, HELD)
    assert not guesses.admits("a", "guess", AdminToken(""), HELD)
    assert guesses.admits("a", TOKEN, AdminToken("other-token"), HELD)


def test_the_window_moves_on() -> None:
    guesses = Guesses(per_minute=2)
    with mock.patch("time.time", return_value=1_000_000.0):
        guesses.admits("a", "guess", HELD)
        guesses.admits("a", "guess", HELD)
        with pytest.raises(TooManyGuessesError) as refused:
            guesses.admits("a", TOKEN, HELD)
        assert refused.value.retry_after == 60
    with mock.patch("time.time", return_value=1_000_061.0):
        assert guesses.admits("a", TOKEN, HELD)


def test_the_console_refuses_a_guesser_even_the_right_token() -> None:
    console = Console(None, ConsoleSessions(TOKEN, "secret"), None, None).app()  # type: ignore[arg-type]

    async def main() -> None:
        transport = httpx2.ASGITransport(app=console, client=("10.1.2.3", 5000))
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for _ in range(GUESSES_PER_MINUTE):
                wrong = await client.post("/ui/login", content="token=guess", headers=FORM)
                assert wrong.status_code == 401
            refused = await client.post("/ui/login", content=f"token={TOKEN}", headers=FORM)
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
            assert "Too many wrong tokens" in refused.text

    anyio.run(main)


@pytest.mark.parametrize("shared", [True, False])
def test_the_api_counts_wrong_tokens_with_the_console(shared: bool) -> None:
    guesses = Guesses()
    api = create_admin_api(None, None, TOKEN, None, guesses=guesses)  # type: ignore[arg-type]
    for _ in range(GUESSES_PER_MINUTE if shared else 0):
        guesses.admits("10.1.2.3", "guess", HELD)

    async def main() -> None:
        transport = httpx2.ASGITransport(app=api, client=("10.1.2.3", 5000))
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            answer = await client.get("/api/servers", headers={"authorization": "Bearer guess"})
            if shared:
                assert answer.status_code == 429 and int(answer.headers["retry-after"]) > 0
                assert "too many wrong admin tokens" in answer.json()["error"]["message"]
            else:
                assert answer.status_code == 401

    anyio.run(main)
