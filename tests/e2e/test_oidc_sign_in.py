"""Signing in at the consent page with an OpenID Connect provider the gateway did not write
(panva's `oidc-provider`, its development login and consent pages submitted as a browser
would), driven by the `mcp` SDK's OAuth client: the person acts as the key whose
`identities` name their email (exactly, else their domain), sees its tools, allows, and the
client gets exactly those. Then what may not pass: nobody's address, an unverified one, a
callback in another browser, a forged state, and a person taken off a key (their tokens end
on both edges within a second).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from mcp.shared.auth import AuthorizationCodeResult

from services.up.main import free_port
from tests.e2e.test_oauth import ADMIN, admin, refused_within, sign_in, tools_list
from tests.processes import NODE, NODE_DIR, ROOT, port_open, running, service_tree, stdio_server, wait_until

pytestmark = pytest.mark.skipif(not NODE.exists(), reason="node is not installed: run `make install`")

CLIENT_ID = "mcpgw"
CLIENT_SECRET = "oidc-client-secret-for-tests"
SERVERS = [stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py")]
CONFIG = {
    "client": {"mcp_server_auth_mode": "oauth"},
    "governance": {
        "virtual_keys": [
            {
                "id": "vk-ada",
                "name": "ada",
                "value": "sk-ada-oidc-0123456789abcdef",
                "mcp_configs": [{"mcp_client_name": "fixture", "tools_to_execute": ["echo", "count"]}],
                "identities": ["Ada@Example.com", "unverified@example.com"],
            },
            {
                "id": "vk-org",
                "name": "org",
                "value": "sk-org-oidc-0123456789abcdef",
                "mcp_configs": [{"mcp_client_name": "fixture", "tools_to_execute": ["echo"]}],
                "identities": ["*@example.org"],
            },
        ]
    },
}
CALLBACK = "/oauth/oidc/callback"


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two edges signing people in with one provider, which starts once their URLs are known
    (the edges read its discovery when a person first signs in)."""
    tmp = tmp_path_factory.mktemp("oidc")
    port = free_port()
    env = {
        "MCPGW_ADMIN_TOKEN": ADMIN,
        "MCPGW_OIDC_ISSUER": f"http://127.0.0.1:{port}",
        "MCPGW_OIDC_CLIENT_ID": CLIENT_ID,
        "MCPGW_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "MCPGW_OIDC_NAME": "Example ID",
    }
    with service_tree(tmp, SERVERS, edges=2, env=env, config=CONFIG) as (one, two):
        argv = [str(NODE), str(NODE_DIR / "oidc-provider.mjs"), str(port), CLIENT_ID, CLIENT_SECRET]
        argv += [one + CALLBACK, two + CALLBACK]
        with running(argv, log=tmp / "oidc-provider.log") as provider:
            wait_until(lambda: port_open(port), 30, "the OpenID Connect provider", provider)
            yield one, two


def form_of(page: httpx2.Response) -> tuple[str, dict[str, str]]:
    """A page's first form: where it posts, and its hidden fields."""
    match = re.search(r"<form([^>]*)>(.*?)</form>", page.text, re.S)
    assert match is not None, page.text
    action = re.search(r'action="([^"]*)"', match.group(1))
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', match.group(2)))
    return urljoin(str(page.url), html.unescape(action.group(1)) if action else ""), fields


class Person:
    """The person at the browser: follows the authorize URL to the consent page, signs in
    with the provider as `login`, reads what the key naming them grants, and allows."""

    def __init__(self, login: str, browser: httpx2.AsyncClient | None = None) -> None:
        self.login = login
        self.browser = browser
        self.shown: list[str] = []
        self.page = ""
        self.result: AuthorizationCodeResult | None = None

    async def open(self, url: str) -> None:
        async with httpx2.AsyncClient(timeout=10) as browser:
            answered = await self.signed_in(browser, url)
            self.page = answered.text
            if answered.status_code != 200 or "approval" not in answered.text:
                return
            self.shown = [
                html.unescape(t) for t in re.findall(r"<li><code>([^<]+)</code></li>", answered.text)
            ]
            approval = re.search(r'name="approval" value="([^"]+)"', answered.text)
            request_id = re.search(r'name="request" value="([^"]+)"', answered.text)
            assert approval is not None and request_id is not None
            consent = urljoin(url, "/oauth/consent")
            allow = {"request": request_id.group(1), "approval": html.unescape(approval.group(1))}
            redirected = await browser.post(consent, data={**allow, "action": "allow"})
            assert redirected.status_code == 303, redirected.text
            query = parse_qs(urlsplit(redirected.headers["location"]).query)
            self.result = AuthorizationCodeResult(
                code=query["code"][0], state=query["state"][0], iss=query["iss"][0]
            )

    async def signed_in(
        self, browser: httpx2.AsyncClient, url: str, callback_in: httpx2.AsyncClient | None = None
    ) -> httpx2.Response:
        """The gateway's page after the provider's sign-in (the callback answered by
        `callback_in`, another browser, when given)."""
        authorize = await browser.get(url)
        assert authorize.status_code == 302, authorize.text
        asked = await browser.get(authorize.headers["location"])
        assert "Sign in with Example ID" in asked.text, asked.text
        action, fields = form_of(asked)
        response = await browser.post(action, data={**fields, "action": "sign-in"})
        assert response.status_code == 303, response.text
        while True:
            location = urljoin(str(response.url), response.headers["location"])
            if urlsplit(location).path == CALLBACK:
                return await (callback_in or browser).get(location)
            response = await browser.get(location)
            if response.status_code == 200:
                # The provider's login page, then its consent page.
                action, fields = form_of(response)
                if 'name="login"' in response.text:
                    fields.update(login=self.login, password="any")
                response = await browser.post(action, data=fields)
            assert response.status_code in (302, 303), response.text

    async def callback(self) -> AuthorizationCodeResult:
        if self.result is None:
            raise PermissionError(f"no code: {self.page}")
        return self.result


