"""A JetStream KV bucket an edge follows: opened (retrying until JetStream answers), its
watcher's entries applied until cancelled, and opened and watched anew after each NATS
reconnect (NATS may have restarted without the bucket)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc
from nats.js.kv import KeyValue

from services import bus

Open = Callable[[], Coroutine[Any, Any, tuple[KeyValue, KeyValue.KeyWatcher]]]
Follow = Callable[[KeyValue.KeyWatcher], Coroutine[Any, Any, None]]
Task = Callable[[], Coroutine[Any, Any, None]]


class BucketWatch:
    """Runs `follow` on the bucket `open` returns, beside `tasks` (e.g. forgetting what
    expired), until cancelled; `reconnected()` starts them over on a new watcher."""

    def __init__(self, name: str, open: Open, follow: Follow, *tasks: Task) -> None:
        self._name, self._open, self._follow, self._tasks = name, open, follow, tasks
        self.kv: KeyValue | None = None
        self._reconnected = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            self.kv, watcher = await bus.retrying(f"opening the {self._name} bucket", self._open)
            if not started:
                task_status.started()
                started = True
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._follow, watcher)
                    for task in self._tasks:
                        tg.start_soon(task)
                    await self._reconnected.wait()
                    self._reconnected = anyio.Event()
                    tg.cancel_scope.cancel()
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]

    def reconnected(self) -> None:
        self._reconnected.set()
