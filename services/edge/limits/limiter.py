"""What a tools/call may spend before it runs: the rate limits of its key (overall and for
the tool), its key's budget at the tool's price, and its server's rate limits (overall and
for the tool), each a `Quota` every edge shares. A call over any is refused with
`LimitedError`, naming the limit and when to retry; what it took of the others goes back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import anyio
import anyio.abc

from services.contracts import connector_pb2, registry_pb2
from services.edge.catalog import Catalog
from services.edge.errors import LimitedError
from services.edge.limits.quota import FLUSH_SECONDS, Quota, QuotaStore, retry_seconds
from services.windows import Window

log = logging.getLogger(__name__)

# Budgets are counted in millionths of the currency, so prices add up exactly.
MICROS = 1_000_000


class LimitKind(StrEnum):
    """Which limit refused a call (the `limit` of its error's data, and the metric's label)."""

    KEY = "key"
    KEY_TOOL = "key_tool"
    GROUP = "group"
    BUDGET = "budget"
    SERVER = "server"
    SERVER_TOOL = "server_tool"


@dataclass(frozen=True, slots=True)
class Rule:
    kind: LimitKind
    # The counter's identity: what it limits, whose.
    scope: str
    # As people read it: "key 'ada'", "server 'search'", ...
    subject: str
    limit: int
    window: Window
    # The tool a per-tool limit is for.
    tool: str = ""

    def describe(self) -> str:
        if self.kind is LimitKind.BUDGET:
            return f"{self.limit / MICROS:g} per {self.window}"
        return f"{self.limit} calls per {self.window}"


@dataclass(slots=True)
class Charge:
    """What a call took: given back (its budget share) when it ran to no result."""

    budget: list[tuple[Quota, int]] = field(default_factory=list)

    def refund(self) -> None:
        for quota, units in self.budget:
            quota.give_back(units)
        self.budget.clear()


def key_rules(key_id: str, name: str, limits: registry_pb2.Limits) -> list[Rule]:
    """Every limit of a key: its calls, its calls of each tool, its budget."""
    found: list[Rule] = []
    whose = f"key {name!r}"
    if limits.HasField("rate_limit"):
        found.append(_requests(LimitKind.KEY, f"key:{key_id}", whose, limits.rate_limit))
    for tool, limit in sorted(limits.tool_rate_limits.items()):
        scope, subject = f"key-tool:{key_id}:{tool}", f"{whose} on {tool}"
        found.append(_requests(LimitKind.KEY_TOOL, scope, subject, limit, tool))
    if limits.HasField("budget"):
        budget = limits.budget
        window = Window.parse(budget.reset_duration, budget.calendar_aligned)
        most = round(budget.max_limit * MICROS)
        found.append(Rule(LimitKind.BUDGET, f"budget:{key_id}", f"the budget of {whose}", most, window))
    return found


def rules(
    catalog: Catalog, key_id: str, server: str, tool: str, exposed: str, price: float
) -> list[tuple[Rule, int]]:
    """The limits a call counts against, with the units it spends of each."""
    found: list[tuple[Rule, int]] = []
    key = catalog.governance.by_id.get(key_id) if key_id else None
    if key is not None and key.limits is not None:
        for rule in key_rules(key.id, key.name, key.limits):
            if rule.kind is LimitKind.BUDGET:
                if price > 0:
                    found.append((rule, round(price * MICROS)))
            elif rule.kind is LimitKind.KEY or rule.tool == exposed:
                found.append((rule, 1))
        governance = catalog.governance
        for group in sorted(key.groups & governance.group_limits.keys()):
            if governance.groups[group].permits(server, tool):
                limit = governance.group_limits[group]
                found.append((_requests(LimitKind.GROUP, f"group:{group}", f"group {group!r}", limit), 1))
    view = catalog.servers.get(server)
    if view is not None and view.HasField("limits"):
        limits, whose = view.limits, f"server {server!r}"
        if limits.HasField("rate_limit"):
            found.append((_requests(LimitKind.SERVER, f"server:{server}", whose, limits.rate_limit), 1))
        if tool in limits.tool_rate_limits:
            scope, subject = f"server-tool:{server}:{tool}", f"{whose} on {tool}"
            found.append((_requests(LimitKind.SERVER_TOOL, scope, subject, limits.tool_rate_limits[tool]), 1))
    return found


def _requests(
    kind: LimitKind, scope: str, subject: str, limit: registry_pb2.RequestLimit, tool: str = ""
) -> Rule:
    return Rule(kind, scope, subject, limit.max_requests, Window.parse(limit.reset_duration), tool)


@dataclass(frozen=True, slots=True)
class Admission:
    """What one (key, server, tool, exposed name, price) is held to, worked out once per
    snapshot: its rules, each with its quota, and the key's bulkhead."""

    rules: list[tuple[Rule, int, Quota]]
    # (max_concurrency, max_queue, queue_timeout_seconds), or None for no key bulkhead.
    bulkhead: tuple[int, int, float] | None


