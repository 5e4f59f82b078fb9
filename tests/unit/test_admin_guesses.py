"""Wrong admin tokens per client address: past the limit a client is refused (429, with
Retry-After) before its token is checked, on the API and the console's sign-in alike."""

from __future__ import annotations

from unittest import mock

import anyio
import httpx2
import pytest

from services.edge.admin import GUESSES_PER_MINUTE, Guesses, create_admin_api
from services.edge.console.pages import Console
from services.edge.console.session import ConsoleSessions

TOKEN = "the-admin-token-0123456789"
FORM = {"content-type": "application/x-www-form-urlencoded", "origin": "http://127.0.0.1"}


def test_a_client_past_its_wrong_guesses_waits_and_others_do_not() -> None:
    guesses = Guesses(per_minute=3)
    for _ in range(3):
        assert guesses.retry_after("10.0.0.1") == 0
        guesses.failed("10.0.0.1")
    assert 0 < guesses.retry_after("10.0.0.1") <= 60
    assert guesses.retry_after("10.0.0.2") == 0


def test_the_window_moves_on() -> None:
    guesses = Guesses(per_minute=2)
    with mock.patch("time.time", return_value=1_000_000.0):
        guesses.failed("a")
        guesses.failed("a")
        assert guesses.retry_after("a") == 60
    with mock.patch("time.time", return_value=1_000_061.0):
        assert guesses.retry_after("a") == 0


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
        guesses.failed("10.1.2.3")

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
