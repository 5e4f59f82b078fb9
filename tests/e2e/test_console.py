"""The admin console at /ui, driven in headless Chromium against a real `mcpgw up`: sign in,
add a server, make a key and use it from the MCP client, disable a tool, try a tool, find the
calls in the audit, revoke the key. The browser reaches nothing but the gateway.

The tests run in order and share one gateway and one signed-in browser. With
MCPGW_SCREENSHOTS=docs/console they also save a screenshot of each page there.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from services.up.main import free_port
from tests.processes import ROOT, mcpgw_up, port_open, python_script, running, wait_until

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "/usr/bin/chromium is absent (make install adds Debian's chromium as root)", allow_module_level=True
    )
playwright_sync = pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright  # noqa: E402

ADMIN = "console-admin-token-0123456789"
FIXTURE = ROOT / "tests" / "servers" / "fixture_server.py"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PRICE = 0.25
SHOTS = os.environ.get("MCPGW_SCREENSHOTS", "")
T = TypeVar("T")


@dataclass
class Console:
    base: str
    page: Page
    context: BrowserContext
    fixture_url: str
    # What the browser did wrong: console errors, page errors, failed requests, foreign hosts.
    problems: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def shot(self, name: str, page: Page | None = None) -> None:
        if SHOTS:
            folder = ROOT / SHOTS
            folder.mkdir(parents=True, exist_ok=True)
            (page or self.page).screenshot(path=str(folder / f"{name}.png"), full_page=False)


def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """anyio.run(function, *args) on a thread of its own (Playwright's sync API holds this one)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = anyio.run(function, *args)
        except BaseException as exc:  # handed back to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(90)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


async def tools_of(base: str, secret: str) -> set[str]:
    """The tool names a client sees with the key `secret`."""
    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=20) as http,
            streamable_http_client(f"{base}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return {tool.name for tool in (await session.list_tools()).tools}


async def refusal(base: str, secret: str) -> str:
    """How the MCP client fails to list tools with the key `secret` ("" if it does not fail)."""
    try:
        await tools_of(base, secret)
    except Exception as exc:  # whatever the SDK raises: the test reads what it says
        return repr(exc) + "".join(repr(e) for e in getattr(exc, "exceptions", ()))
    return ""


async def call_echo(base: str, secret: str, text: str) -> str:
    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=20) as http,
            streamable_http_client(f"{base}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("fx_echo", {"text": text})
            assert not result.is_error
            return str(result.content[0].text)  # type: ignore[union-attr]


def nav(page: Page, name: str) -> None:
    """Follow the console's menu to a page."""
    page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()


def eventually(check: Callable[[], T], timeout: float, what: str) -> T:
    """The first truthy value of `check` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {value!r})")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    with running(python_script(FIXTURE, "--http", str(port)), log=tmp / "fixture.log") as process:
        wait_until(lambda: port_open(port), 15, "fixture server", process)
        env = {"MCPGW_ADMIN_TOKEN": ADMIN, "MCPGW_SESSION_SECRET": "console-test-secret"}
        with mcpgw_up(tmp, [], "mcpgw up for the console", env) as base:
            yield base, f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def console(gateway: tuple[str, str], browser: Browser) -> Iterator[Console]:
    base, fixture_url = gateway
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    context.set_default_timeout(10_000)
    page = context.new_page()
    shown = Console(base, page, context, fixture_url)
    gateway_host = urlsplit(base).netloc

    def route(request_route: Route) -> None:
        if urlsplit(request_route.request.url).netloc != gateway_host:
            shown.blocked.append(request_route.request.url)
            request_route.abort()
        else:
            request_route.continue_()

    context.route("**/*", route)
    page.on(
        "console",
        lambda m: shown.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: shown.problems.append(f"page error: {e}"))

    def failed(request: Any) -> None:
        # A poll cut short by navigating away is aborted by the browser itself, not broken.
        if request.failure != "net::ERR_ABORTED":
            shown.problems.append(f"request failed: {request.url} {request.failure}")

    page.on("requestfailed", failed)
    page.on("dialog", lambda dialog: dialog.accept())
    yield shown
    context.close()


@pytest.fixture(autouse=True)
def clean_browser(console: Console) -> Iterator[None]:
    """Every test fails on a browser error or a request for any host but the gateway."""
    console.problems.clear()
    yield
    assert console.blocked == [], f"requests for other hosts: {console.blocked}"
    assert console.problems == [], f"the browser reported: {console.problems}"


def test_sign_in(console: Console) -> None:
    page = console.page
    page.goto(f"{console.base}/ui")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    console.shot("sign-in")
    page.get_by_label("Admin token").fill(ADMIN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_text("Calls per second")).to_be_visible()
    cookie = next(c for c in console.context.cookies() if c["name"] == "mcpgw_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert ADMIN not in page.content()


def test_a_state_change_without_the_csrf_token_is_refused(console: Console) -> None:
    answer = console.page.request.post(
        f"{console.base}/ui/blocklist",
        form={"patterns": "fx_*"},
        headers={"origin": console.base},
    )
    assert answer.status == 403
    assert "stale" in answer.text()


def test_add_an_http_server_and_see_it_connect(console: Console) -> None:
    page = console.page
    nav(page, "Servers")
    expect(page.get_by_role("heading", name="Add an HTTP server")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("fx")
    page.get_by_label("URL", exact=True).fill(console.fixture_url)
    page.get_by_label("Price of one call").fill(str(PRICE))
    page.get_by_role("button", name="Add server").click()
    row = page.locator("tr[data-server=fx]")
    expect(row).to_be_visible()

    def connected() -> bool:
        page.reload()
        return "connected" in (page.locator("tr[data-server=fx] .state").text_content() or "")

    eventually(connected, 30, "the server fx connected")
    expect(row.locator("td").nth(4)).not_to_have_text("0")
    console.shot("servers")


def test_create_a_key_and_use_its_secret_from_the_mcp_client(console: Console) -> None:
    page = console.page
    nav(page, "Keys")
    page.get_by_label("Name", exact=True).fill("browser-key")
    page.get_by_label("echo", exact=True).check()
    page.get_by_label("weather", exact=True).check()
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_text("it is shown this once")).to_be_visible()
    console.shot("key-secret")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_text("Copied to the clipboard.")).to_be_visible()
    secret = page.evaluate("navigator.clipboard.readText()")
    assert secret and secret == page.get_by_label(re.compile("Secret of")).input_value()
    key_id = page.locator("label[for=secret] code").text_content()
    console.state.update(secret=secret, key_id=key_id)
    assert in_thread(tools_of, console.base, secret) == {"fx_echo", "fx_weather"}
    assert in_thread(call_echo, console.base, secret, "from the client") == "from the client"
    # The secret is shown that once: the key's page names only its first characters.
    page.goto(f"{console.base}/ui/keys/{key_id}")
    expect(page.locator("#sees")).to_contain_text("fx_weather")
    assert secret not in page.content()
    console.shot("key")


def test_disable_a_tool_and_it_vanishes_from_the_client(console: Console) -> None:
    page = console.page
    nav(page, "Tools")
    page.get_by_role("button", name="Disable fx_weather").click()
    expect(page.get_by_role("button", name="Enable fx_weather")).to_be_visible()
    console.shot("tools")
    assert in_thread(tools_of, console.base, console.state["secret"]) == {"fx_echo"}


def test_try_a_tool_under_the_key(console: Console) -> None:
    page = console.page
    nav(page, "Tools")
    page.get_by_role("link", name="Try fx_echo").click()
    page.get_by_label("Call as").select_option(console.state["key_id"])
    page.get_by_label(re.compile("^text", re.IGNORECASE)).fill("hello console")
    page.get_by_role("button", name="Call").click()
    expect(page.locator("#result")).to_contain_text("hello console")
    trace_id = page.locator("#trace-id").text_content() or ""
    assert re.fullmatch("[0-9a-f]{32}", trace_id)
    console.state["trace_id"] = trace_id
    console.shot("try-it")


def test_the_calls_are_in_the_audit_with_their_key_and_cost(console: Console) -> None:
    page = console.page
    key_id = console.state["key_id"]
    nav(page, "Audit")
    page.get_by_label("Key id").fill(key_id)
    page.get_by_label("Tool", exact=True).fill("echo")
    page.get_by_role("button", name="Filter").click()
    # Reloading before the filtered page arrived would reload the unfiltered one.
    expect(page).to_have_url(re.compile(f"key={key_id}"))

    def both_calls() -> bool:
        page.reload()
        return page.locator("tr.record").count() >= 2

    eventually(both_calls, 20, "both calls of fx_echo in the audit")
    rows = page.locator("tr.record")
    for index in range(rows.count()):
        expect(rows.nth(index)).to_contain_text(key_id)
        expect(rows.nth(index)).to_contain_text("fx_echo")
        expect(rows.nth(index).locator(".cost")).to_have_text(str(PRICE))
    console.shot("audit")
    # Live: a new call shows up without reloading the page.
    page.get_by_label("Live (refresh every 3 s)").check()
    assert in_thread(call_echo, console.base, console.state["secret"], "live") == "live"
    expect(rows).to_have_count(3, timeout=15_000)
    page.get_by_label("Live (refresh every 3 s)").uncheck()
    # The "try it" call's record, by the trace id the page named.
    page.locator("tr.record", has_text=console.state["trace_id"][:8]).get_by_role("link").click()
    expect(page.get_by_role("heading", name=re.compile("Record"))).to_be_visible()
    expect(page.locator(".facts")).to_contain_text(console.state["trace_id"])
    console.shot("audit-record")


def test_the_overview_charts_the_calls(console: Console) -> None:
    page = console.page
    nav(page, "Overview")
    expect(page.get_by_text("tool calls in the last hour")).to_contain_text("3 tool calls")
    expect(page.locator(".chart svg polyline")).to_have_count(5)
    expect(page.get_by_role("cell", name="echo on fx")).to_be_visible()
    console.shot("overview")
    phone = console.context.new_page()
    phone.set_viewport_size(PHONE)  # type: ignore[arg-type]
    phone.goto(f"{console.base}/ui")
    expect(phone.get_by_role("heading", name="Overview")).to_be_visible()
    console.shot("overview-phone", phone)
    phone.goto(f"{console.base}/ui/servers")
    expect(phone.locator("tr[data-server=fx]")).to_be_visible()
    console.shot("servers-phone", phone)
    phone.close()


def test_edit_a_keys_limits_and_rotate_its_secret(console: Console) -> None:
    page = console.page
    page.goto(f"{console.base}/ui/keys/{console.state['key_id']}")
    page.get_by_label("Rate limit: calls per window").fill("100")
    page.get_by_role("button", name="Save key").click()
    usage = page.locator("section", has=page.get_by_role("heading", name="Limits and usage this window"))
    expect(usage.locator("tbody tr").first).to_contain_text("100")
    # fx_weather is disabled, so out of the catalog: saving the limits kept it on the key.
    kept = page.get_by_role("checkbox", name="weather (not in the catalog now)", exact=True)
    expect(kept).to_be_checked()
    page.get_by_role("button", name="Rotate secret").click()
    expect(page.get_by_text("it is shown this once")).to_be_visible()
    rotated = page.get_by_label(re.compile("Secret of")).input_value()
    assert rotated and rotated != console.state["secret"]
    assert "virtual key is not recognised" in in_thread(refusal, console.base, console.state["secret"])
    console.state["secret"] = rotated
    assert in_thread(tools_of, console.base, rotated) == {"fx_echo"}


def test_disable_enable_and_reconnect_a_server(console: Console) -> None:
    page = console.page
    page.goto(f"{console.base}/ui/servers/fx")
    page.get_by_role("button", name="Reconnect").click()
    expect(page.get_by_role("heading", name="fx", exact=True)).to_be_visible()
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("button", name="Enable")).to_be_visible()
    expect(page.locator(".facts")).to_contain_text("(disabled)")
    page.get_by_role("button", name="Enable").click()
    expect(page.get_by_role("button", name="Disable")).to_be_visible()

    def connected() -> bool:
        page.reload()
        return "connected" in (page.locator(".facts .state").text_content() or "")

    eventually(connected, 30, "fx connected again")
    console.shot("server")


def test_create_a_tool_group(console: Console) -> None:
    page = console.page
    nav(page, "Groups")
    page.get_by_label("Name", exact=True).fill("readers")
    page.get_by_label("echo", exact=True).check()
    page.get_by_role("button", name="Create group").click()
    expect(page.get_by_role("cell", name="fx: echo")).to_be_visible()
    console.shot("groups")


def test_revoke_the_key_and_the_client_is_refused(console: Console) -> None:
    page = console.page
    page.goto(f"{console.base}/ui/keys/{console.state['key_id']}")
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("heading", name="Virtual keys")).to_be_visible()
    expect(page.locator(f"tr[data-key={console.state['key_id']}]")).to_have_count(0)
    refused = in_thread(refusal, console.base, console.state["secret"])
    assert "virtual key is not recognised" in refused, refused
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    answer = httpx2.post(
        f"{console.base}/mcp",
        json=initialize,
        headers={
            "authorization": f"Bearer {console.state['secret']}",
            "accept": "application/json, text/event-stream",
        },
    )
    assert answer.status_code == 401


def test_the_api_docs_render_from_bundled_assets(console: Console) -> None:
    page = console.page
    answer = page.goto(f"{console.base}/api/docs")
    assert answer is not None
    headers = answer.headers
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)
    expect(page.get_by_text("/api/servers").first).to_be_visible()
    console.shot("api-docs")


def test_sign_out(console: Console) -> None:
    page = console.page
    page.goto(f"{console.base}/ui")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(f"{console.base}/ui/keys")
    expect(page).to_have_url(re.compile(r"/ui/login"))
