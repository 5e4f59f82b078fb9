"""Approval's pure parts: which tools a selection lets run at once, the elicitation form a
client's user answers, and how their answer reads."""

from __future__ import annotations

from typing import Any

import pytest

from services.contracts import registry_pb2
from services.edge.approvals import DecidedBy, Decision, elicitation_params, verdict_of
from services.edge.policy import Selection
from services.selections import selection_dict, selection_message


def selection(server: str, tools: list[str], auto: list[str] | None = None) -> registry_pb2.ToolSelection:
    return selection_message(
        {"mcp_client_name": server, "tools_to_execute": tools, "tools_to_auto_execute": auto}
    )


def test_without_tools_to_auto_execute_every_selected_tool_runs_at_once() -> None:
    reach = Selection.of([selection("gh", ["*"])])
    assert reach.permits("gh", "delete_repo") and not reach.needs_approval("gh", "delete_repo")


def test_tools_left_out_of_tools_to_auto_execute_need_approval() -> None:
    reach = Selection.of([selection("gh", ["*"], ["search"])])
    assert not reach.needs_approval("gh", "search")
    assert reach.needs_approval("gh", "delete_repo")
    assert Selection.of([selection("gh", ["a", "b"], [])]).needs_approval("gh", "a")


def test_a_group_that_runs_a_tool_at_once_wins_over_a_key_that_asks() -> None:
    own = Selection.of([selection("gh", ["search", "delete_repo"], ["search"])])
    group = Selection.of([selection("gh", ["delete_repo"])])
    assert (own | group).needs_approval("gh", "delete_repo") is False
    # A tool the group does not select keeps the key's rule.
    assert (own | Selection.of([selection("gh", ["other"])])).needs_approval("gh", "delete_repo")


def test_a_selection_keeps_an_empty_tools_to_auto_execute_apart_from_none() -> None:
    assert selection_dict(selection("gh", ["a"], [])) == {
        "mcp_client_name": "gh",
        "tools_to_execute": ["a"],
        "tools_to_auto_execute": [],
    }
    assert "tools_to_auto_execute" not in selection_dict(selection("gh", ["a"]))


def test_the_elicitation_form_names_the_call_and_asks_one_yes_or_no() -> None:
    params = elicitation_params("gh_delete_repo", b'{"repo":"mcpgw"}')
    assert "`gh_delete_repo`" in params["message"] and '{"repo":"mcpgw"}' in params["message"]
    assert params["requestedSchema"]["properties"]["approve"]["type"] == "boolean"
    long = elicitation_params("t", b'{"x":"' + b"y" * 5000 + b'"}')
    assert len(long["message"]) < 2100


@pytest.mark.parametrize(
    ("answer", "decision"),
    [
        ({"result": {"action": "accept", "content": {"approve": True}}}, Decision.APPROVED),
        ({"result": {"action": "accept", "content": {"approve": False}}}, Decision.DENIED),
        ({"result": {"action": "accept", "content": {"approve": "yes"}}}, Decision.DENIED),
        ({"result": {"action": "decline"}}, Decision.DENIED),
        ({"result": {"action": "cancel"}}, Decision.DENIED),
        ({"error": {"code": -32603, "message": "the client's stream closed"}}, Decision.DENIED),
    ],
)
def test_only_an_accepted_yes_approves(answer: dict[str, Any], decision: Decision) -> None:
    verdict = verdict_of(answer)
    assert verdict.decision is decision and verdict.by is DecidedBy.CLIENT
