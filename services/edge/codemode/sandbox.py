"""Model-written Python, run in pydantic-monty: an interpreter in Rust that has no
filesystem, network or imports but those granted, in worker processes of its own.

A run gets the view's server modules (each tool a host function the host answers through
the gateway's own call path) and ends in a `RunOutcome`: what it printed and its value, or
the sandbox's traceback, or the one limit it ran into.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Any, Self

import anyio
import orjson
from pydantic_monty import (
    AsyncMonty,
    ExternalModule,
    MontyCrashedError,
    MontyError,
    MontyRuntimeError,
    MontySyntaxError,
    ResourceLimits,
)

from services.edge.codemode.stubs import Module, module_stub

log = logging.getLogger(__name__)

# What a host function is handed: the tool's exposed name and its arguments; it returns
# the value the script sees, or raises what the script should see raised.
HostCall = Callable[[str, dict[str, Any]], Awaitable[Any]]


class ScriptLimit(Enum):
    """The limits every run is held to, by the name an error gives them."""

    WALL_TIME = "wall time"
    CPU_TIME = "execution time"
    MEMORY = "memory"
    RECURSION = "recursion depth"
    TOOL_CALLS = "tool calls"
    RESULT_SIZE = "result size"


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    wall_seconds: float = 60.0
    # Time the interpreter runs, not counting waits for tools.
    cpu_seconds: float = 10.0
    memory_bytes: int = 64 * 1024 * 1024
    recursion_depth: int = 200
    tool_calls: int = 100
    # printed output plus the JSON of the final value.
    result_bytes: int = 256 * 1024

    def amount(self, kind: ScriptLimit) -> str:
        """The limit as a person reads it."""
        return {
            ScriptLimit.WALL_TIME: f"{self.wall_seconds:g}s",
            ScriptLimit.CPU_TIME: f"{self.cpu_seconds:g}s",
            ScriptLimit.MEMORY: f"{self.memory_bytes} bytes",
            ScriptLimit.RECURSION: f"{self.recursion_depth} frames",
            ScriptLimit.TOOL_CALLS: f"{self.tool_calls} calls",
            ScriptLimit.RESULT_SIZE: f"{self.result_bytes} bytes",
        }[kind]


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended: `error` (the sandbox's traceback) or `limit` set, else a value."""

    printed: str = ""
    value: Any = None
    error: str = ""
    limit: ScriptLimit | None = None
    tool_calls: int = 0


# The sandbox's own words for the limits it enforces, as `exception()` carries them.
_LIMIT_MESSAGES = (
    (TimeoutError, "feed time limit exceeded", ScriptLimit.CPU_TIME),
    (TimeoutError, "turn time limit exceeded", ScriptLimit.CPU_TIME),
    (TimeoutError, "sleep limit exceeded", ScriptLimit.WALL_TIME),
    (MemoryError, "memory limit exceeded", ScriptLimit.MEMORY),
    (RecursionError, "maximum recursion depth exceeded", ScriptLimit.RECURSION),
    (RuntimeError, "suspension limit", ScriptLimit.TOOL_CALLS),
)


def limit_of(exc: MontyError) -> ScriptLimit | None:
    """The limit a sandbox error reports, if it is one."""
    inner = exc.exception()
    for kind, words, limit in _LIMIT_MESSAGES:
        if isinstance(inner, kind) and str(inner).startswith(words):
            return limit
    return None


@dataclass(slots=True)
class _Run:
    """One run's counters: tool calls made, output printed, and the limit it hit first."""

    limits: SandboxLimits
    calls: int = 0
    printed: list[str] = field(default_factory=list)
    printed_bytes: int = 0
    limit: ScriptLimit | None = None

    def hit(self, kind: ScriptLimit) -> None:
        if self.limit is None:
            self.limit = kind

    def print(self, stream: str, text: str) -> None:
        self.printed_bytes += len(text.encode())
        if self.printed_bytes > self.limits.result_bytes:
            self.hit(ScriptLimit.RESULT_SIZE)
            return
        self.printed.append(text)


