"""Hostile input from bench/hostile.py (when it exists), run in a child process so that a hang
cannot outlive the run's deadline; and whether any gateway process was restarted meanwhile.

    python -m bench.drills.hostile_input BASE_URL SERVER REQUESTS SEED   (admin token on stdin)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import sys
from dataclasses import dataclass
from typing import Any

from bench.drills.gateway import Gateway
from bench.drills.report import Row
from bench.targets import PYTHON, ROOT

LABEL = "hostile input"
MODULE = "bench.hostile"
SERVER = "echo"
GOALS = "0 5xx; 0 leaks; 0 restarts"
ERROR_LINE = re.compile(r"[\w.]*(Error|Exception|Exit)\b")


def built() -> bool:
    return importlib.util.find_spec(MODULE) is not None


async def _run_child(gw: Gateway, requests: int, seed: int, timeout: float) -> dict[str, Any]:
    argv = [PYTHON, "-m", "bench.drills.hostile_input", gw.base, SERVER, str(requests), str(seed)]
    child = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, start_new_session=True, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        # The token goes on stdin, not the command line other users can read.
        out, err = await asyncio.wait_for(child.communicate(gw.admin_token.encode()), timeout)
    except TimeoutError:
        raise RuntimeError(f"bench/hostile.py did not finish within {timeout:.0f} s") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        await child.wait()
    if child.returncode != 0:
        # The exception's own line: the last one naming an error at the start of a line.
        last = [line for line in err.decode(errors="replace").splitlines() if ERROR_LINE.match(line)][-1:]
        raise RuntimeError(f"bench/hostile.py exited with {child.returncode}: {' '.join(last)[:200]}")
    return json.loads(out)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class HostileOptions:
    requests: int
    seed: int
    timeout: float
    heal_seconds: float
    drain_settle: float
    drain_seconds: float


def not_built() -> Row:
    row = Row(LABEL, "not built: bench/hostile.py does not exist yet")
    row.check(GOALS, False, "not built")
    return row


async def hostile_drill(gw: Gateway, options: HostileOptions) -> Row:
    """bench/hostile.py's requests; then whether a process restarted and the audit still drains."""
    row = Row(LABEL)
    if not built():
        return not_built()
    await gw.wait_healthy(options.heal_seconds)
    before = gw.pids()
    try:
        result = await _run_child(gw, options.requests, options.seed, options.timeout)
    except (RuntimeError, ValueError) as exc:
        row.measured = f"not measured: {exc}"
        row.check(GOALS, False, "not measured")
        return row
    after = gw.pids()
    restarted = sorted(name for name, pid in before.items() if after.get(name) != pid)
    # An audit event the pipeline cannot carry must not hold back the records of other calls.
    await gw.drain_audit(options.drain_settle, options.drain_seconds)
    pending = await gw.audit_pending()
    statuses = ", ".join(f"{status}: {n:,}" for status, n in sorted(result.get("by_status", {}).items()))
    row.measured = (
        f"{result['requests']:,} requests (seed {options.seed}); by status {statuses}; 5xx {result['5xx']}; "
        f"tracebacks or paths in answers {result['leaks']}; processes restarted {len(restarted)}"
        + (f" ({', '.join(restarted)})" if restarted else "")
        + f"; audit events still pending after {pending}"
    )
    row.check("0 5xx", result["5xx"] == 0, f"{result['5xx']} 5xx")
    row.check("0 leaks", result["leaks"] == 0, f"{result['leaks']} leaks")
    row.check("0 restarts", not restarted, f"restarted: {', '.join(restarted)}")
    row.check("audit drains after", pending == 0, f"{pending} audit events stuck")
    codes = result.get("by_code", {})
    if codes:
        row.notes.append("by JSON-RPC code: " + ", ".join(f"{c}: {n:,}" for c, n in sorted(codes.items())))
    return row


def main(argv: list[str]) -> int:
    base, server, requests, seed = argv
    hostile = importlib.import_module(MODULE)
    token = sys.stdin.read().strip()
    result = hostile.run(base, admin_token=token, server=server, requests=int(requests), seed=int(seed))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
