"""A per_user_oauth downstream: the operator authorizes once (the catalog), then each
identity connects its own account at the link its first call answers with, and reaches
the server as that account; the upstream rotates refresh tokens, and the rotation
survives a session's closing; disconnecting, by the person or the operator, ends it."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError
from mcp_types import TextContent

from services.up.main import free_port
from tests.integration.test_gateway_http import ACCEPT
from tests.integration.test_upstream_auth import SECRET, authorization_server
from tests.processes import NODE, NODE_DIR, port_open, running, service_tree, wait_until

ADMIN = {"authorization": "Bearer per-user-oauth-admin"}
LINK = re.compile(r"https?://\S+/oauth/connect/personal\?ticket=\S+")


class Client:
    """One identity's MCP session, by its virtual key."""

    def __init__(self, mcp: str, secret: str, capabilities: dict[str, Any] | None = None) -> None:
        self.mcp = mcp
        self.headers = {"accept": ACCEPT, "authorization": f"Bearer {secret}"}
        hello = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": capabilities or {},
                "clientInfo": {"name": "per-user-test"},
            },
        }
        opened = httpx2.post(mcp, json=hello, headers=self.headers, timeout=30)
        assert opened.status_code == 200, opened.text
        self.headers["mcp-session-id"] = opened.headers["mcp-session-id"]

    def whoami(self) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "personal_whoami"}}
        answer = httpx2.post(self.mcp, json=body, headers=self.headers, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]


def person(answer: dict[str, Any]) -> str:
    """Whom the server says the call came from."""
    result = answer["result"]
    assert not result.get("isError"), result
    return str(result["content"][0]["text"])


def link_in(answer: dict[str, Any]) -> str:
    """The connect link of a call that needs its caller's account (as a tool error)."""
    result = answer["result"]
    assert result["isError"] is True, result
    found = LINK.search(result["content"][0]["text"])
    assert found is not None, result
    return found.group(0)


def start(browser: httpx2.Client, link: str, secret: str) -> httpx2.Response:
    """A person at the link: its page, then their key, from the gateway's own page."""
    asked = browser.get(link)
    assert asked.status_code == 200 and 'name="key"' in asked.text, asked.text
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(link))
    ticket = link.partition("?ticket=")[2]
    return browser.post(link, data={"ticket": ticket, "key": secret}, headers={"origin": origin})


def connect(link: str, user: str, secret: str) -> httpx2.Response:
    """A person's browser: the gateway's link and their key, the upstream's login as `user`,
    the callback."""
    with httpx2.Client(timeout=10) as browser:
        to_upstream = start(browser, link, secret)
        assert to_upstream.status_code == 302, to_upstream.text
        login = to_upstream.headers["location"] + f"&user={user}"
        back = browser.get(login)
        assert back.status_code == 302, back.text
        return browser.get(back.headers["location"])


def configured(origin: str) -> dict[str, Any]:
    """A per_user_oauth server on the local authorization server, its client configured."""
    return {
        "name": "personal",
        "connection_type": "http",
        "connection_string": f"{origin}/mcp/",
        "tools_to_execute": ["*"],
        "auth_type": "per_user_oauth",
        "oauth": {
            "authorize_url": f"{origin}/authorize",
            "token_url": f"{origin}/token",
            "client_id": "gateway",
            "client_secret": "env.PROTECTED_CLIENT_SECRET",
        },
    }


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    with authorization_server("--rotate-refresh") as origin:
        server = configured(origin)
        env = {
            "PROTECTED_CLIENT_SECRET": SECRET,
            "MCPGW_ADMIN_TOKEN": ADMIN["authorization"].removeprefix("Bearer "),
            # An identity's session closes once idle this long, and opens on its next call
            # with the refresh token registry kept: the rotated one, or the upstream refuses.
            "MCPGW_KEYED_IDLE_SECONDS": "1",
        }
        with service_tree(tmp_path, [server], env=env, ready=()) as (base,):
            operator_authorizes(base)
            yield base, str(tmp_path), origin


