"""The supervisor's restart policy, with real child processes."""

from __future__ import annotations

import sys
import time

import anyio
import pytest

from services.up.supervisor import Child, Supervisor

pytestmark = pytest.mark.anyio


async def _restarted(child: Child, times: int, within: float) -> list[float]:
    """When each of `times` restarts happened, counted from the first exit."""
    seen: list[float] = []
    with anyio.fail_after(within):
        while child.restarts < times:
            if child.restarts > len(seen):
                seen.append(time.monotonic())
            await anyio.sleep(0.01)
    seen.append(time.monotonic())
    return seen


async def test_a_crash_is_restarted_at_once_and_a_crash_loop_backs_off() -> None:
    supervisor = Supervisor()
    child = Child("crashy", [sys.executable, "-c", "raise SystemExit(3)"], env={})
    started = time.monotonic()
    await supervisor.start(child)
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.watch)
        restarts = await _restarted(child, 3, within=15)
        await supervisor.stop()
        tg.cancel_scope.cancel()
    # First restart at once (start-up only); then 1 s, then 2 s between attempts.
    assert restarts[0] - started < 1.0
    assert 0.9 <= restarts[1] - restarts[0] < 2.0
    assert 1.9 <= restarts[2] - restarts[1] < 3.5
