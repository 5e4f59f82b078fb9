"""Clients that register by Client ID Metadata Document (MCP authorization, revision
2025-11-25): the client id is an https URL whose JSON document describes the client, and
the gateway reads it there instead of keeping a registration.

A document is fetched when an unknown URL first arrives and kept `CACHE_SECONDS`. The
fetch is bounded (time, size, no redirects) and, unless the operator allows it, refused
for hosts that resolve to loopback or private addresses, so a client id cannot make the
gateway probe its own network.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from urllib.parse import urlsplit

import anyio
import httpx2
import orjson
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

log = logging.getLogger(__name__)

FETCH_SECONDS = 5.0
MAX_BYTES = 5 * 1024
CACHE_SECONDS = 300.0
CACHED = 1000


class ClientDocumentError(Exception):
    """The client id's document could not be read, or does not describe that client."""


def is_document_url(client_id: str) -> bool:
    """Whether a client id names a metadata document: an https URL with a path."""
    parts = urlsplit(client_id)
    return parts.scheme == "https" and bool(parts.hostname) and parts.path not in ("", "/")


def client_of(client_id: str, document: object) -> OAuthClientInformationFull:
    """The client a document describes; ClientDocumentError saying what is wrong with it."""
    if not isinstance(document, dict):
        raise ClientDocumentError("the document is not a JSON object")
    if document.get("client_id") != client_id:
        raise ClientDocumentError("the document's client_id is not its own URL")
    if "client_secret" in document or "client_secret_expires_at" in document:
        raise ClientDocumentError("a metadata document may not carry a client secret")
    method = document.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise ClientDocumentError(
            f"token_endpoint_auth_method {method!r}: only public clients ('none') are supported"
        )
    if not document.get("redirect_uris"):
        raise ClientDocumentError("the document has no redirect_uris")
    try:
        return OAuthClientInformationFull.model_validate({**document, "token_endpoint_auth_method": "none"})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise ClientDocumentError(f"{where}: {error['msg']}") from None


class ClientDocuments:
    """The documents of URL client ids, read when first needed and kept a while."""

    def __init__(self, allow_private: bool = False) -> None:
        self._allow_private = allow_private
        self._cache: OrderedDict[str, tuple[OAuthClientInformationFull, float]] = OrderedDict()

    async def client(self, client_id: str) -> OAuthClientInformationFull | None:
        """The client `client_id` names; None (with the reason logged) when it names none."""
        cached = self._cache.get(client_id)
        if cached is not None and time.monotonic() - cached[1] < CACHE_SECONDS:
            return cached[0]
        try:
            found = client_of(client_id, await self._fetch(client_id))
        except ClientDocumentError as exc:
            log.warning("client id %s: %s", client_id[:200], exc)
            return None
        self._cache[client_id] = (found, time.monotonic())
        self._cache.move_to_end(client_id)
        while len(self._cache) > CACHED:
            self._cache.popitem(last=False)
        return found

    async def _fetch(self, url: str) -> object:
        host = urlsplit(url).hostname or ""
        if not self._allow_private:
            await _public(host)
        try:
            async with (
                httpx2.AsyncClient(timeout=FETCH_SECONDS, follow_redirects=False) as http,
                http.stream("GET", url, headers={"accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    raise ClientDocumentError(f"fetching the document answered {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise ClientDocumentError(f"the document is larger than {MAX_BYTES} bytes")
        except httpx2.HTTPError as exc:
            raise ClientDocumentError(f"the document is unreachable: {exc}") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ClientDocumentError("the document is not JSON") from None


async def _public(host: str) -> None:
    """ClientDocumentError unless every address `host` resolves to is a public one."""
    try:
        addresses = await anyio.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ClientDocumentError(f"{host} does not resolve: {exc}") from None
    for *_, sockaddr in addresses:
        if not ipaddress.ip_address(sockaddr[0]).is_global:
            raise ClientDocumentError(f"{host} resolves to a non-public address ({sockaddr[0]})")