class Sandbox:
    """The pool of sandbox workers an edge runs scripts in (started empty: a worker is spawned
    on first use, and each run checks one out for itself)."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), workers: int = 4) -> None:
        self.limits = limits
        self._pool = AsyncMonty(
            min_processes=0,
            max_processes=workers,
            # The pool's own backstop for a worker that stops answering at all.
            request_timeout=limits.wall_seconds + 5,
            checkout_timeout=limits.wall_seconds,
        )

    async def __aenter__(self) -> Self:
        await self._pool.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._pool.__aexit__(kind, exc, tb)

    async def run(self, code: str, found: Mapping[str, Module], call: HostCall) -> RunOutcome:
        """Run `code` with `found` importable (and already imported) and its tools answered by
        `call`; never raises for anything the script does."""
        run = _Run(self.limits)
        modules = {ident: self._module(module, call, run) for ident, module in found.items()}
        value: Any = None
        error = ""
        try:
            with anyio.fail_after(self.limits.wall_seconds):
                async with self._pool.checkout(limits=self._resource_limits(), external_modules=modules) as s:
                    if modules:
                        await s.feed_run("import " + ", ".join(modules))
                    value = await s.feed_run(code, print_callback=run.print)
                    if value is None:
                        # Bifrost's scripts hand their answer back in `result`.
                        with contextlib.suppress(MontyRuntimeError):
                            value = await s.feed_run("result", print_callback=run.print)
        except TimeoutError:
            run.hit(ScriptLimit.WALL_TIME)
        except MontyCrashedError as exc:
            if exc.timed_out:
                run.hit(ScriptLimit.WALL_TIME)
            else:
                log.warning("a Code Mode worker died: %s", exc)
                error = f"mcpgw: the sandbox's worker died running the script ({exc})"
        except (MontyRuntimeError, MontySyntaxError) as exc:
            limit = limit_of(exc)
            if limit is not None:
                run.hit(limit)
            else:
                error = exc.display()
        except MontyError as exc:
            error = f"{type(exc).__name__}: {exc}"
        printed = "".join(run.printed)
        if run.limit is None and not error:
            shown = orjson.dumps(value, default=repr)
            if len(shown) + run.printed_bytes > self.limits.result_bytes:
                run.hit(ScriptLimit.RESULT_SIZE)
        if run.limit is not None:
            return RunOutcome(printed, limit=run.limit, tool_calls=run.calls)
        return RunOutcome(printed, value, error, tool_calls=run.calls)

    def _resource_limits(self) -> ResourceLimits:
        limits = self.limits
        return {
            "max_feed_duration_secs": limits.cpu_seconds,
            "max_memory": limits.memory_bytes,
            "max_recursion_depth": limits.recursion_depth,
            # Each tool call suspends the script, and so may its await and a gather: the
            # tool call count is what stops a script, this only bounds the rest.
            "max_suspensions": 4 * limits.tool_calls + 64,
            "max_total_sleep_secs": limits.wall_seconds,
        }

    def _module(self, module: Module, call: HostCall, run: _Run) -> ExternalModule:
        def tool(function: str) -> Callable[..., Awaitable[Any]]:
            exposed = module.functions[function].exposed_name

            async def invoke(*args: Any, **arguments: Any) -> Any:
                if args:
                    raise TypeError(f"{module.ident}.{function}() takes keyword arguments only")
                if run.calls >= self.limits.tool_calls:
                    run.hit(ScriptLimit.TOOL_CALLS)
                    raise RuntimeError(f"mcpgw: the script made its {self.limits.tool_calls} tool calls")
                run.calls += 1
                return await call(exposed, arguments)

            return invoke

        return ExternalModule({f: tool(f) for f in module.functions}, stubs=module_stub(module))
