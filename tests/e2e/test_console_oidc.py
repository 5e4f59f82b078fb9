"""Signing in to the console with an OpenID Connect provider (panva's `oidc-provider`, its
development login pages submitted as a browser would) on a gateway with no admin token: the
console's admins change things, its viewers only look, anyone else is refused."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx2
import pytest

from services.up.main import free_port
from tests.e2e.test_oidc_sign_in import form_of
from tests.processes import NODE, NODE_DIR, port_open, running, service_tree, wait_until

pytestmark = pytest.mark.skipif(not NODE.exists(), reason="node is not installed: run `make install`")

CLIENT_ID = "mcpgw-console"
CLIENT_SECRET = "console-oidc-client-secret"
CALLBACK = "/ui/oidc/callback"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("console-oidc")
    port = free_port()
    env = {
        "MCPGW_OIDC_ISSUER": f"http://127.0.0.1:{port}",
        "MCPGW_OIDC_CLIENT_ID": CLIENT_ID,
        "MCPGW_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "MCPGW_OIDC_NAME": "Example ID",
        "MCPGW_CONSOLE_ADMINS": "ada@example.com",
        "MCPGW_CONSOLE_VIEWERS": "*@example.org",
    }
    # Separate services, not `mcpgw up`, which always makes an admin token.
    with service_tree(tmp, [], env=env) as (gateway,):
        argv = [str(NODE), str(NODE_DIR / "oidc-provider.mjs"), str(port), CLIENT_ID, CLIENT_SECRET]
        with running([*argv, gateway + CALLBACK], log=tmp / "oidc-provider.log") as provider:
            wait_until(lambda: port_open(port), 30, "the OpenID Connect provider", provider)
            yield gateway


def to_provider(started: httpx2.Response) -> str:
    """The provider's URL the console's answer to POST /ui/oidc navigates on to."""
    assert started.status_code == 200, started.text
    found = re.search(r'<a id="provider" href="([^"]+)"', started.text)
    assert found is not None, started.text
    return html.unescape(found.group(1))


def sign_in(browser: httpx2.Client, base: str, login: str) -> httpx2.Response:
    """The console's answer at the callback once `login` signed in at the provider."""
    page = browser.get(f"{base}/ui/login")
    assert "Sign in with Example ID" in page.text and 'name="token"' not in page.text
    started = browser.post(f"{base}/ui/oidc", data={"next": "/ui/keys"}, headers={"origin": base})
    location = to_provider(started)
    response = browser.get(location)
    for _ in range(10):
        if response.status_code in (302, 303):
            location = urljoin(str(response.url), response.headers["location"])
            if urlsplit(location).path == CALLBACK:
                return browser.get(location)
            response = browser.get(location)
        if response.status_code == 200:
            # The provider's login page, then its consent page.
            action, fields = form_of(response)
            if 'name="login"' in response.text:
                fields.update(login=login, password="any")
            response = browser.post(action, data=fields)
        assert response.status_code in (302, 303), response.text
    raise AssertionError("the provider never sent the browser back")


def csrf_of(page: httpx2.Response) -> str:
    found = re.search(r'data-csrf="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def test_an_admin_signs_in_and_changes_things(base: str) -> None:
    with httpx2.Client(timeout=10) as browser:
        arrived = sign_in(browser, base, "Ada@Example.com")
        assert arrived.status_code == 200 and 'content="0;url=/ui/keys"' in arrived.text
        keys = browser.get(f"{base}/ui/keys")
        assert keys.status_code == 200 and "ada@example.com" in keys.text.lower()
        assert "read-only" not in keys.text and 'action="/ui/keys"' in keys.text
        changed = browser.post(
            f"{base}/ui/blocklist",
            data={"csrf": csrf_of(keys), "patterns": "nobody_*"},
            headers={"origin": base},
        )
        assert changed.status_code == 303
    # The console's own credential for the API stays inside the edge: the API is off.
    assert httpx2.get(f"{base}/api/servers").status_code == 401


def test_a_viewer_looks_but_cannot_change(base: str) -> None:
    with httpx2.Client(timeout=10) as browser:
        assert sign_in(browser, base, "grace@example.org").status_code == 200
        keys = browser.get(f"{base}/ui/keys")
        assert keys.status_code == 200 and "read-only" in keys.text
        # No form a viewer could not submit; the refusal below is for a hand-made request.
        assert 'action="/ui/keys"' not in keys.text
        tools = browser.get(f"{base}/ui/tools")
        assert tools.status_code == 200
        assert "/ui/tools/toggle" not in tools.text and "/ui/blocklist" not in tools.text
        refused = browser.post(
            f"{base}/ui/blocklist",
            data={"csrf": csrf_of(keys), "patterns": ""},
            headers={"origin": base},
        )
        assert refused.status_code == 403 and "read-only" in refused.text


def test_anyone_else_is_refused(base: str) -> None:
    with httpx2.Client(timeout=10) as browser:
        refused = sign_in(browser, base, "eve@elsewhere.net")
        assert refused.status_code == 403 and "eve@elsewhere.net may not use this console" in refused.text
        assert browser.get(f"{base}/ui").status_code == 303


def test_a_callback_in_another_browser_or_with_a_forged_state_is_refused(base: str) -> None:
    with httpx2.Client(timeout=10) as browser, httpx2.Client(timeout=10) as other:
        browser.post(f"{base}/ui/oidc", data={"next": "/ui"}, headers={"origin": base})
        forged = other.get(f"{base}{CALLBACK}", params={"state": "console1.sso.1.x.forged", "code": "c"})
        assert forged.status_code == 403 and "not started here" in forged.text
        started = browser.post(f"{base}/ui/oidc", data={"next": "/ui"}, headers={"origin": base})
        state = dict(httpx2.URL(to_provider(started)).params)["state"]
        elsewhere = other.get(f"{base}{CALLBACK}", params={"state": state, "code": "c"})
        assert elsewhere.status_code == 403 and "another browser" in elsewhere.text


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent")
def test_an_admin_signs_in_with_the_provider_in_chromium(base: str) -> None:
    """The console's CSP (form-action 'self') lets a real browser reach the provider and back."""
    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"], headless=True
        )
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(10_000)
            page.goto(f"{base}/ui/login?next=/ui/keys")
            page.get_by_role("button", name="Sign in with Example ID").click()
            page.wait_for_selector('input[name="login"]')
            page.fill('input[name="login"]', "ada@example.com")
            page.fill('input[name="password"]', "any")
            page.locator('button[type="submit"]').first.click()
            page.locator('button[type="submit"]').first.click()  # the provider's consent
            page.wait_for_url(f"{base}/ui/keys")
            assert "ada@example.com" in page.content().lower()
            assert "read-only" not in page.content()
        finally:
            browser.close()
