"""Calls that wait for a person's approval (tools not in their key's tools_to_auto_execute).

The edge running such a call asks the client's user through elicitation and, meanwhile,
lists the call as pending in a JetStream KV bucket every edge reads, so an operator can
approve or deny it through the admin API of any edge (the decision travels on
`bus.APPROVAL_DECIDED`). The first answer wins; none within the timeout is a denial.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import anyio
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from services import bus
from services.contracts import events_pb2

log = logging.getLogger(__name__)

BUCKET = "mcpgw-approvals"
# Pending entries outlive no call by more than this (a crashed edge's are dropped with it).
BUCKET_MAX_AGE_SECONDS = 24 * 3600.0
MAX_SHOWN_ARGUMENTS = 2000
KV_SECONDS = 2.0
# What approval ids look like (KV keys: only these are ever looked up).
APPROVAL_ID = r"^ap-[0-9a-f]{16}$"


class Decision(Enum):
    """How an approval ended, as its call's record says."""

    APPROVED = events_pb2.APPROVAL_APPROVED
    DENIED = events_pb2.APPROVAL_DENIED
    TIMED_OUT = events_pb2.APPROVAL_TIMED_OUT


class DecidedBy(Enum):
    CLIENT = events_pb2.APPROVER_CLIENT
    OPERATOR = events_pb2.APPROVER_OPERATOR
    NOBODY = events_pb2.APPROVER_UNSPECIFIED


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    by: DecidedBy


# What asks the client's user: the elicitation request's params in, its JSON-RPC answer out.
Ask = Callable[[str, bytes], Awaitable[dict[str, Any]]]


def elicitation_params(exposed_name: str, arguments_json: bytes) -> dict[str, Any]:
    """The form a client's user approves a call with: one yes/no field."""
    shown = (arguments_json or b"{}").decode(errors="replace")
    if len(shown) > MAX_SHOWN_ARGUMENTS:
        shown = shown[:MAX_SHOWN_ARGUMENTS] + "…"
    return {
        "mode": "form",
        "message": f"Approve the call of `{exposed_name}` with these arguments?\n{shown}",
        "requestedSchema": {
            "type": "object",
            "properties": {
                "approve": {"type": "boolean", "title": "Approve", "description": f"Run {exposed_name} now"}
            },
            "required": ["approve"],
        },
    }


def verdict_of(answer: dict[str, Any]) -> Verdict:
    """A client's elicitation answer: approved only when accepted with approve true."""
    result = answer.get("result")
    if isinstance(result, dict) and result.get("action") == "accept":
        content = result.get("content")
        if isinstance(content, dict) and content.get("approve") is True:
            return Verdict(Decision.APPROVED, DecidedBy.CLIENT)
    return Verdict(Decision.DENIED, DecidedBy.CLIENT)