def operator_authorizes(base: str, login: str = "") -> None:
    """The operator's one authorization (the shared session, and so the catalog), and the
    server connected on it."""
    started: list[str] = []

    def authorize() -> bool:
        answer = httpx2.post(f"{base}/api/mcp/client/personal/oauth/authorize", headers=ADMIN, timeout=20)
        assert answer.status_code in (200, 503), answer.text
        started.extend([answer.json()["authorization_url"]] if answer.status_code == 200 else [])
        return bool(started)

    wait_until(authorize, 20, "registry ready to authorize")
    authorized = httpx2.get(started[0] + login, follow_redirects=True, timeout=10)
    assert authorized.text.startswith("Authorized"), authorized.text

    def listed() -> bool:
        servers = httpx2.get(f"{base}/api/servers", headers=ADMIN, timeout=10).json()
        return bool(servers and servers[0]["state"] == "connected")

    wait_until(listed, 30, "the authorized server connected")


def key(base: str, name: str) -> dict[str, Any]:
    body = {"name": name, "mcp_configs": [{"mcp_client_name": "personal", "tools_to_execute": ["*"]}]}
    created = httpx2.post(f"{base}/api/keys", json=body, headers=ADMIN, timeout=10)
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


def test_each_identity_reaches_the_server_as_its_own_account(gateway: tuple[str, str, str]) -> None:
    base, tmp, origin = gateway
    mcp = f"{base}/mcp"
    alice, bob = key(base, "alice"), key(base, "bob")
    # No identity, no account: with a per_user_oauth server, /mcp offers OAuth sign-in too.
    hello = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    anonymous = httpx2.post(mcp, json=hello, headers={"accept": ACCEPT})
    assert anonymous.status_code == 401
    assert "resource_metadata=" in anonymous.headers["www-authenticate"]

    # A client without URL elicitation: a tool error naming the link, for its model or person.
    as_alice = Client(mcp, alice["secret"])
    link = link_in(as_alice.whoami())
    assert urlsplit(link).netloc == urlsplit(base).netloc
    connected = connect(link, "alice", alice["secret"])
    assert connected.status_code == 200 and "Connected" in connected.text
    assert person(as_alice.whoami()) == "alice"

    # A client that opens URLs: URL elicitation required (-32042), as MCP 2025-11-25 puts it.
    as_bob = Client(mcp, bob["secret"], {"elicitation": {"form": {}, "url": {}}})
    error = as_bob.whoami()["error"]
    assert error["code"] == -32042
    (elicitation,) = error["data"]["elicitations"]
    assert elicitation["mode"] == "url" and elicitation["elicitationId"]
    assert elicitation["url"] == error["data"]["connect_url"]
    # Bob's session listens: once he has connected, it hears the elicitation is complete.
    with httpx2.stream("GET", mcp, headers=as_bob.headers, timeout=10) as listening:
        assert listening.status_code == 200
        assert connect(elicitation["url"], "bob", bob["secret"]).status_code == 200
        heard = next(line for line in listening.iter_lines() if "notifications/elicitation/complete" in line)
    assert json.loads(heard.removeprefix("data:"))["params"] == {
        "elicitationId": elicitation["elicitationId"]
    }
    assert person(as_bob.whoami()) == "bob"
    assert person(as_alice.whoami()) == "alice"

    # The upstream revokes bob's authorization while his session is open: his next call
    # answers with the link again.
    httpx2.post(f"{origin}/revoke-all?user=bob", timeout=5).raise_for_status()
    revoked = as_bob.whoami()
    assert "error" in revoked and revoked["error"]["code"] == -32042, revoked
    assert connect(revoked["error"]["data"]["connect_url"], "bob", bob["secret"]).status_code == 200
    assert person(as_bob.whoami()) == "bob"

    # Each person sees their connections; the operator sees everyone's.
    mine = httpx2.get(f"{base}/oauth/connections", headers={"authorization": f"Bearer {alice['secret']}"})
    assert mine.json() == {"connected": ["personal"]}
    everyone = httpx2.get(f"{base}/api/mcp/client/personal/oauth/connections", headers=ADMIN).json()
    assert sorted(c["key_id"] for c in everyone) == sorted([alice["id"], bob["id"]])

    # Alice's session closes when idle and opens again on the refresh token registry kept:
    # the upstream spent the first one when it rotated it.
    closed = f"closing the idle session of key {alice['id']}"
    log = Path(tmp) / "services.log"
    wait_until(lambda: closed in log.read_text(errors="replace"), 10, "alice's idle session closed")
    assert person(as_alice.whoami()) == "alice"
    # The refresh tokens are sealed at rest.
    with closing(sqlite3.connect(Path(tmp) / "registry.db")) as db:
        kept = [row[0] for row in db.execute("SELECT credential FROM user_tokens")]
    assert len(kept) == 2 and all(token.startswith("fernet:") for token in kept)

    # Alice disconnects: her next call needs the account again.
    gone = httpx2.delete(
        f"{base}/oauth/connections/personal", headers={"authorization": f"Bearer {alice['secret']}"}
    )
    assert gone.status_code == 204
    wait_until(lambda: as_alice.whoami()["result"].get("isError") is True, 10, "alice's session closed")
    link_in(as_alice.whoami())
    assert person(as_bob.whoami()) == "bob"
    # The operator disconnects bob.
    url = f"{base}/api/mcp/client/personal/oauth/connections/{bob['id']}"
    assert httpx2.delete(url, headers=ADMIN).status_code == 204
    assert httpx2.delete(url, headers=ADMIN).status_code == 404
    wait_until(lambda: "error" in as_bob.whoami(), 10, "bob's session closed")
    assert httpx2.get(f"{base}/api/mcp/client/personal/oauth/connections", headers=ADMIN).json() == []
    with closing(sqlite3.connect(Path(tmp) / "registry.db")) as db:
        assert db.execute("SELECT count(*) FROM user_tokens").fetchone() == (0,)


