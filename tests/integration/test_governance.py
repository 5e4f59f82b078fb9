"""Governance over the real process tree: keys, groups and the blocklist administered through
/api/ on one edge and enforced by both, a key from a Bifrost-shaped config file, bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.integration.test_gateway_http import ACCEPT
from tests.processes import ROOT, service_tree, stdio_server, wait_until

ADMIN = "admin-token-for-tests"
# How long edges may take to follow a change (registry.changed, then a snapshot).
FOLLOW_SECONDS = 5
FILE_KEY = "sk-bf-file-key-0123456789abcdef"
SERVERS = [
    stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py"),
    stdio_server("conf", ROOT / "tests" / "servers" / "conformance_server.py"),
]
# Bifrost's shape, as an operator would bring it over.
GOVERNANCE = {
    "governance": {
        "virtual_keys": [
            {
                "id": "vk-from-file",
                "name": "from-file",
                "value": FILE_KEY,
                "is_active": True,
                "budget": {"max_limit": 10},
                "mcp_configs": [{"mcp_client_name": "conf", "tools_to_execute": ["test_sampling"]}],
            }
        ]
    }
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    tmp = tmp_path_factory.mktemp("governance")
    env = {"MCPGW_ADMIN_TOKEN": ADMIN}
    with service_tree(tmp, SERVERS, edges=2, env=env, config=GOVERNANCE) as (one, two):
        yield one, two, tmp


def api(base: str, method: str, path: str, body: Any = None, token: str = ADMIN) -> httpx2.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx2.request(method, f"{base}/api{path}", json=body, headers=headers, timeout=10)
    assert response.status_code < 500, response.text
    return response


def rpc(
    url: str, method: str, params: dict[str, Any] | None = None, key: str | None = None
) -> httpx2.Response:
    """One stateless (2026-07-28) request, so every call authenticates on its own."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**(params or {}), "_meta": meta}}
    headers = {
        "accept": ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": method,
    }
    if method == "tools/call":
        headers["mcp-name"] = str((params or {}).get("name"))
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx2.post(url, content=json.dumps(body), headers=headers, timeout=30)


def tools(url: str, key: str | None = None) -> set[str]:
    response = rpc(url, "tools/list", key=key)
    assert response.status_code == 200, response.text
    return {t["name"] for t in response.json()["result"]["tools"]}