class Approvals:
    """This edge's calls waiting for approval, and every edge's as the bucket lists them."""

    def __init__(self, nc: NATS, edge_id: str, timeout_seconds: float, replicas: int = 1) -> None:
        self._nc = nc
        self._replicas = replicas
        self.edge_id = edge_id
        self.timeout = timeout_seconds
        self._kv: KeyValue | None = None
        self._waiting: dict[str, anyio.Event] = {}
        self._decided: dict[str, bool] = {}

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        config = KeyValueConfig(
            bucket=BUCKET,
            storage=StorageType.FILE,
            history=1,
            ttl=BUCKET_MAX_AGE_SECONDS,
            replicas=self._replicas,
        )
        self._kv = await bus.retrying(f"opening the {BUCKET} bucket", lambda: bus.key_value(self._nc, config))
        subscription = await self._nc.subscribe(bus.APPROVAL_DECIDED, cb=self._on_decided)
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await subscription.unsubscribe()

    async def _on_decided(self, msg: Msg) -> None:
        decided = orjson.loads(msg.data)
        waiting = self._waiting.get(str(decided.get("id")))
        if waiting is not None and not waiting.is_set():
            self._decided[str(decided["id"])] = decided.get("approve") is True
            waiting.set()

    async def decide(self, key_id: str, exposed_name: str, arguments_json: bytes, ask: Ask | None) -> Verdict:
        """Wait for the client's user (when `ask` can reach them) or an operator, whichever
        answers first; TIMED_OUT after the timeout."""
        approval_id = f"ap-{secrets.token_hex(8)}"
        operator = self._waiting[approval_id] = anyio.Event()
        verdict = Verdict(Decision.TIMED_OUT, DecidedBy.NOBODY)
        await self._list(approval_id, key_id, exposed_name, arguments_json)
        try:
            with anyio.move_on_after(self.timeout):
                async with anyio.create_task_group() as tg:

                    async def by_client() -> None:
                        nonlocal verdict
                        assert ask is not None
                        answer = await ask(
                            "elicitation/create",
                            orjson.dumps(elicitation_params(exposed_name, arguments_json)),
                        )
                        verdict = verdict_of(answer)
                        tg.cancel_scope.cancel()

                    async def by_operator() -> None:
                        nonlocal verdict
                        await operator.wait()
                        approved = self._decided.pop(approval_id, False)
                        verdict = Verdict(
                            Decision.APPROVED if approved else Decision.DENIED, DecidedBy.OPERATOR
                        )
                        tg.cancel_scope.cancel()

                    if ask is not None:
                        tg.start_soon(by_client)
                    tg.start_soon(by_operator)
        finally:
            del self._waiting[approval_id]
            self._decided.pop(approval_id, None)
            with anyio.CancelScope(shield=True):
                await self._unlist(approval_id)
        return verdict

    def of_call(self, key_id: str, exposed_name: str, arguments_json: bytes) -> CallApproval:
        """What one call waits for before it runs."""
        return CallApproval(self, key_id, exposed_name, arguments_json)

    async def pending(self) -> list[dict[str, Any]]:
        """Every edge's calls waiting for approval, oldest first."""
        kv = self._bucket
        try:
            with anyio.fail_after(KV_SECONDS):
                names = await kv.keys()
        except NoKeysError:
            return []
        found = []
        for name in names:
            try:
                entry = await kv.get(name)
            except KeyNotFoundError:
                continue
            if entry.value:
                value = orjson.loads(entry.value)
                if value["expires_at"] > time.time():
                    found.append(value)
        return sorted(found, key=lambda v: v["created_at"])

    async def resolve(self, approval_id: str, approve: bool) -> bool:
        """An operator's decision, sent to the edge holding the call; False when no call waits
        under that id."""
        try:
            with anyio.fail_after(KV_SECONDS):
                entry = await self._bucket.get(approval_id)
        except KeyNotFoundError:
            return False
        if not entry.value:
            return False
        await self._nc.publish(bus.APPROVAL_DECIDED, orjson.dumps({"id": approval_id, "approve": approve}))
        return True

    @property
    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise ConnectionError("the approvals bucket is not open yet")
        return self._kv

    async def _list(self, approval_id: str, key_id: str, exposed_name: str, arguments_json: bytes) -> None:
        now = time.time()
        shown = (arguments_json or b"{}").decode(errors="replace")[:MAX_SHOWN_ARGUMENTS]
        entry = {
            "id": approval_id,
            "key_id": key_id,
            "tool": exposed_name,
            "arguments": shown,
            "edge_id": self.edge_id,
            "created_at": now,
            "expires_at": now + self.timeout,
        }
        try:
            with anyio.fail_after(KV_SECONDS):
                await self._bucket.put(approval_id, orjson.dumps(entry))
        except (NatsError, TimeoutError, ConnectionError) as exc:
            # The client can still be asked; operators just do not see this one.
            log.warning("approval %s is not listed for operators: %r", approval_id, exc)

    async def _unlist(self, approval_id: str) -> None:
        try:
            with anyio.fail_after(KV_SECONDS):
                await self._bucket.delete(approval_id)
        except (NatsError, TimeoutError, ConnectionError) as exc:
            log.info("approval %s stays listed until it expires: %r", approval_id, exc)


@dataclass(frozen=True, slots=True)
class CallApproval:
    """One call's approval, to be decided when the call runs."""

    approvals: Approvals
    key_id: str
    exposed_name: str
    arguments_json: bytes

    @property
    def seconds(self) -> float:
        return self.approvals.timeout

    async def decide(self, ask: Ask | None) -> Verdict:
        return await self.approvals.decide(self.key_id, self.exposed_name, self.arguments_json, ask)
