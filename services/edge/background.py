"""Work that outlives the request that started it, owned by the edge and ended with it.

A resumable answer keeps running after its client drops (the client resumes it with
Last-Event-ID); a closed listen stream unsubscribes its resources. Such tasks run in the
task group `run()` holds, so stopping the edge cancels them rather than leaking them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc


class Background:
    def __init__(self) -> None:
        self._tg: anyio.abc.TaskGroup | None = None
        self._stopped = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            self._stopped.set()

    async def stop(self) -> None:
        """Cancel what still runs and wait until it has finished (its cleanup, such as an
        audit record, included)."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._stopped.wait()

    def start(self, work: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        if self._tg is None:
            raise RuntimeError("the edge is not running (or is stopping): no background work")
        self._tg.start_soon(work, *args)
