"""Running one service as a process: uvloop, SIGTERM/SIGINT, and a clear exit on bad config."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from services.bus import BusUnavailableError
from services.settings import ConfigurationError

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3


def started() -> None:
    """Mark the service's start-up done: what it built (modules, clients, schemas) lives as
    long as the process, so the cyclic collector stops rescanning it on every full pass."""
    gc.collect()
    gc.freeze()


async def stop_requested() -> None:
    """Return when the process gets SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent on Windows only
        asyncio.run(main)
        return
    uvloop.run(main)


def run_service(name: str, main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run `main` to completion on uvloop; configuration problems exit 2 with one line."""
    try:
        _run(main())
    except ConfigurationError as exc:
        print(f"mcpgw {name}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (BusUnavailableError, OSError) as exc:
        print(f"mcpgw {name}: cannot start: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        pass
    return 0