@pytest.mark.anyio
async def test_a_person_signs_in_as_the_key_naming_their_email(edges: tuple[str, str]) -> None:
    one, two = edges
    person = Person("ada@example.com")
    storage, tools, text = await sign_in(f"{one}/mcp", person)
    assert tools == {"fixture_echo", "fixture_count"} and person.shown == sorted(tools)
    assert "ada@example.com, with the key <strong>ada</strong>" in person.page
    assert text == "signed in"
    assert storage.tokens is not None
    host = urlsplit(one).netloc
    assert tools_list(f"{two}/mcp", storage.tokens.access_token, host=host).status_code == 200


@pytest.mark.anyio
async def test_a_domain_entry_admits_everyone_at_that_domain(edges: tuple[str, str]) -> None:
    one, _ = edges
    person = Person("grace@example.org")
    _, tools, _ = await sign_in(f"{one}/mcp", person)
    assert tools == {"fixture_echo"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("login", "refusal"),
    [
        ("eve@elsewhere.net", "no virtual key is assigned to eve@elsewhere.net"),
        ("unverified@example.com", "has not verified the address unverified@example.com"),
    ],
)
async def test_nobody_and_an_unverified_address_get_no_code(
    edges: tuple[str, str], login: str, refusal: str
) -> None:
    one, _ = edges
    async with httpx2.AsyncClient(timeout=10) as browser:
        page = await Person(login).signed_in(browser, await authorize_url(one))
    assert page.status_code == 200
    assert refusal in html.unescape(page.text)
    assert "approval" not in page.text


@pytest.mark.anyio
async def test_a_callback_in_another_browser_or_with_a_forged_state_is_refused(
    edges: tuple[str, str],
) -> None:
    one, _ = edges
    async with httpx2.AsyncClient(timeout=10) as browser, httpx2.AsyncClient(timeout=10) as other:
        page = await Person("ada@example.com").signed_in(browser, await authorize_url(one), callback_in=other)
        assert page.status_code == 400 and "started in another browser" in page.text
        forged = await browser.get(f"{one}{CALLBACK}", params={"state": "oidc1.x.1.forged", "code": "c"})
        assert forged.status_code == 400 and "not started here" in forged.text


@pytest.mark.anyio
async def test_taking_a_person_off_their_key_ends_their_tokens_on_both_edges(edges: tuple[str, str]) -> None:
    one, two = edges
    storage, _, _ = await sign_in(f"{one}/mcp", Person("grace@example.org"))
    assert storage.tokens is not None
    token, host = storage.tokens.access_token, urlsplit(one).netloc
    assert admin(one, "PATCH", "/keys/vk-org", {"identities": ["*@example.net"]}).status_code == 200
    try:
        for edge in (one, two):
            refused_within(
                lambda e=edge: tools_list(f"{e}/mcp", token, host=host), 1.0, "the token still works"
            )
        assert admin(one, "GET", "/keys/vk-org").json()["identities"] == ["*@example.net"]
    finally:
        admin(one, "PATCH", "/keys/vk-org", {"identities": ["*@example.org"]})


async def authorize_url(base: str) -> str:
    """An authorize URL of a freshly registered client, as an MCP client would open."""
    client = {"redirect_uris": ["http://127.0.0.1:9/callback"], "token_endpoint_auth_method": "none"}
    async with httpx2.AsyncClient(timeout=10) as http:
        registered = (await http.post(f"{base}/register", json=client)).json()
    query: dict[str, Any] = {
        "response_type": "code",
        "client_id": registered["client_id"],
        "redirect_uri": "http://127.0.0.1:9/callback",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        "state": "s",
        "resource": f"{base}/mcp",
    }
    return str(httpx2.URL(f"{base}/authorize", params=query))