def call(url: str, name: str, key: str | None, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return rpc(url, "tools/call", {"name": name, "arguments": arguments or {}}, key).json()  # type: ignore[no-any-return]


def test_keys_groups_and_the_blocklist_shape_each_view(tree: tuple[str, str, Path]) -> None:
    one, two, state = tree
    created = api(
        one,
        "POST",
        "/keys",
        {
            "name": "team-a",
            "mcp_configs": [{"mcp_client_name": "fixture", "tools_to_execute": ["echo", "weather", "fail"]}],
        },
    )
    assert created.status_code == 201
    key_a, key_a_id = created.json()["secret"], created.json()["id"]
    assert key_a.startswith("vk_") and len(key_a) >= 3 + 22
    group = {
        "name": "ops",
        "tools": [
            {"mcp_client_name": "fixture", "tools_to_execute": ["count", "fail"]},
            {"mcp_client_name": "conf", "tools_to_execute": ["test_simple_text"]},
        ],
    }
    assert api(one, "POST", "/groups", group).status_code == 201
    key_b = api(one, "POST", "/keys", {"name": "team-b", "groups": ["ops"]}).json()["secret"]
    assert api(one, "PUT", "/blocklist", {"patterns": ["fixture_fail"]}).json() == {
        "patterns": ["fixture_fail"]
    }
    mcp_one, mcp_two = f"{one}/mcp", f"{two}/mcp"
    for url in (mcp_one, mcp_two):
        wait_until(
            partial(lambda at: "fixture_fail" not in tools(at, key_b), url),
            FOLLOW_SECONDS,
            "the edges following the change",
        )
    assert tools(mcp_two, key_a) == {"fixture_echo", "fixture_weather"}
    assert (
        call(mcp_two, "fixture_echo", key_a, {"text": "allowed"})["result"]["content"][0]["text"] == "allowed"
    )
    forbidden = call(mcp_one, "fixture_count", key_a, {"to": 1})["error"]
    unknown = call(mcp_one, "fixture_nothing_at_all", key_a)["error"]
    # A tool the key may not use looks exactly like one that does not exist.
    assert forbidden["code"] == unknown["code"] == -32602
    assert forbidden["message"] == unknown["message"].replace("fixture_nothing_at_all", "fixture_count")
    assert tools(mcp_one, key_b) == {"fixture_count", "conf_test_simple_text"}
    assert tools(f"{mcp_two}/ops", key_b) == {"count", "test_simple_text"}
    assert rpc(f"{mcp_two}/ops", "tools/list", key=key_a).status_code == 404
    everything = tools(mcp_one)
    assert "fixture_fail" not in everything and {"fixture_echo", "conf_test_sampling"} <= everything
    # The file's key (Bifrost shape) works as is.
    assert tools(mcp_two, FILE_KEY) == {"conf_test_sampling"}
    # No secret is stored in plaintext anywhere in the registry's database.
    database = (state / "registry.db").read_bytes()
    for secret in (key_a, key_b, FILE_KEY):
        assert secret.encode() not in database
    with sqlite3.connect(state / "registry.db") as db:
        stored = {name: hashed for name, hashed in db.execute("SELECT name, secret_hash FROM virtual_keys")}
    assert set(stored) == {"team-a", "team-b", "from-file"} and all(len(h) == 64 for h in stored.values())
    # Revoked through one edge, refused by the other within a second.
    assert api(one, "DELETE", f"/keys/{key_a_id}").status_code == 204
    revoked = time.monotonic()
    while rpc(mcp_two, "tools/list", key=key_a).status_code != 401:
        assert time.monotonic() - revoked < 1.0, "key A still works on edge 2 a second after revocation"
    refused = rpc(mcp_two, "tools/list", key=key_a)
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert "not recognised" in refused.json()["error"]["message"]


def test_requiring_a_key_refuses_requests_without_one(tree: tuple[str, str, Path]) -> None:
    one, two, _ = tree
    changed = api(one, "PUT", "/settings", {"enforce_governance_header": True}).json()
    assert changed == {"require_key": True, "mcp_server_auth_mode": None}
    try:
        wait_until(
            lambda: rpc(f"{two}/mcp", "tools/list").status_code == 401,
            FOLLOW_SECONDS,
            "the edges following the change",
        )
        response = rpc(f"{two}/mcp", "tools/list")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "requires a virtual key" in response.json()["error"]["message"]
        assert tools(f"{two}/mcp", FILE_KEY) == {"conf_test_sampling"}
        for header in ("x-api-key", "x-bf-virtual-key"):
            listed = httpx2.post(
                f"{two}/mcp",
                json={
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "h"},
                    },
                },
                headers={"accept": ACCEPT, header: FILE_KEY},
                timeout=10,
            )
            assert listed.status_code == 200, header
    finally:
        api(one, "PUT", "/settings", {"require_key": False})
        wait_until(
            lambda: rpc(f"{two}/mcp", "tools/list").status_code == 200,
            FOLLOW_SECONDS,
            "the edges following the change",
        )


def test_switching_a_tool_off_hides_it_everywhere(tree: tuple[str, str, Path]) -> None:
    one, two, _ = tree
    listed = api(one, "GET", "/tools?server=fixture").json()
    assert {
        "server": "fixture",
        "name": "echo",
        "exposed_name": "fixture_echo",
        "enabled": True,
    }.items() <= next(t for t in listed if t["name"] == "echo").items()
    assert api(one, "PUT", "/tools/fixture/echo", {"enabled": False}).status_code == 200
    try:
        wait_until(
            lambda: "fixture_echo" not in tools(f"{two}/mcp"),
            FOLLOW_SECONDS,
            "the edges following the change",
        )
        assert call(f"{two}/mcp", "fixture_echo", None, {"text": "x"})["error"]["code"] == -32602
    finally:
        api(one, "PUT", "/tools/fixture/echo", {"enabled": True})
        wait_until(
            lambda: "fixture_echo" in tools(f"{two}/mcp"), FOLLOW_SECONDS, "the edges following the change"
        )


