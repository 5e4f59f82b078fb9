"""A call whose answer reached its client is in the audit whatever dies next: here the
edge, killed with SIGKILL the moment the last answer arrives. Calls refused before they
reach a downstream are audited too."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import FIXTURE
from tests.integration.test_gateway_http import call, initialize
from tests.processes import service_tree, stdio_server, tree_processes, wait_until

CALLS = 30


def _records(spans: Path) -> dict[str, dict[str, object]]:
    """The exported audit records by JSON-RPC request id."""
    if not spans.exists():
        return {}
    records = [json.loads(line) for line in spans.read_text().splitlines() if line.strip()]
    return {str(r["attributes"]["jsonrpc.request.id"]): r for r in records}


def test_answered_calls_are_audited_though_the_edge_is_killed_right_after(tmp_path: Path) -> None:
    with service_tree(tmp_path, [stdio_server("fixture", FIXTURE)]) as (base,):
        mcp = f"{base}/mcp"
        session = initialize(mcp)
        answered = []
        for n in range(CALLS):
            answer = call(mcp, session, "fixture_echo", {"text": f"call {n}"}, id=5000 + n)
            assert answer["result"]["content"][0]["text"] == f"call {n}"
            answered.append(str(5000 + n))
        refused = call(mcp, session, "fixture_nothing", {}, id=6000)
        assert refused["error"]["code"] == -32602
        # The answers are in: the edge dies before it could publish anything it held back.
        for edge in tree_processes(tmp_path, "edge"):
            edge.kill()
        spans = tmp_path / "spans.jsonl"
        wanted = {*answered, "6000"}
        wait_until(lambda: wanted <= _records(spans).keys(), 20, "every answered call in the audit")
        records = _records(spans)
        assert {records[i]["attributes"]["mcpgw.outcome"] for i in answered} == {"ok"}  # type: ignore[index]
        unknown = records["6000"]["attributes"]
        assert unknown["mcpgw.outcome"] == "error" and unknown["gen_ai.tool.name"] == "fixture_nothing"  # type: ignore[index]
        assert unknown["error.type"] == "-32602"  # type: ignore[index]
