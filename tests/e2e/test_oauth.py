"""MCP's authorization flow with the gateway as authorization server, driven by the `mcp`
SDK's own OAuth client: 401 → protected-resource and authorization-server discovery →
Dynamic Client Registration → consent (its forms submitted as a browser would) → token →
exactly the attached identity's tools → a call. Then what the tokens may not do: another
resource, a revoked grant or key (on the second edge within a second), a replayed refresh.

Both edges stand behind one name, as behind a load balancer: a request to edge two carries
edge one's Host, which is what a balancer forwards.
"""

from __future__ import annotations

import html
import json
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx2
import mcp_types as types
import pytest
import trustme
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl

from tests.integration.test_gateway_http import ACCEPT
from tests.processes import NODE, NODE_DIR, ROOT, service_tree, stdio_server, wait_until

ADMIN = "admin-token-for-oauth-tests"
ALICE = "sk-alice-oauth-0123456789abcdef"
BOB = "sk-bob-oauth-0123456789abcdef"
SERVERS = [stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py")]
CONFIG = {
    "client": {"mcp_server_auth_mode": "both"},
    "governance": {
        "virtual_keys": [
            {
                "id": "vk-alice",
                "name": "alice",
                "value": ALICE,
                "mcp_configs": [{"mcp_client_name": "fixture", "tools_to_execute": ["echo", "count"]}],
            },
            {
                "id": "vk-bob",
                "name": "bob",
                "value": BOB,
                "mcp_configs": [{"mcp_client_name": "fixture", "tools_to_execute": ["echo"]}],
            },
        ]
    },
}
REDIRECT = "http://127.0.0.1:9/callback"


class Documents(BaseHTTPRequestHandler):
    """Client ID Metadata Documents over HTTPS, each at the URL it names as its client_id."""

    def do_GET(self) -> None:
        client_id = f"https://{self.headers['host']}{self.path}"
        documents: dict[str, dict[str, Any]] = {
            "/client.json": {"client_name": "cimd test client", "redirect_uris": [REDIRECT]},
            "/ts-client.json": {
                "client_name": "ts cimd client",
                "redirect_uris": ["http://127.0.0.1:9/ts-callback"],
            },
            "/elsewhere.json": {
                "redirect_uris": [REDIRECT],
                "client_id": "https://elsewhere.example.com/c.json",
            },
        }
        if self.path not in documents:
            self.send_error(404)
            return
        body = json.dumps({"client_id": client_id, **documents[self.path]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Where the documents are served, and the CA file that trusts their certificate."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    authority = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(authority))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Documents)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", authority
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory, documents: tuple[str, Path]) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("oauth")
    env = {
        "MCPGW_ADMIN_TOKEN": ADMIN,
        # The documents are on loopback, under a CA only the tests know.
        "MCPGW_OAUTH_CLIENT_DOCUMENTS_PRIVATE": "true",
        "SSL_CERT_FILE": str(documents[1]),
    }
    with service_tree(tmp, SERVERS, edges=2, env=env, config=CONFIG) as (one, two):
        yield one, two


class Person:
    """The person at the browser: follows the authorize URL to the consent page, presents
    a virtual key, reads what it grants, and allows (or denies)."""

    def __init__(self, key: str, allow: bool = True) -> None:
        self.key = key
        self.allow = allow
        self.shown: list[str] = []
        self.result: AuthorizationCodeResult | None = None
        self.redirected_to = ""
        self.consent_page = ""

    async def open(self, url: str) -> None:
        async with httpx2.AsyncClient(timeout=10) as browser:
            authorize = await browser.get(url)
            assert authorize.status_code == 302, authorize.text
            consent_url = authorize.headers["location"]
            asked = await browser.get(consent_url)
            assert asked.status_code == 200 and "Your virtual key" in asked.text
            assert asked.headers["x-frame-options"] == "DENY"
            request_id = parse_qs(urlsplit(consent_url).query)["request"][0]
            form = consent_url.split("?")[0]
            review = await browser.post(
                form, data={"request": request_id, "key": self.key, "action": "review"}
            )
            assert review.status_code == 200, review.text
            self.consent_page = review.text
            self.shown = [html.unescape(t) for t in re.findall(r"<li><code>([^<]+)</code></li>", review.text)]
            approval = re.search(r'name="approval" value="([^"]+)"', review.text)
            assert approval is not None, review.text
            answer = {"request": request_id, "approval": html.unescape(approval.group(1))}
            answered = await browser.post(form, data={**answer, "action": "allow" if self.allow else "deny"})
            assert answered.status_code == 303, answered.text
            self.redirected_to = answered.headers["location"]
            query = parse_qs(urlsplit(self.redirected_to).query)
            if "code" in query:
                self.result = AuthorizationCodeResult(
                    code=query["code"][0], state=query["state"][0], iss=query["iss"][0]
                )

    async def callback(self) -> AuthorizationCodeResult:
        if self.result is None:
            raise PermissionError(f"no code: {self.redirected_to}")
        return self.result


class Memory:
    """The SDK's TokenStorage in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class AtTheBrowser(Protocol):
    """Whoever answers the authorize URL in a browser and hands the client its code."""

    async def open(self, url: str) -> None: ...

    async def callback(self) -> AuthorizationCodeResult: ...


async def sign_in(
    url: str, person: AtTheBrowser, client_metadata_url: str | None = None
) -> tuple[Memory, set[str], str]:
    """The SDK client's whole flow against `url` (registering by Dynamic Client Registration,
    or as the Client ID Metadata Document at `client_metadata_url`): its tools and a call's text."""
    storage = Memory()
    metadata = OAuthClientMetadata(
        client_name="sdk test client",
        redirect_uris=[AnyUrl(REDIRECT)],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
    )
    auth = OAuthClientProvider(
        url, metadata, storage, person.open, person.callback, client_metadata_url=client_metadata_url
    )
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {t.name for t in (await session.list_tools()).tools}
        result = await session.call_tool("fixture_echo", {"text": "signed in"})
        assert not result.is_error, result
        text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
    return storage, tools, text


def tools_list(url: str, token: str | None, host: str | None = None) -> httpx2.Response:
    headers = {"accept": ACCEPT, "content-type": "application/json", "mcp-protocol-version": "2025-11-25"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if host is not None:
        headers["host"] = host
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "probe"}},
    }
    return httpx2.post(url, json=body, headers=headers, timeout=10)


