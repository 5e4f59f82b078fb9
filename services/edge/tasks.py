"""Tasks (revision 2025-11-25) through the gateway: task ids as clients see them.

A downstream's task lives on a session every client of that server shares, so its id
alone would let one client read or cancel another's task. The id a client sees is a
token the edge signs: the server, the downstream's id, and who created it (the session,
or the virtual key of a sessionless 2026-07-28 request). Any edge verifies it without
shared state; a token presented by anyone else is an unknown task, exactly as a forged
one is.
"""

from __future__ import annotations

import orjson

from services.edge.errors import InvalidParamsError
from services.edge.sessions import Session
from services.edge.signing import Signer, TokenKind, b64, unb64

RELATED_TASK = "io.modelcontextprotocol/related-task"
# The task methods a client sends; each names one task by `taskId` but tasks/list.
TASK_METHODS = frozenset({"tasks/get", "tasks/result", "tasks/cancel", "tasks/list"})


def owner_of(session: Session | None) -> str:
    """Who a task belongs to: the session that created it, else the key (2026-07-28)."""
    if session is None:
        return ""
    return f"s:{session.id}" if session.id else f"k:{session.key_id}"


class TaskIds:
    def __init__(self, signer: Signer) -> None:
        self._signer = signer

    def expose(self, server: str, task_id: str, owner: str) -> str:
        return self._signer.sign(TokenKind.TASK, b64(orjson.dumps([server, task_id, owner])))

    def resolve(self, token: object, owner: str) -> tuple[str, str]:
        """The (server, downstream task id) a client's task id names; InvalidParamsError when
        it is not one this gateway issued to this owner."""
        unknown = InvalidParamsError(f"Invalid params: unknown task {token!r}" if isinstance(token, str) else
                                     'Invalid params: "taskId" must be a string')  # fmt: skip
        packed = self._signer.verify(TokenKind.TASK, token) if isinstance(token, str) else None
        if packed is None:
            raise unknown
        try:
            server, task_id, issued_to = orjson.loads(unb64(packed))
        except (ValueError, TypeError):
            raise unknown from None
        if issued_to != owner:
            raise unknown
        return str(server), str(task_id)

    def exposed_result(self, server: str, owner: str, result_json: bytes) -> bytes:
        """A downstream's result with every task id in it as this owner sees it (unchanged
        bytes when it names none)."""
        if b'"taskId"' not in result_json:
            return result_json
        result = orjson.loads(result_json)
        if isinstance(result, dict):
            self._rename(server, owner, result)
            self._rename(server, owner, result.get("task"))
            for task in result.get("tasks") or []:
                self._rename(server, owner, task)
            meta = result.get("_meta")
            if isinstance(meta, dict):
                self._rename(server, owner, meta.get(RELATED_TASK))
        return orjson.dumps(result)

    def _rename(self, server: str, owner: str, holder: object) -> None:
        if isinstance(holder, dict) and isinstance(holder.get("taskId"), str):
            holder["taskId"] = self.expose(server, holder["taskId"], owner)