def key_bulkhead(catalog: Catalog, key_id: str) -> tuple[int, int, float] | None:
    """The key's calls in flight, as the connector holds them (None: no cap)."""
    key = catalog.governance.by_id.get(key_id) if key_id else None
    if key is None or key.limits is None or key.limits.max_concurrency <= 0:
        return None
    return key.limits.max_concurrency, key.limits.max_queue, key.limits.queue_timeout_seconds


class Limiter:
    """This edge's quotas, by scope; `run` owns the tasks that renew leases ahead of need."""

    def __init__(self, store: QuotaStore, catalog: Callable[[], Catalog]) -> None:
        self._store = store
        self._catalog = catalog
        self._quotas: dict[str, Quota] = {}
        self._tasks: anyio.abc.TaskGroup | None = None
        # What each (key, server, tool, exposed name, price) called is held to, for the catalog
        # it was read from: worked out once per snapshot, not on every call.
        self._rules: tuple[Catalog | None, dict[tuple[str, str, str, str, float], Admission]] = (None, {})

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._store.open()
        async with anyio.create_task_group() as tg:
            self._tasks = tg
            task_status.started()
            while True:
                await anyio.sleep(FLUSH_SECONDS)
                for quota in list(self._quotas.values()):
                    try:
                        await quota.flush()
                    except Exception:
                        log.exception("%s: spent units not flushed", quota.scope)

    async def admit(self, request: connector_pb2.CallToolRequest, exposed: str, price: float) -> Charge:
        """Spend what the call costs of every limit it counts against, and name the key's
        bulkhead for the connector to hold; LimitedError when a limit has not enough left
        this window (and nothing is spent of the others)."""
        catalog = self._catalog()
        if self._rules[0] is not catalog:
            self._rules = (catalog, {})
        key_id, server, tool = request.key_id, request.server, request.tool
        called = (key_id, server, tool, exposed, price)
        found = self._rules[1].get(called)
        if found is None:
            worked_out = rules(catalog, key_id, server, tool, exposed, price)
            found = self._rules[1][called] = Admission(
                [(rule, units, self._quota(rule)) for rule, units in worked_out],
                key_bulkhead(catalog, key_id),
            )
        if found.bulkhead is not None:
            request.key_max_concurrency, request.key_max_queue, request.key_queue_timeout_seconds = (
                found.bulkhead
            )
        charge = Charge()
        if not found.rules:
            return charge
        now = time.time()
        taken: list[tuple[Quota, int]] = []
        for rule, units, quota in found.rules:
            took = quota.take_now(units, now)
            if took is None:
                took = await quota.take(units, now)
            if not took:
                for spent, back in taken:
                    spent.give_back(back)
                raise refusal(rule, quota.retry_after(now))
            taken.append((quota, units))
            if rule.kind is LimitKind.BUDGET:
                charge.budget.append((quota, units))
        return charge

    async def usage(self, rule: Rule) -> dict[str, Any]:
        """What the deployment spent of a rule this window, and when the window ends."""
        now = time.time()
        quota = self._quota(rule)
        try:
            used: int | None = await quota.used(now)
        except ConnectionError:
            used = None
        _, ends = rule.window.bounds(now)
        scale = MICROS if rule.kind is LimitKind.BUDGET else 1
        return {
            "limit": str(rule.kind),
            "tool": rule.tool or None,
            "used": None if used is None else used / scale if scale > 1 else used,
            "max": rule.limit / scale if scale > 1 else rule.limit,
            "reset_duration": str(rule.window),
            "resets_at": datetime.fromtimestamp(ends, UTC).isoformat(timespec="seconds"),
        }

    def _quota(self, rule: Rule) -> Quota:
        quota = self._quotas.get(rule.scope)
        if quota is None:
            quota = self._quotas[rule.scope] = Quota(
                self._store, rule.scope, rule.limit, rule.window, self._spawn
            )
        else:
            quota.configure(rule.limit, rule.window)
        return quota

    def _spawn(self, task: Callable[[], object]) -> None:
        if self._tasks is not None:
            self._tasks.start_soon(task)  # type: ignore[arg-type]


def refusal(rule: Rule, retry_after: float) -> LimitedError:
    seconds = retry_seconds(retry_after)
    what = "budget" if rule.kind is LimitKind.BUDGET else "rate limit"
    message = f"mcpgw: {rule.subject} is over its {what} ({rule.describe()}); retry in {seconds}s"
    data = {"limit": str(rule.kind), "scope": rule.subject, "max": rule.describe(), "retryAfter": seconds}
    return LimitedError(message, data, seconds)


# The charge of a call no limit applies to.
NO_CHARGE = Charge()
