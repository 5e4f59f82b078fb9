"""`make drills`: failure drills against `mcpgw up` (audit on) in front of an HTTP and a stdio echo.

    python -m bench.drills [--smoke] [--only kill-edge,sessions,...] [--out DIR] [--keep]

Drills, in order: a downstream on a closed port; slow clients sending headers a byte a
second; many sessions and GET streams, then closed; hostile input (bench/hostile.py); kill -9
of edge, connector, registry, audit, the HTTP downstream and nats-server during a load. Prints
one Markdown table and writes it to `<out>/drills-<UTC timestamp>.md` (`smoke-drills-...`
with --smoke). Exit status 1 when the harness broke, or (full run only) a target was not met.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType

from bench.drills import closed_port, hostile_input, kills, sessions, slow_clients
from bench.drills.gateway import Gateway, Unhealthy, started
from bench.drills.report import Row, markdown
from bench.targets import ROOT

# The kills come last, NATS's last of all: what a kill breaks for good must not skew the others.
DRILLS = [
    "closed-port",
    "slow-clients",
    "sessions",
    "hostile",
    *(f"kill-{victim}" for victim in kills.VICTIMS),
]
LABELS = {
    **{f"kill-{victim}": kills.label(victim) for victim in kills.VICTIMS},
    "closed-port": closed_port.LABEL,
    "slow-clients": slow_clients.LABEL,
    "sessions": sessions.LABEL,
    "hostile": hostile_input.LABEL,
}
# Defaults of the full run and of --smoke (a few seconds a drill, small counts).
FULL = {
    "duration": 60.0, "kill_at": 10.0, "workers": 12, "rate": 150.0, "window": 60.0, "quiet": 15.0,
    "slow_clients": 500, "sessions": 2000, "streams": 500, "hostile_requests": 10000,
    "heal": 60.0, "drain_settle": 2.0, "drain_seconds": 90.0, "settle": 10.0, "max_seconds": 3600.0,
    "hostile_seconds": 1800.0,
}  # fmt: skip
SMOKE = {
    "duration": 3.0, "kill_at": 1.0, "workers": 4, "rate": 40.0, "window": 3.0, "quiet": 2.0,
    "slow_clients": 20, "sessions": 100, "streams": 20, "hostile_requests": 200,
    "heal": 30.0, "drain_settle": 0.5, "drain_seconds": 8.0, "settle": 2.0, "max_seconds": 110.0,
    "hostile_seconds": 60.0,
}  # fmt: skip
KILLED_LINE = re.compile(r"exited with code -9; restarting")
# A line the logging module wrote (a timestamp first), and the line that names an exception.
LOGGED_LINE = re.compile(r"\d{4}-\d\d-\d\d |[A-Z]+: ")
EXCEPTION_LINE = re.compile(r"[\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds per drill, targets not asserted")
    parser.add_argument("--only", default="", help=f"comma-separated drills to run, of: {','.join(DRILLS)}")
    parser.add_argument("--duration", type=float, help="seconds of load per kill drill (60)")
    parser.add_argument("--kill-at", type=float, help="seconds into the load of the kill (10)")
    parser.add_argument("--workers", type=int, help="load clients (12)")
    parser.add_argument("--rate", type=float, help="calls/s of the load in all (150)")
    parser.add_argument("--window", type=float, help="seconds of the closed-port and slow-client drills (60)")
    parser.add_argument("--quiet", type=float, help="seconds of the normal client's quiet baseline (15)")
    parser.add_argument("--slow-clients", type=int, help="slow connections (500)")
    parser.add_argument("--sessions", type=int, help="idle sessions (2000)")
    parser.add_argument("--streams", type=int, help="sessions holding a GET stream (500)")
    parser.add_argument("--hostile-requests", type=int, help="hostile requests (10000)")
    parser.add_argument("--seed", type=int, default=14, help="seed of the hostile input")
    parser.add_argument("--hostile-seconds", type=float, help="deadline of bench/hostile.py (1800)")
    parser.add_argument("--heal", type=float, help="seconds the gateway gets to serve again after a drill")
    parser.add_argument("--drain-settle", type=float, help="seconds without new audit records = drained")
    parser.add_argument("--drain-seconds", type=float, help="deadline of the audit drain")
    parser.add_argument("--settle", type=float, help="seconds the edge gets to shrink after sessions close")
    parser.add_argument("--max-seconds", type=float, help="the whole run stops after this")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, audit file)")
    args = parser.parse_args(argv)
    for name, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.drills = [d.strip() for d in args.only.split(",") if d.strip()] or DRILLS
    unknown = set(args.drills) - set(DRILLS)
    if unknown:
        parser.error(f"unknown drills: {', '.join(sorted(unknown))}")
    if args.kill_at >= args.duration:
        parser.error("--kill-at must fall within --duration")
    return args


def drill(args: argparse.Namespace, gw: Gateway, name: str) -> Callable[[], Awaitable[Row]]:
    if name.startswith("kill-"):
        killing = kills.KillOptions(args.duration, args.kill_at, args.workers, args.rate, args.heal,
                                    args.drain_settle, args.drain_seconds)  # fmt: skip
        return lambda: kills.kill_drill(gw, name.removeprefix("kill-"), killing)
    if name == "closed-port":
        return lambda: closed_port.closed_port_drill(gw, args.window, args.heal)
    if name == "slow-clients":
        return lambda: slow_clients.slow_clients_drill(
            gw, args.slow_clients, args.window, args.quiet, args.heal
        )
    if name == "sessions":
        return lambda: sessions.sessions_drill(gw, args.sessions, args.streams, args.settle, args.heal)
    options = hostile_input.HostileOptions(args.hostile_requests, args.seed, args.hostile_seconds, args.heal,
                                           args.drain_settle, args.drain_seconds)  # fmt: skip
    return lambda: hostile_input.hostile_drill(gw, options)


def phases(drills: list[str]) -> list[list[str]]:
    """The drills that share a gateway, then hostile input on a fresh one: what it leaves behind
    must not skew the others' rows, nor what a killed NATS breaks skew its row."""
    shared = [name for name in drills if name != "hostile"]
    alone = [name for name in drills if name == "hostile"]
    return [phase for phase in (shared, alone) if phase]


