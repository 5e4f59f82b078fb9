"""kill -9 of one gateway service (or the HTTP downstream) during a load: what the clients saw,
how soon calls succeeded again, and whether every successful call was audited exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from bench.drills.gateway import Gateway
from bench.drills.load import HTTP_TOOL, TOOLS, CallRecord, DrillClient, reasons, run_load
from bench.drills.report import Row, seconds
from bench.targets import port_open

# What is killed, by the supervisor's child names, and how the table names it.
VICTIMS = {
    "edge": "edge",
    "connector": "connector",
    "registry": "registry",
    "audit": "audit",
    "downstream": "downstream (HTTP echo)",
    "nats": "nats-server",
}
RECOVERY_LIMIT_SECONDS = 3.0
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class KillOptions:
    duration: float
    kill_at: float
    workers: int
    rate: float
    heal_seconds: float
    drain_settle: float
    drain_seconds: float


def label(victim: str) -> str:
    return f"kill -9 {VICTIMS[victim]}"


async def _until(check: Callable[[], bool], since: float, timeout: float) -> float | None:
    """Seconds from `since` until `check()` held (None if it did not within `timeout`)."""
    while time.monotonic() < since + timeout:
        try:
            if check():
                return time.monotonic() - since
        except psutil.Error:
            pass
        await asyncio.sleep(POLL_SECONDS)
    return None


async def kill_drill(gw: Gateway, victim: str, options: KillOptions) -> Row:
    """Load for `duration`, kill -9 `victim` at `kill_at`, then wait for health and the audit."""
    row = Row(label(victim))
    await gw.wait_healthy(options.heal_seconds)
    old: psutil.Process | None = None
    children: list[psutil.Process] = []
    if victim != "downstream":
        old = gw.processes()[victim]
        children = old.children(recursive=True)
    affected = {HTTP_TOOL} if victim == "downstream" else set(TOOLS)
    killed_at = float("inf")

    def recovered(record: CallRecord) -> bool:
        return record.ok and record.tool in affected and record.started >= killed_at

    # Past its duration while no call succeeded since the kill, so recovery is always measured.
    load = asyncio.create_task(
        run_load(gw.mcp, f"kill-{victim}", workers=options.workers, rate=options.rate,
                 duration=options.duration, until=recovered, longest=options.duration + options.heal_seconds)
    )  # fmt: skip
    try:
        await asyncio.sleep(options.kill_at)
        # Records still in the edge's spool at the kill are what an edge kill can lose.
        backlog = (await gw.readyz() or {}).get("audit_backlog", "?")
        killed_at = time.monotonic()
        if old is None:
            # What a downstream's own supervisor would do: start it again at once.
            gw.echo.kill()
            gw.echo.start()
            back = _until(lambda: port_open(gw.echo.port), killed_at, options.heal_seconds)
        else:
            old.kill()
            pid = old.pid
            back = _until(lambda: _replaced(gw, victim, pid), killed_at, options.heal_seconds)
        restarted = await back
        records = await load
    finally:
        load.cancel()
    await gw.wait_healthy(options.heal_seconds)
    drained = await gw.drain_audit(options.drain_settle, options.drain_seconds)
    _measure(row, gw, affected, records, killed_at, restarted)
    # Sessions' shared state (log level, ended sessions) lives in NATS, not in the calls' path.
    client = DrillClient(gw.mcp, f"kill-{victim}-session")
    try:
        problems = await client.session_problems()
    finally:
        await client.close()
    row.measured += f"; a new session's setLevel and DELETE after: {'fail' if problems else 'ok'}"
    row.check("session setLevel and DELETE work after", not problems, "; ".join(problems)[:300])
    row.notes.append(
        f"edge audit backlog at the kill {backlog}; audit drained {drained:.1f} s after the load"
    )
    orphans = [p for p in children if _alive(p)]
    if orphans:
        row.notes.append(
            f"{len(orphans)} child process(es) of the killed {victim} still running after it was "
            f"replaced: {', '.join(' '.join(p.cmdline())[-60:] for p in orphans if _alive(p))}"
        )
    return row


def _replaced(gw: Gateway, victim: str, old_pid: int) -> bool:
    process = gw.processes().get(victim)
    return process is not None and process.pid != old_pid


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _measure(
    row: Row, gw: Gateway, affected: set[str], records: list[CallRecord], killed_at: float,
    restarted: float | None,
) -> None:  # fmt: skip
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    after = [r.ended for r in ok if r.tool in affected and r.started >= killed_at]
    recovery = min(after) - killed_at if after else None
    audit = gw.audit.ids
    audited = sum(1 for r in ok if audit[r.request_id])
    lost = [r for r in ok if not audit[r.request_id]]
    duplicated = [r.request_id for r in records if audit[r.request_id] > 1]
    window = "none"
    if failed:
        first = min(r.started for r in failed) - killed_at
        last = max(r.ended for r in failed) - killed_at
        window = f"{first:+.2f} s → {last:+.2f} s"
    what = "listening again" if affected == {HTTP_TOOL} else "process back"
    row.measured = (
        f"{len(records):,} calls: {len(ok):,} ok, {len(failed):,} failed; failures {window}; "
        f"first ok {seconds(recovery)} after the kill ({what} after {seconds(restarted)}); "
        f"audited {audited:,} of {len(ok):,} ok, lost {len(lost)}, duplicates {len(duplicated)}"
    )
    row.check("0 audit records lost", not lost, f"{len(lost)} lost")
    row.check("0 duplicates", not duplicated, f"{len(duplicated)} duplicated")
    row.check(
        f"first success ≤ {RECOVERY_LIMIT_SECONDS:.0f} s",
        recovery is not None and recovery <= RECOVERY_LIMIT_SECONDS,
        f"first success {seconds(recovery)}",
    )
    if failed:
        row.notes.append(f"failures (when they ended, from the kill): {reasons(failed, killed_at)}")
    if lost:
        ended = ", ".join(f"{r.ended - killed_at:+.3f} s" for r in lost[:8])
        row.notes.append(f"unaudited ok calls ended at (from the kill) {ended}")
    if duplicated:
        same = sum(1 for rid in duplicated if len(set(gw.audit.events[rid])) == 1)
        row.notes.append(
            f"duplicated records: {', '.join(duplicated[:5])}; {same} of {len(duplicated)} repeat the "
            "same mcpgw.event_id (one event exported twice)"
        )
    unaudited_failures = sum(1 for r in failed if not audit[r.request_id])
    if failed:
        row.notes.append(f"{len(failed) - unaudited_failures} of {len(failed)} failed calls have a record")
