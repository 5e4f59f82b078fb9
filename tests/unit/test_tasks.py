"""Task ids as the gateway shows them: signed, owned, and rewritten wherever a result names one."""

from __future__ import annotations

import orjson
import pytest

from services.edge.errors import InvalidParamsError
from services.edge.sessions import Session
from services.edge.signing import Signer, TokenKind
from services.edge.tasks import TaskIds, owner_of

IDS = TaskIds(Signer("task-test-secret"))


def test_an_id_resolves_for_its_owner_only() -> None:
    token = IDS.expose("srv", "t-1", "s:alice")
    assert IDS.resolve(token, "s:alice") == ("srv", "t-1")
    with pytest.raises(InvalidParamsError, match="unknown task"):
        IDS.resolve(token, "s:bob")


@pytest.mark.parametrize(
    "forged",
    [
        "t-1",  # the downstream's own id
        IDS.expose("srv", "t-1", "s:alice")[:-2] + "xx",  # a signature tampered with
        TaskIds(Signer("another-gateway")).expose("srv", "t-1", "s:alice"),
        Signer("task-test-secret").sign(TokenKind.SESSION, "not-a-task"),  # another kind, same signer
    ],
)
def test_an_id_this_gateway_did_not_issue_is_unknown(forged: str) -> None:
    with pytest.raises(InvalidParamsError, match="unknown task"):
        IDS.resolve(forged, "s:alice")


def test_a_task_id_must_be_a_string() -> None:
    with pytest.raises(InvalidParamsError, match='"taskId" must be a string'):
        IDS.resolve(7, "s:alice")


def test_every_place_a_result_names_a_task_is_rewritten() -> None:
    result = {
        "task": {"taskId": "a", "status": "working"},
        "taskId": "b",
        "tasks": [{"taskId": "c"}],
        "_meta": {"io.modelcontextprotocol/related-task": {"taskId": "d"}},
        "content": [{"type": "text", "text": "taskId stays in text"}],
    }
    shown = orjson.loads(IDS.exposed_result("srv", "s:alice", orjson.dumps(result)))
    found = [
        shown["task"]["taskId"],
        shown["taskId"],
        shown["tasks"][0]["taskId"],
        shown["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
    ]
    assert [IDS.resolve(t, "s:alice") for t in found] == [("srv", x) for x in "abcd"]
    assert shown["content"] == result["content"]


def test_a_result_naming_no_task_keeps_its_bytes() -> None:
    raw = b'{"content":[]}'
    assert IDS.exposed_result("srv", "s:alice", raw) is raw


def test_a_task_belongs_to_the_session_or_else_the_key() -> None:
    assert owner_of(Session("2025-11-25", "c", "key-1", 0, "nonce")) == "s:nonce"
    assert owner_of(Session("2026-07-28", "c", "key-1", 0, "")) == "k:key-1"
    assert owner_of(None) == ""
