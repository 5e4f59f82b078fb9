"""Client ID Metadata Documents, called directly: which client ids name one, what a
document must say, and the hosts the edge will not fetch one from."""

from __future__ import annotations

from typing import Any

import pytest

from services.edge.identity.client_metadata import (
    ClientDocumentError,
    ClientDocuments,
    client_of,
    is_document_url,
)

URL = "https://app.example.com/oauth/client.json"
REDIRECT = "http://127.0.0.1:33418/callback"


def test_only_an_https_url_with_a_path_names_a_document() -> None:
    assert is_document_url(URL)
    for client_id in (
        "https://app.example.com",
        "https://app.example.com/",
        "http://app.example.com/c.json",
        "abc",
    ):
        assert not is_document_url(client_id), client_id


def test_a_document_describing_its_own_url_is_a_public_client() -> None:
    client = client_of(URL, {"client_id": URL, "client_name": "App", "redirect_uris": [REDIRECT]})
    assert client.client_id == URL and client.token_endpoint_auth_method == "none"
    assert [str(u) for u in client.redirect_uris or []] == [REDIRECT]


@pytest.mark.parametrize(
    ("document", "refusal"),
    [
        (["not", "an", "object"], "not a JSON object"),
        ({"client_id": "https://evil.example.com/c.json", "redirect_uris": [REDIRECT]}, "not its own URL"),
        ({"client_id": URL, "redirect_uris": [REDIRECT], "client_secret": "s"}, "client secret"),
        (
            {
                "client_id": URL,
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            "public",
        ),
        ({"client_id": URL}, "no redirect_uris"),
        ({"client_id": URL, "redirect_uris": ["not a url"]}, "redirect_uris"),
    ],
)
def test_a_document_that_does_not_describe_a_public_client_is_refused(document: Any, refusal: str) -> None:
    with pytest.raises(ClientDocumentError, match=refusal):
        client_of(URL, document)


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "169.254.169.254", "[::1]"])
async def test_documents_on_loopback_or_private_addresses_are_not_fetched(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert await ClientDocuments().client(f"https://{host}:9/client.json") is None
    assert "resolves to a non-public address" in caplog.text