def test_a_connect_link_is_good_only_as_issued(gateway: tuple[str, str, str]) -> None:
    base, _, _ = gateway
    mcp = f"{base}/mcp"
    carol = key(base, "carol")
    link = link_in(Client(mcp, carol["secret"]).whoami())
    ticket = link.partition("?ticket=")[2]
    with httpx2.Client(timeout=10) as browser:
        forged = browser.get(f"{base}/oauth/connect/personal?ticket={ticket[:-2]}xx")
        assert forged.status_code == 400 and "not valid" in forged.text
        elsewhere = browser.get(f"{base}/oauth/connect/other?ticket={ticket}")
        assert elsewhere.status_code == 400
        # Someone else's key, or a post from another site, starts nothing.
        mallory = key(base, "mallory")
        refused = start(browser, link, mallory["secret"])
        assert refused.status_code == 200 and "not the key this link was issued to" in refused.text
        ticket_form = {"ticket": ticket, "key": carol["secret"]}
        elsewhere_post = browser.post(link, data=ticket_form, headers={"origin": "http://evil.test"})
        assert elsewhere_post.status_code == 403
        to_upstream = start(browser, link, carol["secret"])
        back = browser.get(to_upstream.headers["location"] + "&user=carol").headers["location"]
    # Another browser (no cookie from the start of the flow) cannot complete it.
    stranger = httpx2.get(back, timeout=10)
    assert stranger.status_code == 400 and "did not start" in stranger.text
    # Nor the operator's callback, which checks no browser: an identity's flow is not its kind.
    operators = httpx2.get(back.replace("/oauth/callback", "/api/oauth/callback"), timeout=10)
    assert operators.status_code == 404 and "of this kind" in operators.text
    # Two flows open in one browser (two tabs) each complete, in either order.
    dora = key(base, "dora")
    dora_link = link_in(Client(mcp, dora["secret"]).whoami())
    with httpx2.Client(timeout=10) as browser:
        backs = [
            browser.get(start(browser, dora_link, dora["secret"]).headers["location"] + "&user=dora").headers[
                "location"
            ]
            for _ in range(2)
        ]
        assert [browser.get(b).status_code for b in reversed(backs)] == [200, 200]
    # Nor can a key that was deleted meanwhile connect: its ticket names a key that is gone.
    assert httpx2.delete(f"{base}/api/keys/{carol['id']}", headers=ADMIN).status_code == 204
    with httpx2.Client(timeout=10) as browser:
        assert start(browser, link, carol["secret"]).status_code == 200  # the key is gone: asked again