def test_bad_admin_input_is_refused_with_the_field_named(tree: tuple[str, str, Path]) -> None:
    one, _, _ = tree
    unknown_server = api(
        one,
        "POST",
        "/keys",
        {"name": "x", "mcp_configs": [{"mcp_client_name": "nope", "tools_to_execute": ["*"]}]},
    )
    assert unknown_server.status_code == 422
    assert unknown_server.json()["error"]["field"] == "mcp_configs[0].mcp_client_name"
    malformed = api(
        one,
        "POST",
        "/keys",
        {"name": "y", "mcp_configs": [{"mcp_client_name": "fixture", "tools_to_execute": ["ec*ho"]}]},
    )
    assert (malformed.status_code, malformed.json()["error"]["field"]) == (
        422,
        "mcp_configs[0].tools_to_execute[0]",
    )
    assert api(one, "POST", "/keys", {"name": "dup"}).status_code == 201
    assert api(one, "POST", "/keys", {"name": "dup"}).status_code == 409
    assert api(one, "POST", "/groups", {"name": "fixture"}).status_code == 409
    assert api(one, "POST", "/groups", {"name": "bad name!"}).status_code == 422
    assert api(one, "PUT", "/blocklist", {"patterns": ["a*b"]}).status_code == 422
    assert api(one, "POST", "/keys", {"name": ""}).json()["error"]["field"] == "name"
    assert api(one, "DELETE", "/keys/vk-nothing").status_code == 404
    # Without the admin token, with a wrong one, or with a virtual key instead: 401.
    for token in ("", "wrong", FILE_KEY):
        refused = api(one, "GET", "/keys", token=token)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    garbage = httpx2.post(
        f"{one}/api/keys",
        content=b"{not json",
        headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"},
    )
    assert garbage.status_code == 422
    huge = httpx2.post(
        f"{one}/api/keys",
        content=b"x" * (5 * 1024 * 1024),
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert huge.status_code == 413
    # Listing never shows a secret.
    assert all("secret" not in k for k in api(one, "GET", "/keys").json())


def test_servers_are_added_and_removed_live(tree: tuple[str, str, Path]) -> None:
    one, two, _ = tree
    config = {
        "name": "extra",
        "connection_type": "stdio",
        "stdio_config": {
            "command": SERVERS[0]["stdio_config"]["command"],
            "args": SERVERS[0]["stdio_config"]["args"],
        },
        "tools_to_execute": ["echo"],
    }
    assert api(one, "POST", "/servers", config).status_code == 201
    assert api(one, "POST", "/servers", config).status_code == 409
    try:
        wait_until(lambda: "extra_echo" in tools(f"{two}/mcp"), 20, "the edges following the change")
        states = {s["config"]["name"]: s for s in api(one, "GET", "/servers").json()}
        assert states["extra"]["state"] == "connected" and states["extra"]["source"] == "api"
        assert api(one, "POST", "/mcp/client/extra/reconnect").status_code == 202
        assert api(one, "POST", "/mcp/client/nowhere/reconnect").status_code == 404
    finally:
        assert api(one, "DELETE", "/servers/extra").status_code == 204
    wait_until(lambda: "extra_echo" not in tools(f"{two}/mcp"), 10, "the edges following the change")


def test_server_secrets_are_write_only_over_the_api(tree: tuple[str, str, Path]) -> None:
    one, _, _ = tree
    secret = "never-shown-3f9a"
    config = {
        "name": "sealed",
        "connection_type": "stdio",
        "stdio_config": {**SERVERS[0]["stdio_config"], "envs": {"FIXTURE_TOKEN": secret}},
        "tools_to_execute": ["environment_value"],
    }
    assert api(one, "POST", "/servers", config).status_code == 201
    try:
        listed = api(one, "GET", "/servers")
        assert secret not in listed.text
        shown = next(s["config"] for s in listed.json() if s["config"]["name"] == "sealed")
        assert shown["stdio_config"]["envs"] == {"FIXTURE_TOKEN": "<redacted>"}
        # Written back as read, with a change: the stored secret stays and still reaches the server.
        shown["tools_to_execute"] = ["environment_value", "echo"]
        updated = api(one, "PUT", "/servers/sealed", shown)
        assert updated.status_code == 200 and secret not in updated.text

        def reaches_the_server() -> bool:
            if "sealed_echo" not in tools(f"{one}/mcp"):
                return False
            answer = call(f"{one}/mcp", "sealed_environment_value", None, {"name": "FIXTURE_TOKEN"})
            return bool(answer["result"]["content"][0]["text"] == secret)

        wait_until(reaches_the_server, 20, "the updated server with its kept secret")
        # A secret the API never held cannot be kept: the field is named.
        missing = api(one, "PUT", "/servers/sealed", {**shown, "stdio_config": {**shown["stdio_config"],
                                                      "envs": {"OTHER": "<redacted>"}}})  # fmt: skip
        assert (missing.status_code, missing.json()["error"]["field"]) == (422, "stdio_config.envs.OTHER")
    finally:
        assert api(one, "DELETE", "/servers/sealed").status_code == 204


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"connection_string": "file:///etc/passwd"}, "connection_string"),
        ({"connection_string": "http://127.0.0.1:9/mcp\n"}, "connection_string"),
        ({"headers": {"X-Token": "a\r\nInjected: 1"}}, "headers"),
    ],
)
def test_a_server_the_connector_could_never_reach_is_refused(
    tree: tuple[str, str, Path], change: dict[str, Any], field: str
) -> None:
    one, _, _ = tree
    config = {"name": "unreachable", "connection_type": "http", "connection_string": "http://127.0.0.1:9/mcp"}
    refused = api(one, "POST", "/servers", {**config, **change})
    assert (refused.status_code, refused.json()["error"]["field"]) == (422, field), refused.text