def admin(base: str, method: str, path: str, body: Any = None) -> httpx2.Response:
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx2.request(method, f"{base}/api{path}", json=body, headers=headers, timeout=10)


def refused_within(check: Any, seconds: float, what: str) -> None:
    started = time.monotonic()
    while check().status_code != 401:
        assert time.monotonic() - started < seconds, what


def test_an_unauthenticated_request_is_pointed_at_discovery(edges: tuple[str, str]) -> None:
    one, _ = edges
    refused = tools_list(f"{one}/mcp/fixture", None)
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert f'resource_metadata="{one}/.well-known/oauth-protected-resource/mcp/fixture"' in challenge
    resource = httpx2.get(f"{one}/.well-known/oauth-protected-resource/mcp/fixture", timeout=10).json()
    assert resource["resource"] == f"{one}/mcp/fixture"
    assert resource["authorization_servers"] == [f"{one}"]
    server = httpx2.get(f"{one}/.well-known/oauth-authorization-server", timeout=10).json()
    assert server["issuer"] == one
    assert server["code_challenge_methods_supported"] == ["S256"]
    assert server["registration_endpoint"] == f"{one}/register"
    assert (
        httpx2.get(f"{one}/.well-known/oauth-protected-resource/mcp/nothing", timeout=10).status_code == 404
    )
    # A virtual key in a header still works in `both` mode.
    assert tools_list(f"{one}/mcp", BOB).status_code == 200


@pytest.mark.anyio
async def test_the_sdk_client_signs_in_as_the_identity_it_attached(edges: tuple[str, str]) -> None:
    one, two = edges
    person = Person(ALICE)
    storage, tools, text = await sign_in(f"{one}/mcp", person)
    assert tools == {"fixture_echo", "fixture_count"}
    assert person.shown == sorted(tools)
    assert text == "signed in"
    assert storage.tokens is not None and storage.tokens.refresh_token
    token = storage.tokens.access_token
    host = urlsplit(one).netloc
    # Good on the other edge under the same name; refused for another resource, and under
    # another name for the same edge (its resource is another URL).
    assert tools_list(f"{two}/mcp", token, host=host).status_code == 200
    other_name = f"localhost:{urlsplit(one).port}"
    for url, named, message in (
        (f"{one}/mcp/fixture", None, f"not issued for {one}/mcp/fixture"),
        (f"{one}/mcp", other_name, f"not issued by http://{other_name}"),
    ):
        refused = tools_list(url, token, host=named)
        assert refused.status_code == 401, url
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        assert message in refused.json()["error"]["message"]

    # Revoked through edge one's /revoke, refused by edge two within a second.
    assert storage.client is not None
    revoke = {"token": token, "client_id": storage.client.client_id}
    if storage.client.client_secret:
        revoke["client_secret"] = storage.client.client_secret
    assert httpx2.post(f"{one}/revoke", data=revoke, timeout=10).status_code == 200
    refused_within(lambda: tools_list(f"{two}/mcp", token, host=host), 1.0, "a revoked token still works")


