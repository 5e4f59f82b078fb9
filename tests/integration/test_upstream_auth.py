"""A downstream behind OAuth 2.0: the connector gets a token with the client credentials
grant from a real local authorization server, refreshes it before it expires, and gets a
new one when the downstream refuses the old one (401)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.up.main import free_port
from tests.integration.test_gateway_http import call, initialize, post
from tests.processes import ROOT, port_open, python_script, running, service_tree, wait_until

AUTH_SERVER = ROOT / "tests" / "servers" / "oauth_server.py"
SECRET = "client-secret-never-stored"
TOKEN_SECONDS = 2


@contextmanager
def authorization_server(*extra: str) -> Iterator[str]:
    port = free_port()
    argv = python_script(
        AUTH_SERVER, "--port", str(port), "--client-id", "gateway", "--client-secret", SECRET,
        "--token-seconds", str(TOKEN_SECONDS), *extra,
    )  # fmt: skip
    with running(argv) as process:
        wait_until(lambda: port_open(port), 15, "authorization server", process)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def protected(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    with authorization_server() as origin:
        server = {
            "name": "protected",
            "connection_type": "http",
            "connection_string": f"{origin}/mcp/",
            "tools_to_execute": ["*"],
            "auth_type": "oauth",
            "oauth": {
                "token_url": f"{origin}/token",
                "client_id": "gateway",
                "client_secret": "env.PROTECTED_CLIENT_SECRET",
            },
        }
        env = {"PROTECTED_CLIENT_SECRET": SECRET}
        with service_tree(tmp_path, [server], env=env) as (base,):
            yield f"{base}/mcp", origin, tmp_path


def stats(origin: str) -> dict[str, int]:
    return httpx2.get(f"{origin}/stats", timeout=5).json()  # type: ignore[no-any-return]


def whoami(mcp: str, session: str) -> str:
    answer = call(mcp, session, "protected_whoami", {})
    assert "result" in answer and not answer["result"].get("isError"), answer
    return str(answer["result"]["content"][0]["text"])


def test_calls_carry_a_token_the_connector_got_and_refreshes(protected: tuple[str, str, Path]) -> None:
    mcp, origin, state = protected
    session = initialize(mcp)
    listed = post(mcp, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session).json()["result"]["tools"]
    assert [t["name"] for t in listed] == ["protected_whoami"]
    assert whoami(mcp, session) == "authorized"
    first = stats(origin)["issued"]
    assert first >= 1
    # Calls keep succeeding across the token's expiry: a new one is fetched before it lapses.
    deadline = time.monotonic() + 6 * TOKEN_SECONDS
    while stats(origin)["issued"] == first:
        assert time.monotonic() < deadline, "no new token was fetched as the first one expired"
        assert whoami(mcp, session) == "authorized"
    assert whoami(mcp, session) == "authorized"
    # Tokens revoked at the authorization server: the refusal (401) fetches a new one.
    before = stats(origin)
    httpx2.post(f"{origin}/revoke-all", timeout=5)
    assert whoami(mcp, session) == "authorized"
    after = stats(origin)
    assert after["refused"] > before["refused"] and after["issued"] > before["issued"]
    # The client secret was a reference: the registry never saw it.
    assert SECRET.encode() not in (state / "registry.db").read_bytes()


def _error(base: str, admin: dict[str, str]) -> str:
    """The server's error, or "" while the registry is still starting (the API answers 503)."""
    answer = httpx2.get(f"{base}/api/servers", headers=admin, timeout=10)
    if answer.status_code == 503:
        return ""
    answer.raise_for_status()
    return str(answer.json()[0]["error"])


def test_a_person_authorizes_once_through_the_api_and_the_connector_refreshes(tmp_path: Path) -> None:
    with authorization_server() as origin:
        server = {
            "name": "consented",
            "connection_type": "http",
            "connection_string": f"{origin}/mcp/",
            "tools_to_execute": ["*"],
            "auth_type": "oauth",
            "oauth": {
                "grant_type": "authorization_code",
                "authorize_url": f"{origin}/authorize",
                "token_url": f"{origin}/token",
                "client_id": "gateway",
                "client_secret": "env.PROTECTED_CLIENT_SECRET",
            },
        }
        env = {"PROTECTED_CLIENT_SECRET": SECRET, "MCPGW_ADMIN_TOKEN": "oauth-admin"}
        with service_tree(tmp_path, [server], env=env, ready=()) as (base,):
            admin = {"authorization": "Bearer oauth-admin"}
            wait_until(
                lambda: "not authorized yet" in _error(base, admin), 20, "the server waiting for consent"
            )
            started = httpx2.post(
                f"{base}/api/mcp/client/consented/oauth/authorize", headers=admin, timeout=10
            )
            url = started.json()["authorization_url"]
            assert "code_challenge_method=S256" in url and "state=" in url
            # The person's browser: the authorization server consents and sends it back to the edge.
            consent = httpx2.get(url, follow_redirects=True, timeout=10)
            assert consent.status_code == 200 and consent.text.startswith("Authorized")
            # The same state cannot be used twice.
            assert httpx2.get(str(consent.url), timeout=10).status_code == 404
            mcp = f"{base}/mcp"
            session = initialize(mcp)

            def listed() -> bool:
                body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
                tools = post(mcp, body, session).json()["result"]["tools"]
                return [t["name"] for t in tools] == ["consented_whoami"]

            wait_until(listed, 30, "the authorized server connected")
            answer = call(mcp, session, "consented_whoami", {})
            assert answer["result"]["content"][0]["text"] == "authorized"
            first = stats(origin)["issued"]
            deadline = time.monotonic() + 6 * TOKEN_SECONDS
            while stats(origin)["issued"] == first:
                assert time.monotonic() < deadline, "the refresh token was never used"
                assert (
                    call(mcp, session, "consented_whoami", {})["result"]["content"][0]["text"] == "authorized"
                )
        refresh_tokens = (tmp_path / "registry.db").read_bytes()
        assert b"oauth-refresh" in refresh_tokens and b"fernet:" in refresh_tokens