def mcpgw(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "services.cli", *args, "--url", base, "--admin-token", ADMIN]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_the_cli_drives_the_api(tree: tuple[str, str, Path]) -> None:
    one, two, _ = tree
    created = mcpgw(one, "keys", "create", "cli-key", "--tools", "fixture:echo,weather", "--json")
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    assert issued["mcp_configs"] == [{"mcp_client_name": "fixture", "tools_to_execute": ["echo", "weather"]}]
    wait_until(
        lambda: tools(f"{two}/mcp", issued["secret"]) == {"fixture_echo", "fixture_weather"},
        FOLLOW_SECONDS,
        "the edges following the change",
    )
    table = mcpgw(one, "keys", "list")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "ACTIVE"]
    assert any(line.split()[1] == "cli-key" for line in table.stdout.splitlines()[1:])
    assert issued["secret"] not in table.stdout
    updated = mcpgw(one, "keys", "update", issued["id"], "--no-active", "--json")
    assert updated.returncode == 0 and json.loads(updated.stdout)["active"] is False
    wait_until(
        lambda: rpc(f"{two}/mcp", "tools/list", key=issued["secret"]).status_code == 401,
        FOLLOW_SECONDS,
        "the edges following the change",
    )
    assert "deactivated" in rpc(f"{two}/mcp", "tools/list", key=issued["secret"]).json()["error"]["message"]
    refused = mcpgw(one, "keys", "create", "bad", "--tools", "nowhere:x")
    assert refused.returncode == 1 and "mcp_configs[0].mcp_client_name" in refused.stderr
    servers = mcpgw(one, "servers", "list")
    assert servers.returncode == 0 and {"fixture", "conf"} <= {
        line.split()[0] for line in servers.stdout.splitlines()[1:]
    }
    assert mcpgw(one, "keys", "revoke", issued["id"]).returncode == 0
    assert json.loads(mcpgw(one, "blocklist", "add", "conf_test_error_handling", "--json").stdout)[
        "patterns"
    ][-1]


def test_a_session_hears_when_its_keys_view_changes_and_loses_its_stream_with_the_key(
    tree: tuple[str, str, Path],
) -> None:
    one, two, _ = tree
    assert api(one, "POST", "/groups", {"name": "watchers", "tools": []}).status_code == 201
    issued = api(one, "POST", "/keys", {"name": "watcher", "groups": ["watchers"]}).json()
    wait_until(
        lambda: rpc(f"{two}/mcp", "tools/list", key=issued["secret"]).status_code == 200,
        FOLLOW_SECONDS,
        "the edges following the change",
    )
    auth = {"authorization": f"Bearer {issued['secret']}"}
    hello = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "watcher"}},
    }
    session = httpx2.post(f"{two}/mcp", json=hello, headers={"accept": ACCEPT, **auth}, timeout=10)
    headers = {"accept": "text/event-stream", "mcp-session-id": session.headers["mcp-session-id"], **auth}
    with httpx2.stream("GET", f"{two}/mcp", headers=headers, timeout=30) as stream:
        lines = stream.iter_lines()
        assert next(lines) == ": stream open"
        widened = {
            "name": "watchers",
            "tools": [{"mcp_client_name": "fixture", "tools_to_execute": ["echo"]}],
        }
        assert api(one, "PUT", "/groups/watchers", widened).status_code == 200
        change = next(line for line in lines if line.startswith("data: "))
        assert json.loads(change[len("data: ") :])["method"] == "notifications/tools/list_changed"
        assert api(one, "DELETE", f"/keys/{issued['id']}").status_code == 204
        # The key is gone: its stream ends.
        assert all(not line.startswith("data: ") for line in lines)
    # Without its key the session is of no use to anyone.
    assert httpx2.get(f"{two}/mcp", headers=headers, timeout=10).status_code == 401