@pytest.mark.skipif(not NODE.exists(), reason="node is not installed: run `make install`")
@pytest.mark.parametrize("registration", ["dcr", "document"])
def test_the_typescript_client_signs_in_too(
    edges: tuple[str, str], documents: tuple[str, Path], registration: str
) -> None:
    one, two = edges
    document = [f"{documents[0]}/ts-client.json"] if registration == "document" else []
    completed = subprocess.run(
        [str(NODE), "oauth-client.mjs", f"{one}/mcp", BOB, *document],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    seen = json.loads(completed.stdout)
    assert seen["challenged"], "the TypeScript client was never asked to sign in"
    assert seen["tools"] == seen["shown"] == ["fixture_echo"]
    assert seen["text"] == "signed in from node"
    assert (seen["client_id"] == document[0]) if document else not seen["client_id"].startswith("https:")
    token, host = seen["access_token"], urlsplit(one).netloc
    assert tools_list(f"{two}/mcp", token, host=host).status_code == 200
    assert tools_list(f"{one}/mcp/fixture", token).status_code == 401


@pytest.mark.anyio
async def test_refresh_tokens_rotate_and_a_replayed_one_ends_the_grant(edges: tuple[str, str]) -> None:
    one, _ = edges
    storage, _, _ = await sign_in(f"{one}/mcp", Person(BOB))
    assert storage.tokens is not None and storage.client is not None
    client = {"client_id": storage.client.client_id}
    if storage.client.client_secret:
        client["client_secret"] = storage.client.client_secret
    first = storage.tokens.refresh_token
    refresh = {"grant_type": "refresh_token", "refresh_token": first, **client}
    rotated = httpx2.post(f"{one}/token", data=refresh, timeout=10)
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()
    assert fresh["refresh_token"] != first
    assert tools_list(f"{one}/mcp", fresh["access_token"]).status_code == 200
    replayed = httpx2.post(f"{one}/token", data=refresh, timeout=10)
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"
    # The replay ended the grant: the token minted from the rotation stops too.
    refused_within(
        lambda: tools_list(f"{one}/mcp", fresh["access_token"]), 1.0, "the grant survived a replay"
    )


@pytest.mark.anyio
async def test_denying_consent_returns_access_denied_to_the_client(edges: tuple[str, str]) -> None:
    one, _ = edges
    person = Person(BOB, allow=False)
    with pytest.raises(BaseExceptionGroup) as failed:
        await sign_in(f"{one}/mcp", person)
    assert failed.group_contains(PermissionError)
    assert parse_qs(urlsplit(person.redirected_to).query)["error"] == ["access_denied"]


@pytest.mark.anyio
async def test_deleting_the_key_ends_its_tokens_on_every_edge(edges: tuple[str, str]) -> None:
    one, two = edges
    storage, _, _ = await sign_in(f"{one}/mcp", Person(ALICE))
    assert storage.tokens is not None
    token, host = storage.tokens.access_token, urlsplit(one).netloc
    assert tools_list(f"{two}/mcp", token, host=host).status_code == 200
    assert admin(one, "DELETE", "/keys/vk-alice").status_code == 204
    refused_within(
        lambda: tools_list(f"{two}/mcp", token, host=host), 1.0, "a deleted key's token still works"
    )
    wait_until(lambda: tools_list(f"{one}/mcp", token).status_code == 401, 5, "edge one following")


@pytest.mark.anyio
async def test_a_client_registers_by_its_metadata_document(
    edges: tuple[str, str], documents: tuple[str, Path]
) -> None:
    one, two = edges
    server = httpx2.get(f"{one}/.well-known/oauth-authorization-server", timeout=10).json()
    assert server["client_id_metadata_document_supported"] is True
    person = Person(BOB)
    document = f"{documents[0]}/client.json"
    storage, tools, text = await sign_in(f"{one}/mcp", person, client_metadata_url=document)
    assert storage.client is not None and storage.client.client_id == document
    assert tools == {"fixture_echo"} and text == "signed in"
    # The page names the document's host beside the name the document claims.
    assert "cimd test client (from 127.0.0.1)" in person.consent_page
    assert storage.tokens is not None
    assert tools_list(f"{two}/mcp", storage.tokens.access_token, host=urlsplit(one).netloc).status_code == 200


@pytest.mark.parametrize("path", ["/elsewhere.json", "/missing.json"])
def test_a_document_that_does_not_describe_its_client_registers_nothing(
    edges: tuple[str, str], documents: tuple[str, Path], path: str
) -> None:
    one, _ = edges
    query = {
        "response_type": "code",
        "client_id": documents[0] + path,
        "redirect_uri": REDIRECT,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    refused = httpx2.get(f"{one}/authorize", params=query, timeout=10)
    assert refused.status_code == 400, refused.text
    assert "location" not in refused.headers