async def run_drills(args: argparse.Namespace, gw: Gateway, names: list[str], deadline: float) -> list[Row]:
    """The drills `names` in turn; a drill that raises becomes a row saying so."""
    rows: list[Row] = []
    for index, name in enumerate(names):
        began = time.monotonic()
        print(f"drill {name} ...", file=sys.stderr, flush=True)
        try:
            async with asyncio.timeout(max(0.0, deadline - began)) as limit:
                row = await drill(args, gw, name)()
        except Unhealthy as exc:
            # The product did not recover: a finding, not a broken harness.
            row = Row(LABELS[name], error=f"gateway unhealthy: {exc}")
        except TimeoutError as exc:
            if not limit.expired():
                row = Row(LABELS[name], error=f"TimeoutError: {exc}", broken=True)
            else:
                rows.append(Row(LABELS[name], error="stopped at the run's deadline", broken=True))
                rows += not_run(names[index + 1 :])
                return rows
        except Exception as exc:
            traceback.print_exc()
            row = Row(LABELS[name], error=f"{type(exc).__name__}: {exc}", broken=True)
        print(f"  {time.monotonic() - began:.0f} s: {row.measured or row.error}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def not_run(names: list[str]) -> list[Row]:
    return [Row(LABELS[name], error="not run (deadline)", broken=True) for name in names]


def log_notes(log: Path, whose: str) -> list[str]:
    """ERROR lines and tracebacks the gateway logged during the run, each kind quoted once."""
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if " ERROR " in line or line.startswith("ERROR")]
    # The supervisor reporting the drills' own kills is expected, not a finding.
    kills = [line for line in errors if KILLED_LINE.search(line)]
    tracebacks = sum(line.startswith("Traceback") for line in lines)
    notes = [
        f"{whose} log: {len(errors)} ERROR lines ({len(kills)} of them the supervisor reporting "
        f"the drills' kills), {tracebacks} tracebacks"
    ]
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if line not in errors or line in kills:
            continue
        # What was logged, with the exception that ended its traceback (if one follows).
        following = itertools.takewhile(lambda later: not LOGGED_LINE.match(later), lines[index + 1 :])
        raised = ([later for later in following if EXCEPTION_LINE.match(later)] or [""])[-1]
        key = line.split(" ERROR ", 1)[-1][:80] + raised[:80]
        if key not in seen and len(seen) < 10:
            seen.add(key)
            notes.append(f"{whose} logged: `{line[24:200]}`" + (f" ← `{raised[:200]}`" if raised else ""))
    return notes


def settings_line(args: argparse.Namespace) -> str:
    return (
        f"Load: {args.workers} clients (each its own connection and session, unique request ids, "
        f"every answer checked), {args.rate:g} calls/s in all, alternating the HTTP and the stdio "
        f"echo. Kill drills: {args.duration:g} s of load each, the kill at {args.kill_at:g} s. "
        f"Closed port and slow clients: {args.window:g} s ({args.slow_clients} slow clients, a header "
        f"byte a second; the normal client's quiet baseline {args.quiet:g} s). Sessions: "
        f"{args.sessions} idle + {args.streams} with a GET stream. Hostile: {args.hostile_requests} "
        f"requests, seed {args.seed}, on a gateway of its own."
    )


def _stop_on_sigterm(signum: int, _: FrameType | None) -> None:
    # SystemExit unwinds the context managers, which stop every process the run started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    deadline = began + args.max_seconds
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-drills-"))
    left_behind: list[str] = []
    rows: list[Row] = []
    extra: list[str] = []
    try:
        for number, names in enumerate(phases(args.drills), 1):
            if time.monotonic() >= deadline:
                rows += not_run(names)
            elif names == ["hostile"] and not hostile_input.built():
                rows.append(hostile_input.not_built())
            else:
                directory = workdir / f"gateway-{number}"
                directory.mkdir()
                with started(directory, left_behind) as gw:
                    rows += asyncio.run(run_drills(args, gw, names, deadline))
                whose = "hostile input's gateway" if names == ["hostile"] else "gateway"
                extra += log_notes(directory / "mcpgw.log", whose)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if left_behind:
        extra.append(f"processes that outlived the gateway's stop (killed): {'; '.join(left_behind)}")
    report = markdown(rows, settings_line(args), smoke=args.smoke, elapsed=time.monotonic() - began,
                      extra=extra)  # fmt: skip
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / (f"smoke-drills-{stamp}.md" if args.smoke else f"drills-{stamp}.md")
    path.write_text(report)
    print(report)
    print(f"results: {path}", file=sys.stderr)
    if any(row.broken for row in rows):
        return 1
    return 0 if args.smoke or not any(row.failed() for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