@contextmanager
def typescript_upstream(token_seconds: int = 3600) -> Iterator[str]:
    port = free_port()
    argv = [str(NODE), str(NODE_DIR / "oauth-upstream.mjs"), str(port), str(token_seconds)]
    with running(argv) as process:
        wait_until(lambda: port_open(port), 15, "the TypeScript SDK's OAuth upstream", process)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def ts_upstream() -> Iterator[str]:
    with typescript_upstream() as origin:
        yield origin


def bifrost_shaped(origin: str) -> dict[str, Any]:
    return {
        "name": "personal",
        "connection_type": "http",
        "connection_string": f"{origin}/mcp",
        "tools_to_execute": ["*"],
        "auth_type": "per_user_oauth",
        "oauth_config": {"scopes": ["mcp:tools"], "id": "bifrost-config-1"},
    }


def test_a_bifrost_config_with_nothing_but_the_auth_type_works_against_the_typescript_sdk(
    tmp_path: Path, ts_upstream: str
) -> None:
    """Bifrost's shape, endpoints and client left out: the gateway discovers the upstream's
    authorization server (RFC 9728, RFC 8414), registers itself (RFC 7591), authenticates as
    the server's metadata allows (client_secret_post), and asks every token for the resource
    (RFC 8707); the TypeScript SDK's own auth handlers check each step."""
    server = {
        "name": "personal",
        "connection_type": "http",
        "connection_string": f"{ts_upstream}/mcp",
        "tools_to_execute": ["*"],
        "auth_type": "per_user_oauth",
        "oauth_config": {"scopes": ["mcp:tools"], "id": "bifrost-config-1"},
    }
    env = {
        "MCPGW_ADMIN_TOKEN": ADMIN["authorization"].removeprefix("Bearer "),
        "MCPGW_KEYED_IDLE_SECONDS": "1",
    }
    with service_tree(tmp_path, [server], env=env, ready=()) as (base,):
        operator_authorizes(base, "&user=operator")
        mcp = f"{base}/mcp"
        dana = key(base, "dana")
        as_dana = Client(mcp, dana["secret"])
        assert connect(link_in(as_dana.whoami()), "dana", dana["secret"]).status_code == 200
        assert person(as_dana.whoami()) == "dana"
        # Her session closes when idle and opens again on the rotated refresh token.
        closed = f"closing the idle session of key {dana['id']}"
        wait_until(lambda: closed in (tmp_path / "services.log").read_text(errors="replace"), 10, "idle")
        assert person(as_dana.whoami()) == "dana"
        stats = httpx2.get(f"{ts_upstream}/stats", timeout=5).json()
        assert stats["registrations"] == 1
        assert set(stats["resources"]) == {f"{ts_upstream}/mcp"}
        # The upstream ends her tokens: the next call asks her to connect again.
        httpx2.post(f"{ts_upstream}/revoke-user?user=dana", timeout=5).raise_for_status()
        link_in(as_dana.whoami())


def test_an_upstream_that_issues_no_refresh_token_is_used_on_its_access_token(tmp_path: Path) -> None:
    """As GitHub's OAuth apps: the authorization leaves an access token and nothing to
    refresh it with; the gateway uses it until the upstream refuses it, then asks again."""
    with authorization_server("--no-refresh", "--token-seconds", "600") as origin:
        server = configured(origin)
        env = {
            "PROTECTED_CLIENT_SECRET": SECRET,
            "MCPGW_ADMIN_TOKEN": ADMIN["authorization"].removeprefix("Bearer "),
        }
        with service_tree(tmp_path, [server], env=env, ready=()) as (base,):
            operator_authorizes(base)
            erin = key(base, "erin")
            as_erin = Client(f"{base}/mcp", erin["secret"])
            assert connect(link_in(as_erin.whoami()), "erin", erin["secret"]).status_code == 200
            assert person(as_erin.whoami()) == "erin"
            # The upstream forgets every token: the next call offers the link again.
            httpx2.post(f"{origin}/revoke-all", timeout=5).raise_for_status()
            link_in(as_erin.whoami())