def test_a_per_user_server_is_reached_with_each_keys_own_credentials(tmp_path: Path) -> None:
    with authorization_server("--user-tokens", "alice-token=alice,bob-token=bob") as origin:
        server = {
            "name": "personal",
            "connection_type": "http",
            "connection_string": f"{origin}/mcp/",
            "tools_to_execute": ["*"],
            "per_user": True,
        }
        # A key's own session closes once idle this long (and opens again on its next call).
        env = {"MCPGW_ADMIN_TOKEN": "per-user-admin", "MCPGW_KEYED_IDLE_SECONDS": "1"}
        with service_tree(tmp_path, [server], env=env, ready=()) as (base,):
            admin = {"authorization": "Bearer per-user-admin"}
            everyone = [{"mcp_client_name": "personal", "tools_to_execute": ["*"]}]
            keys = {}
            for name in ("alice", "bob", "carol"):
                created = httpx2.post(
                    f"{base}/api/keys",
                    json={"name": name, "mcp_configs": everyone},
                    headers=admin,
                    timeout=10,
                ).json()
                keys[name] = created
            for name in ("alice", "bob"):
                credentials = {"headers": {"Authorization": f"Bearer {name}-token"}}
                url = f"{base}/api/keys/{keys[name]['id']}/credentials/personal"
                assert httpx2.put(url, json=credentials, headers=admin, timeout=10).status_code == 204
            mcp = f"{base}/mcp"

            def whoami(name: str) -> dict[str, object]:
                hello = {
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": name},
                    },
                }
                auth = {"authorization": f"Bearer {keys[name]['secret']}"}
                opened = httpx2.post(
                    mcp, json=hello, headers={"accept": "application/json, text/event-stream", **auth}
                )
                session = opened.headers["mcp-session-id"]
                body = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": "personal_whoami"},
                }
                answer = httpx2.post(
                    mcp,
                    json=body,
                    headers={
                        "accept": "application/json, text/event-stream",
                        "mcp-session-id": session,
                        **auth,
                    },
                    timeout=30,
                )
                return answer.json()  # type: ignore[no-any-return]

            def served() -> bool:
                return "result" in whoami("alice")

            wait_until(served, 30, "the per-user server reachable")
            assert whoami("alice")["result"]["content"][0]["text"] == "alice"  # type: ignore[index]
            assert whoami("bob")["result"]["content"][0]["text"] == "bob"  # type: ignore[index]
            refused = whoami("carol")["result"]
            assert refused["isError"] is True  # type: ignore[index]
            assert "your own credentials" in refused["content"][0]["text"]  # type: ignore[index]
            closed = f"closing the idle session of key {keys['alice']['id']}"
            log = tmp_path / "services.log"
            wait_until(lambda: closed in log.read_text(errors="replace"), 10, "alice's idle session closed")
            assert whoami("alice")["result"]["content"][0]["text"] == "alice"  # type: ignore[index]
            # The credentials are sealed in the registry like every other upstream secret.
        assert b"alice-token" not in (tmp_path / "registry.db").read_bytes()


def test_client_credentials_with_a_private_key_jwt(tmp_path: Path) -> None:
    """RFC 7523: the connector proves the client with an assertion its private key signs
    (kept as the client secret, an env.NAME reference); no shared secret is ever sent."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "client.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with authorization_server("--client-public-key", str(public)) as origin:
        server = {
            "name": "signed",
            "connection_type": "http",
            "connection_string": f"{origin}/mcp/",
            "tools_to_execute": ["*"],
            "auth_type": "client_credentials",
            "oauth": {
                "token_url": f"{origin}/token",
                "client_id": "gateway",
                "client_secret": "env.SIGNED_CLIENT_KEY",
                "token_endpoint_auth_method": "private_key_jwt",
            },
        }
        with service_tree(tmp_path, [server], env={"SIGNED_CLIENT_KEY": private}) as (base,):
            mcp = f"{base}/mcp"
            session = initialize(mcp)
            answer = call(mcp, session, "signed_whoami", {})
            assert answer["result"]["content"][0]["text"] == "authorized", answer
            assert stats(origin)["issued"] >= 1
