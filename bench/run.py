"""`make bench`: one run that loads the downstream directly and through each gateway, interleaved.

    python -m bench.run [--duration 10] [--concurrency 1,32] [--rounds 2] [--peers contextforge,fastmcp]

Writes bench/results/<timestamp>.json, .md and .png and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from bench import peers, report
from bench.measure import AuditTail, Point, loadgen, run_point, session_bytes
from bench.targets import (
    ECHO_SERVER,
    PYTHON,
    ROOT,
    Target,
    echo_downstream,
    expected_tools,
    mcpgw,
    otlp_sink,
)

AUDITED_TOOLS = {"echo_echo", "echostdio_echo"}
AUDIT_DRAIN_SECONDS = 60.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated worker counts")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every point")
    parser.add_argument("--peers", default="", help=f"comma-separated peers to add: {','.join(peers.PEERS)}")
    parser.add_argument("--no-stdio", action="store_true", help="skip the stdio targets")
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the stack's floor (floor-audited: mcpgw's libraries in its shape, without its logic)",
    )
    parser.add_argument("--wide-servers", type=int, default=10, help="servers of 200 tools for tools/list")
    parser.add_argument("--sessions", type=int, default=1000, help="idle sessions for the memory point")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--otlp",
        type=float,
        metavar="RATIO",
        help="export traces (sampled at RATIO) and metrics to an OTLP sink, as an operator would",
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds of everything, for CI")
    parser.add_argument(
        "--limits-ab",
        action="store_true",
        help="also load a second mcpgw without rate limits, budgets or bulkheads (mcpgw-nolimits), "
        "interleaved, so what the limits cost is measured in one run",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE[,VAR=VALUE]",
        help="also load a second mcpgw (mcpgw-NAME) with these environment settings, interleaved "
        "with the first: a lever's A/B/A in one run (e.g. unary:MCPGW_CONNECTOR_STREAMS=0)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.rounds, args.wide_servers, args.sessions = 1.0, 1, 1, 20
    return args


def variant(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME:VAR=VALUE,...` as the name and the environment it sets."""
    name, _, assignments = spec.partition(":")
    settings = dict(pair.split("=", 1) for pair in assignments.split(",") if "=" in pair)
    if not name or not settings:
        raise SystemExit(f"--variant {spec!r}: expected NAME:VAR=VALUE[,VAR=VALUE]")
    return name, settings


def tools_list_point(gateway: Target, tools: int, duration: float) -> dict[str, Any]:
    tally = loadgen(gateway, "--mode", "list", "--min-tools", str(tools), "--duration", str(duration))
    return {"tools": tools, **tally}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    chosen = [p for p in args.peers.split(",") if p]
    if not args.no_floor and "floor-audited" not in chosen:
        chosen.append("floor-audited")
    with contextlib.ExitStack() as stack:
        echo_url = stack.enter_context(echo_downstream(workdir))
        env = None if args.otlp is None else stack.enter_context(otlp_sink(workdir, args.otlp))
        gateway, audit_file = stack.enter_context(mcpgw(workdir, echo_url, args.wide_servers, env))
        tail = stack.enter_context(AuditTail(audit_file))
        targets = [Target("direct", "echo", url=echo_url), gateway]
        if args.limits_ab:
            (workdir / "nolimits").mkdir()
            unlimited, _ = stack.enter_context(
                mcpgw(workdir / "nolimits", echo_url, args.wide_servers, env, limited=False)
            )
            unlimited.name = "mcpgw-nolimits"
            targets.append(unlimited)
        for spec in args.variant:
            name, settings = variant(spec)
            (workdir / name).mkdir()
            other, _ = stack.enter_context(
                mcpgw(workdir / name, echo_url, args.wide_servers, {**(env or os.environ), **settings})
            )
            other.name = f"mcpgw-{name}"
            targets.append(other)
        targets += [stack.enter_context(peers.PEERS[name](workdir, echo_url)) for name in chosen]
        if not args.no_stdio:
            stdio = f"{PYTHON} {ECHO_SERVER} --stdio"
            targets.append(Target("direct-stdio", "echo", stdio=stdio))
            targets.append(
                Target(
                    "mcpgw-stdio",
                    "echostdio_echo",
                    url=gateway.url,
                    headers=gateway.headers,
                    processes=gateway.processes,
                )
            )
        # The HTTP downstream every HTTP target shares: its CPU is the D of the ratio model.
        downstream = next(p for p in psutil.Process().children() if ECHO_SERVER in p.cmdline())
        points: list[Point] = []
        for concurrency in concurrencies:
            for round_ in range(args.rounds):
                for target in targets:
                    # Over stdio (the baseline says so) the echo server is a child of the target's.
                    fed = report.BASELINE.get(target.name, "direct") == "direct"
                    point = run_point(target, concurrency, args.duration, round_, downstream if fed else None)
                    print(report.point_line(point), file=sys.stderr, flush=True)
                    points.append(point)
        tools_list = tools_list_point(gateway, expected_tools(args.wide_servers), max(args.duration / 2, 1.0))
        edge = gateway.processes["edge"]
        idle_bytes = session_bytes(gateway, edge, args.sessions, streams=False)
        stream_bytes = session_bytes(gateway, edge, args.sessions, streams=True)
        # The gateway whose audit file is tailed (mcpgw-nolimits keeps its own).
        audited = sum(p.calls + p.errors + p.warmup for p in points if p.target in ("mcpgw", "mcpgw-stdio"))
        recorded = tail.wait_for(AUDITED_TOOLS, audited, AUDIT_DRAIN_SECONDS)
        lags = sorted(tail.lags_ms)
    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {
            "duration": args.duration,
            "concurrency": concurrencies,
            "rounds": args.rounds,
            "sessions": args.sessions,
            "wide_servers": args.wide_servers,
            "limits_ab": args.limits_ab,
            "variants": args.variant,
            "otlp_sample_ratio": args.otlp,
        },
        "points": [dataclasses.asdict(p) for p in points],
        "tools_list": tools_list,
        "idle_session_bytes": idle_bytes,
        "get_stream_bytes": stream_bytes,
        "audit": {
            "expected": audited,
            "recorded": recorded,
            "lost": audited - recorded,
            "lag_ms": report.percentiles(lags),
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mcpgw-bench-") as workdir:
        results = run(args, Path(workdir))
    summary = report.summarize(results)
    results["summary"] = summary
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / (f"smoke-{stamp}" if args.smoke else stamp)
    base.with_suffix(".json").write_text(json.dumps(results))
    table = report.markdown(results)
    base.with_suffix(".md").write_text(table)
    report.chart(results, base.with_suffix(".png"))
    if not args.smoke:
        (args.out / "LATEST.md").write_text(
            f"{table}\n![latency and throughput]({base.name}.png)\n\nRaw samples: {base.name}.json\n"
        )
    print(table)
    print(f"results: {base}.json, .md, .png", file=sys.stderr)
    failed = sum(p["errors"] for p in results["points"]) + results["audit"]["lost"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
