"""What the gateway needs to be an OAuth client of a downstream whose config leaves it out:
its authorization server's endpoints, found by the MCP authorization revision's discovery
(RFC 9728 protected-resource metadata, then RFC 8414 or OpenID Connect metadata), and a
client id, got by Dynamic Client Registration (RFC 7591).

The discovery URLs, the metadata models and the registration request are the `mcp` SDK's
own client-side pieces; this module only walks them in order and names what failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2
from mcp.client.auth import OAuthRegistrationError
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    create_client_registration_request,
    create_oauth_metadata_request,
    extract_resource_metadata_from_www_auth,
    handle_auth_metadata_response,
    handle_protected_resource_response,
    handle_registration_response,
)
from mcp.shared.auth import OAuthClientMetadata, OAuthMetadata
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url

from services.oauth import ClientAuth

# Each request of it; registry bounds the whole to 20 s.
DISCOVERY_TIMEOUT_SECONDS = 5.0
CLIENT_NAME = "mcpgw"


class DiscoveryError(Exception):
    """The downstream's authorization server could not be found, or refused to register us."""


@dataclass(frozen=True, slots=True)
class AuthorizationServer:
    authorize_url: str
    token_url: str
    registration_url: str
    # The resource indicator to ask tokens for: the protected resource's own name for itself.
    resource: str
    # What the server lets a client authenticate with at its token endpoint.
    auth_methods: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    client_id: str
    client_secret: str
    auth: ClientAuth


async def discover(server_url: str, http: httpx2.AsyncClient) -> AuthorizationServer:
    """The authorization server of the MCP server at `server_url`. Metadata must speak for
    what it was fetched for: the resource for this server (RFC 9728 section 3.3), the issuer
    for the one named (RFC 8414 section 3.3), and every URL it names is https, or http on
    the server's own host (a local setup)."""
    probe = await _get(http, server_url, "the server")
    challenge = extract_resource_metadata_from_www_auth(probe) if probe.status_code == 401 else None
    issuer, resource = None, resource_url_from_server_url(server_url)
    for url in build_protected_resource_metadata_discovery_urls(challenge, server_url):
        _check_url(url, server_url, "resource metadata")
        protected = await handle_protected_resource_response(await _get(http, url, "its resource metadata"))
        if protected is not None and protected.authorization_servers:
            if not check_resource_allowed(resource, str(protected.resource)):
                raise DiscoveryError(
                    f"the resource metadata at {url} is for {protected.resource}, not {resource}"
                )
            issuer = str(protected.authorization_servers[0])
            resource = str(protected.resource)
            break
    metadata = None
    for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, server_url):
        _check_url(url, server_url, "authorization server metadata")
        carry_on, metadata = await handle_auth_metadata_response(await _get(http, url, "its OAuth metadata"))
        if metadata is not None or not carry_on:
            break
    if metadata is None:
        where = issuer or server_url
        raise DiscoveryError(f"no OAuth authorization server metadata was found for {where}")
    expected = issuer or _origin(server_url)
    if str(metadata.issuer).rstrip("/") != expected.rstrip("/"):
        raise DiscoveryError(
            f"the authorization server metadata is issued by {metadata.issuer}, not {expected}"
        )
    for what, named in (
        ("authorization endpoint", metadata.authorization_endpoint),
        ("token endpoint", metadata.token_endpoint),
        ("registration endpoint", metadata.registration_endpoint),
    ):
        if named is not None:
            _check_url(str(named), server_url, what)
    return AuthorizationServer(
        str(metadata.authorization_endpoint),
        str(metadata.token_endpoint),
        "" if metadata.registration_endpoint is None else str(metadata.registration_endpoint),
        resource,
        tuple(metadata.token_endpoint_auth_methods_supported or ("client_secret_basic",)),
    )


async def register(
    server: AuthorizationServer,
    redirect_uris: list[str],
    scope: str,
    http: httpx2.AsyncClient,
    registration_url: str = "",
) -> RegisteredClient:
    """The gateway registered as a confidential web client (a public one where the server
    takes no client secrets), for every callback it has."""
    url = registration_url or server.registration_url
    if not url:
        raise DiscoveryError("the authorization server offers no client registration: configure client_id")
    method = next(
        (m for m in (ClientAuth.BASIC, ClientAuth.POST) if m in server.auth_methods), ClientAuth.NONE
    )
    client = OAuthClientMetadata.model_validate(
        {
            "client_name": CLIENT_NAME,
            "redirect_uris": redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": method.value,
            "application_type": "web",
            "scope": scope or None,
        }
    )
    metadata = OAuthMetadata.model_validate(
        {"issuer": url, "authorization_endpoint": server.authorize_url, "token_endpoint": server.token_url}
        | {"registration_endpoint": url}
    )
    try:
        response = await http.send(create_client_registration_request(metadata, client, url))
        registered = await handle_registration_response(response)
    except httpx2.HTTPError as exc:
        raise DiscoveryError(f"client registration at {url} failed: {exc}") from None
    except OAuthRegistrationError as exc:
        raise DiscoveryError(str(exc)) from None
    return RegisteredClient(registered.client_id or "", registered.client_secret or "", method)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _check_url(url: str, server_url: str, what: str) -> None:
    """A URL discovery found may be followed: https, or http on the server's own host."""
    parts, server = urlsplit(url), urlsplit(server_url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname == server.hostname):
        return
    raise DiscoveryError(f"the {what} {url} is neither https nor on the server's own host")


async def _get(http: httpx2.AsyncClient, url: str, what: str) -> httpx2.Response:
    try:
        return await http.send(create_oauth_metadata_request(url))
    except httpx2.HTTPError as exc:
        raise DiscoveryError(f"cannot reach {what} at {url}: {exc}") from None
