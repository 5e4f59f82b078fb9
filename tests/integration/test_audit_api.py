"""The queryable audit end to end: a known mix of calls over two keys and two priced servers
(denied and unknown names included), read back through /api/audit, /api/usage and the CLI;
`mcpgw audit verify` on the untouched store, then after direct edits of the database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.integration.test_governance import api, call, rpc
from tests.processes import ROOT, service_tree, stdio_server, wait_until

ADMIN = "admin-token-for-tests"
FIXTURE = ROOT / "tests" / "servers" / "fixture_server.py"
KEY_A, KEY_B = "sk-bf-audit-key-a-0123456789abcdef", "sk-bf-audit-key-b-0123456789abcdef"
ALPHA = {**stdio_server("alpha", FIXTURE), "tool_pricing": {"echo": 0.01, "*": 0.001}}
BETA = {**stdio_server("beta", FIXTURE), "tool_pricing": {"*": 0.5}}
CONFIG = {
    "governance": {
        "virtual_keys": [
            {
                "id": "vk-a",
                "name": "a",
                "value": KEY_A,
                "is_active": True,
                "mcp_configs": [{"mcp_client_name": "alpha", "tools_to_execute": ["*"]}],
            },
            {
                "id": "vk-b",
                "name": "b",
                "value": KEY_B,
                "is_active": True,
                "mcp_configs": [
                    {"mcp_client_name": "alpha", "tools_to_execute": ["echo"]},
                    {"mcp_client_name": "beta", "tools_to_execute": ["*"]},
                ],
            },
        ]
    }
}
# Records the mix leaves: eight tool calls and one tools/list.
RECORDS = 9


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("audited")
    with service_tree(tmp, [ALPHA, BETA], env={"MCPGW_ADMIN_TOKEN": ADMIN}, config=CONFIG) as (base,):
        mcp = f"{base}/mcp"
        for _ in range(3):
            assert "result" in call(mcp, "alpha_echo", KEY_A, {"text": "x"})
        assert call(mcp, "alpha_fail", KEY_A, {"reason": "no"})["result"]["isError"] is True
        assert call(mcp, "nobody_nothing", KEY_A)["error"]["code"] == -32602
        for _ in range(2):
            assert "result" in call(mcp, "beta_echo", KEY_B, {"text": "y"})
        # Key B may not use alpha_fail: denied, answered as for an unknown tool.
        assert call(mcp, "alpha_fail", KEY_B, {"reason": "no"})["error"]["code"] == -32602
        assert rpc(mcp, "tools/list", key=KEY_B).status_code == 200
        wait_until(lambda: len(records(base)) == RECORDS, 20, "every record in the audit store")
        yield base, tmp


def records(base: str, **params: Any) -> list[dict[str, Any]]:
    answer = api(base, "GET", "/audit?" + "&".join(f"{k}={v}" for k, v in {"limit": 1000, **params}.items()))
    assert answer.status_code == 200, answer.text
    return answer.json()["records"]  # type: ignore[no-any-return]


def cli(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "services.cli", *args, "--url", base, "--admin-token", ADMIN]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_records_are_filtered_by_key_server_tool_and_outcome(audited: tuple[str, Path]) -> None:
    base, _ = audited
    mine = records(base, key="vk-a")
    assert [(r["name"], r["outcome"]) for r in mine] == [
        ("alpha_echo", "ok"),
        ("alpha_echo", "ok"),
        ("alpha_echo", "ok"),
        ("alpha_fail", "tool_error"),
        ("nobody_nothing", "error"),
    ]
    assert [r["cost"] for r in mine] == [0.01, 0.01, 0.01, 0.001, 0.0]
    assert {r["name"] for r in records(base, server="beta")} == {"beta_echo"}
    assert len(records(base, outcome="error")) == 2
    assert [r["method"] for r in records(base, method="tools/list")] == ["tools/list"]
    # A page and the next, by cursor.
    first = api(base, "GET", "/audit?limit=4").json()
    rest = api(base, "GET", f"/audit?limit=100&cursor={first['next_cursor']}").json()
    assert len(first["records"]) + len(rest["records"]) == RECORDS and rest["next_cursor"] is None
    assert api(base, "GET", "/audit?since=yesterday").status_code == 422
    # Past what the store's 64-bit columns hold: refused, not a 500 (the fuzzer found these).
    for query in (
        "cursor=813172597266034473876905263104",
        "min_latency_ms=6.9e16",
        "since=1e300",
        "until=inf",
    ):
        assert api(base, "GET", f"/audit?{query}").status_code == 422, query


def test_usage_by_key_and_by_server_and_tool(audited: tuple[str, Path]) -> None:
    base, _ = audited
    by_key = {row["key"]: row for row in api(base, "GET", "/usage?group_by=key").json()["rows"]}
    assert {k: (r["calls"], r["errors"], round(r["cost"], 6)) for k, r in by_key.items()} == {
        "vk-a": (5, 2, 0.031),
        "vk-b": (3, 1, 1.0),
    }
    rows = api(base, "GET", "/usage?group_by=server,tool").json()["rows"]
    assert {(r["server"], r["tool"]): r["calls"] for r in rows} == {
        ("alpha", "echo"): 3,
        ("", ""): 2,  # the unknown name and the denied call: refused before any server
        ("beta", "echo"): 2,
        ("alpha", "fail"): 1,
    }
    echo = next(r for r in rows if (r["server"], r["tool"]) == ("alpha", "echo"))
    assert 0 < echo["p50_ms"] <= echo["p95_ms"]


def test_the_cli_answers_the_same_figures(audited: tuple[str, Path]) -> None:
    base, _ = audited
    usage = cli(base, "usage", "--by", "key", "--json")
    assert usage.returncode == 0, usage.stderr
    assert {row["key"]: row["calls"] for row in json.loads(usage.stdout)} == {"vk-a": 5, "vk-b": 3}
    table = cli(base, "usage", "--by", "server,tool")
    assert table.returncode == 0 and "alpha" in table.stdout and "CALLS" in table.stdout
    exported = cli(base, "audit", "export", "--key", "vk-b")
    assert exported.returncode == 0, exported.stderr
    assert [json.loads(line)["name"] for line in exported.stdout.splitlines()] == [
        "beta_echo",
        "beta_echo",
        "alpha_fail",
        "",
    ]
    listed = cli(base, "audit", "list", "--outcome", "tool_error", "--json")
    assert [r["name"] for r in json.loads(listed.stdout)["records"]] == ["alpha_fail"]


def test_verify_passes_untouched_and_names_the_record_an_edit_broke(audited: tuple[str, Path]) -> None:
    base, tmp = audited
    intact = cli(base, "audit", "verify", "--json")
    assert intact.returncode == 0, intact.stderr
    assert json.loads(intact.stdout) == {"checked": RECORDS, "intact": True, "first_broken": None}
    database = tmp / "audit" / "audit.db"
    target = records(base, key="vk-a")[3]["event_id"]
    with sqlite3.connect(database) as db:
        db.execute("UPDATE audit_records SET outcome = 'ok' WHERE event_id = ?", (target,))
    broken = cli(base, "audit", "verify", "--json")
    assert broken.returncode == 1
    found = json.loads(broken.stdout)["first_broken"]
    assert (found["event_id"], found["problem"]) == (target, "changed")
    with sqlite3.connect(database) as db:
        db.execute("UPDATE audit_records SET outcome = 'tool_error' WHERE event_id = ?", (target,))
        following = db.execute(
            "SELECT event_id FROM audit_records WHERE position = (SELECT position + 1 FROM audit_records "
            "WHERE event_id = ?)",
            (target,),
        ).fetchone()[0]
        db.execute("DELETE FROM audit_records WHERE event_id = ?", (target,))
    found = api(base, "GET", "/audit/verify").json()["first_broken"]
    assert (found["event_id"], found["problem"]) == (following, "removed or reordered before it")


def test_the_audit_api_needs_the_admin_token(audited: tuple[str, Path]) -> None:
    base, _ = audited
    for path in ("/audit", "/usage", "/audit/verify"):
        assert httpx2.get(f"{base}/api{path}", timeout=10).status_code == 401
        assert api(base, "GET", path, token=KEY_A).status_code == 401
