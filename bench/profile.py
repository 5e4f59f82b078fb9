"""`make profile`: py-spy flame graphs of every mcpgw process under bench load.

    python -m bench.profile [--concurrency 32] [--duration 15] [--otlp RATIO]

Writes bench/results/profile-<timestamp>-<process>.svg (open them in a browser);
`--format raw` writes collapsed stacks instead.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.measure import loadgen
from bench.targets import ROOT, echo_downstream, mcpgw, otlp_sink

PROFILED = ("edge", "connector", "audit", "registry")
SUFFIX = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--format", choices=("flamegraph", "raw", "speedscope"), default="flamegraph")
    parser.add_argument(
        "--otlp", type=float, metavar="RATIO", help="export traces (sampled at RATIO) and metrics to a sink"
    )
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mcpgw-profile-") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            env = None if args.otlp is None else stack.enter_context(otlp_sink(workdir, args.otlp))
            echo_url = stack.enter_context(echo_downstream(workdir))
            gateway, _ = stack.enter_context(mcpgw(workdir, echo_url, 0, env=env))
            recorders = [
                subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(gateway.processes[name].pid),
                        "--duration",
                        str(int(args.duration)),
                        "--rate",
                        "250",
                        "--nonblocking",
                        "--format",
                        args.format,
                        "--output",
                        str(out / f"profile-{stamp}-{name}.{SUFFIX[args.format]}"),
                    ],
                    stdout=subprocess.DEVNULL,
                )
                for name in PROFILED
            ]
            tally = loadgen(gateway, "--concurrency", str(args.concurrency), "--duration", str(args.duration))
            for recorder in recorders:
                recorder.wait(timeout=60)
    print(
        f"{tally['calls'] / tally['elapsed']:.0f} calls/s, {tally['errors']} errors; "
        f"profiles: bench/results/profile-{stamp}-*"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
