"""Discovery follows only metadata that speaks for what it was fetched for: the resource
metadata for this server, the issuer the resource named, and endpoints over https (or on
the server's own host)."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from services.registry.discovery import DiscoveryError, discover

pytestmark = pytest.mark.anyio

SERVER = "https://mcp.example.test/mcp"
ISSUER = "https://auth.example.test"


def metadata(**changed: Any) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "registration_endpoint": f"{ISSUER}/register",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        **changed,
    }


def served(resource: dict[str, Any], server: dict[str, Any]) -> httpx2.AsyncClient:
    """A downstream whose 401 points at its resource metadata, and its authorization server."""
    prm = "https://mcp.example.test/.well-known/oauth-protected-resource/mcp"

    def answer(request: httpx2.Request) -> httpx2.Response:
        url = str(request.url)
        if url == SERVER:
            return httpx2.Response(401, headers={"www-authenticate": f'Bearer resource_metadata="{prm}"'})
        if url == prm:
            return httpx2.Response(200, json=resource)
        if url.startswith(f"{ISSUER}/.well-known/"):
            return httpx2.Response(200, json=server)
        return httpx2.Response(404)

    return httpx2.AsyncClient(transport=httpx2.MockTransport(answer))


async def test_metadata_that_speaks_for_the_server_is_followed() -> None:
    async with served({"resource": SERVER, "authorization_servers": [ISSUER]}, metadata()) as http:
        found = await discover(SERVER, http)
    assert (found.authorize_url, found.token_url, found.resource) == (
        f"{ISSUER}/authorize",
        f"{ISSUER}/token",
        SERVER,
    )


@pytest.mark.parametrize(
    ("resource", "server", "refusal"),
    [
        # Resource metadata for another server: tokens would be asked for it.
        ({"resource": "https://other.test/mcp", "authorization_servers": [ISSUER]}, metadata(), "is for"),
        # Metadata issued by another issuer than the one the resource named (a mix-up).
        (
            {"resource": SERVER, "authorization_servers": [ISSUER]},
            metadata(issuer="https://evil.test"),
            "issued by",
        ),
        # An endpoint over plain http on another host: an internal address, say.
        (
            {"resource": SERVER, "authorization_servers": [ISSUER]},
            metadata(token_endpoint="http://169.254.169.254/token"),
            "neither https",
        ),
        # An authorization server named over plain http.
        ({"resource": SERVER, "authorization_servers": ["http://10.0.0.1"]}, metadata(), "neither https"),
    ],
)
async def test_metadata_that_does_not_is_refused(
    resource: dict[str, Any], server: dict[str, Any], refusal: str
) -> None:
    async with served(resource, server) as http:
        with pytest.raises(DiscoveryError, match=refusal):
            await discover(SERVER, http)
