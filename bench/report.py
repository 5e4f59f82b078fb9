"""Turning a run's raw points into ratios, a Markdown table and a chart."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.measure import Point

# Gateway targets are compared with the direct connection over the same transport.
# What each target's ratio is to: the same downstream reached directly over the same
# transport (the stdio bridges spawn the echo server as mcpgw-stdio's connector does).
BASELINE = {
    "mcpgw-stdio": "direct-stdio",
    "direct-stdio": "direct-stdio",
    "mcp-proxy": "direct-stdio",
    "supergateway": "direct-stdio",
}
TARGETS = {
    "ratio_c32": 0.5,
    "ratio_vs_contextforge_c32": 5.0,
    "added_p50_ms_c1": 1.5,
    "cpu_ms_per_call": 3.0,
    "tools_list_p50_ms": 20.0,
    "idle_session_bytes": 4096,
}


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 of already sorted values (zeros when there are none)."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    last = len(values) - 1
    return {
        name: values[min(last, int(q * len(values)))]
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
    }


def point_line(point: Point) -> str:
    lat = percentiles(sorted(point.latencies_ms))
    cpu = sum(point.cpu_seconds.values()) * 1000 / max(point.calls + point.warmup, 1)
    return (
        f"{point.target:>14} c={point.concurrency:<3} round {point.round}: "
        f"{point.calls / point.elapsed:8.1f} calls/s  p50 {lat['p50']:.2f} ms  "
        f"cpu {cpu:.2f} ms/call  errors {point.errors}"
    )


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per target and concurrency: throughput, latency, ratio to direct, CPU per call."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for point in results["points"]:
        grouped[(point["target"], point["concurrency"])].append(point)
    rows: dict[str, dict[str, Any]] = {}
    for (target, concurrency), points in grouped.items():
        calls = sum(p["calls"] for p in points)
        latencies = sorted(x for p in points for x in p["latencies_ms"])
        cpu: dict[str, float] = defaultdict(float)
        for p in points:
            for name, seconds in p["cpu_seconds"].items():
                cpu[name] += seconds
        made = max(calls + sum(p["warmup"] for p in points), 1)
        per_call = {name: seconds * 1000 / made for name, seconds in cpu.items()}
        load: dict[str, float] = defaultdict(float)
        for p in points:
            for name, seconds in p.get("load_cpu_seconds", {}).items():
                load[name] += seconds * 1000 / made
        rows[f"{target}@{concurrency}"] = {
            "target": target,
            "concurrency": concurrency,
            "calls": calls,
            "errors": sum(p["errors"] for p in points),
            "calls_per_second": calls / sum(p["elapsed"] for p in points),
            "latency_ms": percentiles(latencies),
            "cpu_ms_per_call": per_call,
            "cpu_ms_per_call_total": sum(per_call.values()),
            "load_cpu_ms_per_call": dict(load),
            "rss_mib": {name: max(p["rss_bytes"].get(name, 0) for p in points) / 2**20 for name in cpu},
        }
    for row in rows.values():
        base = rows.get(f"{BASELINE.get(row['target'], 'direct')}@{row['concurrency']}")
        if base is not None:
            row["ratio"] = row["calls_per_second"] / base["calls_per_second"]
            row["added_p50_ms"] = row["latency_ms"]["p50"] - base["latency_ms"]["p50"]
            row["predicted_ratio"] = predicted_ratio(base, row, results["machine"]["cpus"])
    return {"rows": rows, "targets": check_targets(rows, results)}


def predicted_calls_per_second(row: dict[str, Any], cores: int) -> float | None:
    """The most calls/s the CPU allows: every process is one event loop on one core at most,
    and all of them share `cores` (None without the downstream's CPU, e.g. over stdio)."""
    load = row.get("load_cpu_ms_per_call", {})
    if "downstream" not in load:
        return None
    spent: dict[str, float] = {**row["cpu_ms_per_call"], **load}
    return min(1000 / max(spent.values()), cores * 1000 / sum(spent.values()))


def predicted_ratio(direct: dict[str, Any], proxied: dict[str, Any], cores: int) -> float | None:
    """The ratio the CPU per call of each process predicts (README, Performance)."""
    base, through = predicted_calls_per_second(direct, cores), predicted_calls_per_second(proxied, cores)
    return None if base is None or through is None else through / base


def check_targets(rows: dict[str, dict[str, Any]], results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def row(name: str) -> dict[str, Any]:
        return rows.get(name, {})

    forge = row("contextforge@32").get("calls_per_second")
    measured = {
        "ratio_c32": row("mcpgw@32").get("ratio"),
        "ratio_vs_contextforge_c32": row("mcpgw@32")["calls_per_second"] / forge if forge else None,
        "added_p50_ms_c1": row("mcpgw@1").get("added_p50_ms"),
        "cpu_ms_per_call": max(
            (r["cpu_ms_per_call_total"] for r in rows.values() if r["target"] == "mcpgw"), default=None
        ),
        "tools_list_p50_ms": percentiles(sorted(results["tools_list"]["latencies_ms"]))["p50"],
        "idle_session_bytes": results["idle_session_bytes"],
    }
    checked = {}
    for name, goal in TARGETS.items():
        value = measured[name]
        at_least = name.startswith("ratio")
        met = None if value is None else (value >= goal if at_least else value <= goal)
        checked[name] = {"goal": goal, "at_least": at_least, "value": value, "met": met}
    errors = sum(r["errors"] for r in rows.values())
    checked["errors"] = {"goal": 0, "at_least": False, "value": errors, "met": errors == 0}
    lost = results["audit"]["lost"]
    checked["lost_audit_events"] = {"goal": 0, "at_least": False, "value": lost, "met": lost == 0}
    return checked


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _telemetry(settings: dict[str, Any]) -> str:
    ratio = settings.get("otlp_sample_ratio")
    if ratio is None:
        return "."
    return f"; traces (sampled at {ratio:g}) and metrics exported to an OTLP sink."


def markdown(results: dict[str, Any]) -> str:
    summary = results["summary"]
    machine = results["machine"]
    settings = results["settings"]
    lines = [
        f"## mcpgw bench, {results['started']}",
        "",
        f"{machine['cpus']} CPUs, {machine['memory_gib']} GiB, Python {machine['python']}; "
        f"{settings['duration']:g} s per point, {settings['rounds']} interleaved rounds, loopback"
        + _telemetry(settings),
        "",
        "| target | c | calls/s | ratio | p50 ms | p95 ms | p99 ms | +p50 ms | proxy CPU ms/call | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(summary["rows"].values(), key=lambda r: (r["concurrency"], _order(r["target"]))):
        lat = row["latency_ms"]
        cpu = row["cpu_ms_per_call_total"] if row["cpu_ms_per_call"] else None
        lines.append(
            f"| {row['target']} | {row['concurrency']} | {row['calls_per_second']:.0f} | "
            f"{_fmt(row.get('ratio'))} | {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | "
            f"{_fmt(row.get('added_p50_ms'))} | {_fmt(cpu)} | {row['errors']} |"
        )
    processes = _gateway_processes(summary)
    lines += ["", "CPU ms per call and peak RSS of each mcpgw process (HTTP downstream), and of the "
              "stack's floor (bench/floor_server.py: its libraries, none of its logic):", ""]  # fmt: skip
    lines += ["| target | c | " + " | ".join(processes) + " |"]
    lines += ["|---|---:|" + "---:|" * len(processes)]
    for row in sorted(summary["rows"].values(), key=lambda r: (r["concurrency"], _order(r["target"]))):
        if row["target"].startswith(("mcpgw", "floor")) and row["target"] != "mcpgw-stdio":
            cells = [_process_cell(row, n) for n in processes]
            lines.append(f"| {row['target']} | {row['concurrency']} | " + " | ".join(cells) + " |")
    lines += over_the_floor(summary["rows"])
    lines += ratio_model(summary["rows"], machine["cpus"])
    tools = results["tools_list"]
    audit = results["audit"]
    lat = audit["lag_ms"]
    lines += [
        "",
        f"- tools/list of {tools['tools']} tools over {settings['wide_servers']} servers (every page): "
        f"p50 {_percentile(tools, 'p50'):.2f} ms, p99 {_percentile(tools, 'p99'):.2f} ms",
        f"- edge memory per idle session ({settings['sessions']} more sessions, no open connection): "
        f"{results['idle_session_bytes']:.0f} bytes; per session holding its GET stream open: "
        f"{results['get_stream_bytes']:.0f} bytes",
        f"- audit: {audit['recorded']} of {audit['expected']} calls exported ({audit['lost']} lost); "
        f"lag call end → exported record p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for name, check in summary["targets"].items():
        sign = "≥" if check["at_least"] else "≤"
        met = {True: "yes", False: "**no**", None: "not measured"}[check["met"]]
        value = check["value"]
        lines.append(
            f"| {name} | {sign} {check['goal']:g} | {_fmt(value) if value is not None else '-'} | {met} |"
        )
    return "\n".join(lines) + "\n"


def over_the_floor(rows: dict[str, dict[str, Any]]) -> list[str]:
    """What mcpgw's own code costs per call: its CPU less the stack floor's, process by process."""
    lines = []
    for row in rows.values():
        floor = rows.get(f"floor-audited@{row['concurrency']}")
        if row["target"] != "mcpgw" or floor is None:
            continue
        own = {n: v - floor["cpu_ms_per_call"].get(n, 0.0) for n, v in row["cpu_ms_per_call"].items()}
        parts = ", ".join(
            f"{n} {v:+.3f}" for n, v in sorted(own.items(), key=lambda i: -i[1]) if abs(v) >= 0.0005
        )
        total = row["cpu_ms_per_call_total"] - floor["cpu_ms_per_call_total"]
        lines.append(
            f"- mcpgw over the stack's floor at c={row['concurrency']}: "
            f"{total:+.3f} ms CPU per call ({parts})"
        )
    return ["", *lines] if lines else []


def ratio_model(rows: dict[str, dict[str, Any]], cores: int) -> list[str]:
    """What CPU per call predicts of each proxy's throughput and ratio, beside what was measured."""
    lines = ["", "The ratio model (README, Performance): CPU ms per call of what runs, and the calls/s "
             "it allows (one core per process at most, the machine's cores for all):", ""]  # fmt: skip
    lines += ["| target | c | load generator | downstream | proxy | calls/s allowed | measured | "
              "predicted ratio | measured ratio |"]  # fmt: skip
    lines += ["|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in sorted(rows.values(), key=lambda r: (r["concurrency"], _order(r["target"]))):
        allowed = predicted_calls_per_second(row, cores)
        if allowed is None or row["concurrency"] == 1:
            continue  # at c=1 latency, not CPU, sets the pace
        load = row["load_cpu_ms_per_call"]
        predicted, ratio = row.get("predicted_ratio"), row.get("ratio")
        lines.append(
            f"| {row['target']} | {row['concurrency']} | {load['loadgen']:.3f} | {load['downstream']:.3f} | "
            f"{_fmt(row['cpu_ms_per_call_total'] if row['cpu_ms_per_call'] else None, 3)} | {allowed:.0f} | "
            f"{row['calls_per_second']:.0f} | {_fmt(predicted)} | {_fmt(ratio)} |"
        )
    return lines


def _process_cell(row: dict[str, Any], name: str) -> str:
    if name not in row["cpu_ms_per_call"]:
        return "-"
    return f"{row['cpu_ms_per_call'][name]:.3f} ms, {row['rss_mib'][name]:.0f} MiB"


def _percentile(tally: dict[str, Any], q: str) -> float:
    return percentiles(sorted(tally["latencies_ms"]))[q]


def _order(target: str) -> tuple[int, str]:
    return (0 if target.startswith("direct") else 1 if target.startswith("mcpgw") else 2, target)


def _gateway_processes(summary: dict[str, Any]) -> list[str]:
    for row in summary["rows"].values():
        if row["target"] == "mcpgw":
            return sorted(row["cpu_ms_per_call"])
    return []


def chart(results: dict[str, Any], path: Path) -> None:
    """Latency distribution (c=1 and the highest c) and throughput, per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["summary"]["rows"]
    concurrencies = results["settings"]["concurrency"]
    targets = sorted({r["target"] for r in rows.values()}, key=_order)
    figure, axes = plt.subplots(1, len(concurrencies) + 1, figsize=(6 * (len(concurrencies) + 1), 5))
    for axis, concurrency in zip(axes, concurrencies, strict=False):
        data = [
            sorted(x for p in results["points"] if p["target"] == t and p["concurrency"] == concurrency
                   for x in p["latencies_ms"]) or [0.0]
            for t in targets
        ]  # fmt: skip
        axis.boxplot(data, tick_labels=targets, whis=(5, 95), showfliers=False)
        axis.set_yscale("log")
        axis.set_title(f"latency per call, c={concurrency} (ms, whiskers 5-95 %)")
        axis.tick_params(axis="x", rotation=30)
    bars = axes[-1]
    width = 0.8 / len(concurrencies)
    for index, concurrency in enumerate(concurrencies):
        values = [rows.get(f"{t}@{concurrency}", {}).get("calls_per_second", 0) for t in targets]
        bars.bar([i + index * width for i in range(len(targets))], values, width, label=f"c={concurrency}")
    bars.set_xticks(
        [i + width * (len(concurrencies) - 1) / 2 for i in range(len(targets))], targets, rotation=30
    )
    bars.set_title("throughput (calls/s)")
    bars.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