def test_connector_replicas_share_rotating_refresh_tokens(tmp_path: Path) -> None:
    """Two connectors each hold a session as the operator and as the identity, on tokens
    that last 2 s from an upstream that rotates refresh tokens and revokes the grant should a
    spent one come back: registry alone spends them, so none is presented twice, and
    refreshes follow the tokens' lifetime, not the replicas or the calls."""
    with typescript_upstream(token_seconds=2) as origin:
        env = {"MCPGW_ADMIN_TOKEN": ADMIN["authorization"].removeprefix("Bearer ")}
        with service_tree(tmp_path, [bifrost_shaped(origin)], env=env, connectors=2, ready=()) as (base,):
            operator_authorizes(base, "&user=operator")
            fay = key(base, "fay")
            as_fay = Client(f"{base}/mcp", fay["secret"])
            assert connect(link_in(as_fay.whoami()), "fay", fay["secret"]).status_code == 200

            def stats() -> dict[str, int]:
                return httpx2.get(f"{origin}/stats", timeout=5).json()  # type: ignore[no-any-return]

            # Calls alternate between the replicas while tokens expire under them.
            started, before, calls = time.monotonic(), stats()["refreshes"], 0

            def refreshed_a_few_times() -> bool:
                nonlocal calls
                assert person(as_fay.whoami()) == "fay"
                calls += 1
                return stats()["refreshes"] - before >= 6

            wait_until(refreshed_a_few_times, 30, "tokens renewed under the calls")
            seen, elapsed = stats(), time.monotonic() - started
            assert (seen["reused"], seen["refused"]) == (0, 0), seen
            # Two grants (the operator's, fay's), each renewed 0.2 s before its 2 s run out.
            assert seen["refreshes"] - before <= 2 * (elapsed / 1.8 + 1), (seen, elapsed, calls)
            assert calls > seen["refreshes"] - before
            servers = httpx2.get(f"{base}/api/servers", headers=ADMIN, timeout=10).json()
            assert servers[0]["state"] == "connected", servers


async def _python_sdk_connects(mcp: str, secret: str) -> str:
    """The official Python client: its call raises the URL elicitation the SDK reads
    (`UrlElicitationRequiredError`), its person opens the URL, and its retry goes through."""

    async def elicit(context: Any, params: Any) -> Any:
        raise AssertionError("nothing is elicited in-band")

    headers = {"authorization": f"Bearer {secret}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(mcp, http_client=http) as (read, write),
        ClientSession(read, write, elicitation_callback=elicit) as session,
    ):
        await session.initialize()
        with pytest.raises(MCPError) as raised:
            await session.call_tool("personal_whoami", {})
        (asked,) = UrlElicitationRequiredError.from_error(raised.value.error).elicitations
        connected = await anyio.to_thread.run_sync(connect, asked.url, "gil", secret)
        assert connected.status_code == 200
        result = await session.call_tool("personal_whoami", {})
        assert not result.is_error
        block = result.content[0]
        assert isinstance(block, TextContent)
        return block.text


def test_the_python_sdk_client_reads_the_url_elicitation(gateway: tuple[str, str, str]) -> None:
    base, _, _ = gateway
    gil = key(base, "gil")
    assert anyio.run(_python_sdk_connects, f"{base}/mcp", gil["secret"]) == "gil"


def test_the_typescript_sdk_client_reads_the_url_elicitation(gateway: tuple[str, str, str]) -> None:
    base, _, _ = gateway
    hana = key(base, "hana")
    argv = [
        str(NODE),
        str(NODE_DIR / "connect-client.mjs"),
        f"{base}/mcp",
        hana["secret"],
        "personal_whoami",
        "hana",
    ]
    ran = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report == {
        "code": -32042,
        "isUrlElicitation": True,
        "mode": "url",
        "connected": 200,
        "after": "hana",
    }
