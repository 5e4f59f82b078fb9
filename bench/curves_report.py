"""The tables, targets and figure of a `make bench-scale` run (bench/curves.py's results).

python -m bench.curves_report bench/results/curves-<stamp>.json   # print its Markdown again
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MIB = 2**20
CPU_SHOWN = ("edge", "connector", "audit", "nats", "registry", "downstream", "client")
# name: (the most it may be, what is measured)
GOALS = {
    "inflight_kib_per_call": (10.0, "KiB of edge + connector RSS per call in flight"),
    "stream_kib": (8.0, "KiB of edge RSS per open GET stream"),
    "errors": (0, "failed calls and lists (concurrency, in flight, catalog)"),
    "inflight_not_completed": (0, "in-flight calls that did not complete"),
}


def _errors(curves: dict[str, Any]) -> int | None:
    counted = [
        sum(r["errors"] for r in curves["concurrency"]["rows"]) if "concurrency" in curves else None,
        curves["inflight"]["errors"] if "inflight" in curves else None,
        sum(r["list_errors"] for r in curves["catalog"]["rows"]) if "catalog" in curves else None,
    ]
    known = [n for n in counted if n is not None]
    return sum(known) if known else None


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal with its measured value and whether it is met (None: not measured)."""
    curves = results["curves"]
    inflight = curves.get("inflight")
    # A traced run's RSS holds tracemalloc's own records: no measure of the memory goals.
    traced = results["settings"].get("heap", False)
    measured = {
        "inflight_kib_per_call": None if inflight is None or traced else inflight["kib_per_call_total"],
        "stream_kib": curves["streams"]["kib_per_stream"] if "streams" in curves and not traced else None,
        "errors": _errors(curves),
        "inflight_not_completed": None if inflight is None else inflight["count"] - inflight["completed"],
    }
    checked = {}
    for name, (goal, what) in GOALS.items():
        value = measured[name]
        checked[name] = {
            "goal": goal,
            "what": what,
            "value": value,
            "met": None if value is None else value <= goal,
        }
    return checked


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _heap(curve: dict[str, Any], unit: str) -> list[str]:
    """Whose code holds a unit's bytes, from the traced run's heap snapshots (bench/heap.py)."""
    if "heap" not in curve:
        return []
    lines = [
        "",
        f"Heaps traced (tracemalloc; this run's RSS figures include its own records): Python bytes "
        f"allocated between an idle snapshot and one with the {unit}s held, and still held, per {unit} "
        "held by that process then, "
        "by whose code allocated them (an mcpgw module, or the library whose line did).",
    ]
    for process, found in curve["heap"].items():
        lines += [
            "",
            f"| {process}: {found['units']:,} {unit}s held, {found['bytes_per_unit']:,.0f} bytes each "
            f"| bytes per {unit} |",
            "|---|---:|",
        ]
        lines += [f"| {who} | {size:,.0f} |" for who, size in found["by_owner"].items()]
        largest = list(found.get("sites", {}).items())[:10]
        sites = ", ".join(f"`{where}` {size:,.0f}" for where, size in largest)
        lines += ["", f"Its largest allocation sites (bytes per {unit}): {sites}."]
    return lines


def _concurrency(curve: dict[str, Any]) -> list[str]:
    rows = {(r["target"], r["concurrency"]): r for r in curve["rows"]}
    lines = [
        "### 1. Concurrency: tools/call of echo, HTTP → HTTP",
        "",
        f"{curve['duration']:g} s per point; mcpgw as `make bench` configures it ({curve['limits']}).",
        "",
        "| c | direct calls/s | mcpgw calls/s | mcpgw / direct | direct p50 ms | mcpgw p50 ms "
        "| direct p99 ms | mcpgw p99 ms | mcpgw CPU ms/call | errors (direct, mcpgw) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in sorted({r["concurrency"] for r in curve["rows"]}):
        d, g = rows.get(("direct", c)), rows.get(("mcpgw", c))
        if d is None or g is None:
            continue
        lines.append(
            f"| {c} | {d['calls_per_second']:,.0f} | {g['calls_per_second']:,.0f} | "
            f"{g['calls_per_second'] / d['calls_per_second']:.2f} | {d['p50_ms']:.2f} | {g['p50_ms']:.2f} | "
            f"{d['p99_ms']:.2f} | {g['p99_ms']:.2f} | {g['cpu_ms_per_call']:.2f} | "
            f"{d['errors']}, {g['errors']} |"
        )
    samples = [s for r in curve["rows"] for s in r["error_samples"]][:3]
    if samples:
        lines += ["", "Error samples: " + "; ".join(f"`{s[:160]}`" for s in samples)]
    return lines


def _inflight(curve: dict[str, Any]) -> list[str]:
    lat = curve["latency_ms"]
    idle, peak, per = curve["idle_rss"], curve["peak_rss"], curve["kib_per_call"]
    memory = "; ".join(
        f"{name} {idle[name] / MIB:.0f} → {peak[name] / MIB:.0f} MiB ({per[name]:.1f} KiB per call)"
        for name in idle
    )
    lines = [
        f"### 2. {curve['count']:,} calls in flight at once "
        f"(a tool that sleeps {curve['sleep_seconds']:g} s)",
        "",
        f"Set for this curve: {curve['settings']}. The client is its own process: "
        f"{curve['sessions']} sessions, every call started at once.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| completed | {curve['completed']:,} of {curve['count']:,} |",
        f"| errors | {curve['errors']:,} |",
        f"| time for all to complete | {curve['elapsed']:.2f} s |",
        f"| latency p50 / p99 / max | {lat['p50'] / 1000:.2f} / {lat['p99'] / 1000:.2f} / "
        f"{lat['max'] / 1000:.2f} s |",
        f"| most in flight at the downstream at once | {curve['downstream_most_in_flight']:,} |",
        f"| most in flight at the edge (sampled every 0.25 s) | {curve['edge_most_in_flight']:,.0f} |",
        f"| RSS idle → peak | {memory} |",
        f"| edge + connector per call in flight | {curve['kib_per_call_total']:.1f} KiB |",
        "| CPU seconds: edge, connector, audit, nats, registry; downstream; client (whole process) | "
        + ", ".join(f"{curve['cpu_seconds'].get(n, 0):.1f}" for n in CPU_SHOWN)
        + " |",
    ]
    if curve["error_kinds"]:
        lines += ["", "Errors: " + "; ".join(f"{n} of `{k}`" for k, n in curve["error_kinds"].items())]
    if min(curve["downstream_most_in_flight"], curve["edge_most_in_flight"]) < curve["count"]:
        lines += [
            "",
            f"Not all {curve['count']:,} calls were in flight at the same moment everywhere: the per-call "
            "figures divide each process's growth by every call, so where fewer were held at once they "
            "understate the cost of one (the connector held at most as many as the edge, at least as many "
            "as the downstream).",
        ]
    lines += _heap(curve, "call")
    lines += [
        "",
        "Connections the kernel dropped from full listen queues during the curve: "
        f"{curve['listen_overflows']:,} "
        "(each is retried by the client after a second or more).",
    ]
    return lines


def _catalog(curve: dict[str, Any]) -> list[str]:
    changes = len(curve["rows"][0]["rounds"]) if curve["rows"] else 0
    lines = [
        "### 3. Catalog size: one downstream serving N tools",
        "",
        "tools/list follows nextCursor over every page. The registry logs and meters no snapshot build "
        "time, so its own `build_snapshot` is timed on a copy of its database after the run (and, apart, "
        "reading the catalog from the store). A change end to end: the downstream changes its list and "
        "sends notifications/tools/list_changed; the connector lists it again (every page); the client "
        "holding a GET stream on /mcp hears notifications/tools/list_changed; /readyz shows the new count "
        f"(ms after the downstream's notification, medians of {changes} changes).",
        "",
        "| tools | tools/list p50 ms | p99 ms | lists | edge RSS MiB (up → listed) | registry, connector MiB "
        "| snapshot build ms (+ store read) | re-listed ms | client heard list_changed ms "
        "| /readyz shows it ms | missed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in curve["rows"]:
        lines.append(
            f"| {r['tools']:,} | {r['list_p50_ms']:.1f} | {r['list_p99_ms']:.1f} | {r['lists']} | "
            f"{r['rss_mib_started']['edge']:.0f} → {r['rss_mib_listed']['edge']:.0f} | "
            f"{r['rss_mib_listed']['registry']:.0f}, {r['rss_mib_listed']['connector']:.0f} | "
            f"{r['snapshot_build_ms']:.1f} (+ {r['snapshot_read_ms']:.1f}) | "
            f"{_f(r['relisted_ms'], 0)} | "
            f"{_f(r['notified_ms'], 0)} | "
            f"{_f(r['shown_ms'], 0)} | {r['missed_notifications']} |"
        )
    return lines


def _servers(curve: dict[str, Any]) -> list[str]:
    rows = curve["rows"]
    first = rows[0] if rows else None
    lines = [
        "### 4. Downstream servers: N HTTP servers, all served by one fixture process",
        "",
        "Seconds from starting `mcpgw up`. A server is connected once the connector has listed its "
        "tools (the downstream notes when it answered the last page; registry hears of it next); "
        "the admin API (`GET /api/servers`) then confirms that every server is connected, and "
        "/readyz that the edge shows them all (both are served by the edge, which starts last).",
        "",
        "| servers | connector started | all connected | all connected, from the connector's start "
        "| edge ready | /readyz shows all | connector RSS MiB | connector KiB per added server |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        added = "-"
        if first is not None and r["servers"] > first["servers"]:
            grown = (r["rss_mib"]["connector"] - first["rss_mib"]["connector"]) * 1024
            added = f"{grown / (r['servers'] - first['servers']):.0f}"
        lines.append(
            f"| {r['servers']} | {r['connector_started_s']:.2f} | {r['all_connected_s']:.2f} | "
            f"{r['from_connector_start_s']:.2f} | {r['edge_ready_s']:.2f} | {r['shown_s']:.2f} | "
            f"{r['rss_mib']['connector']:.1f} | {added} |"
        )
    return lines


def _streams(curve: dict[str, Any]) -> list[str]:
    return [
        f"### 5. {curve['streams']:,} open GET streams on /mcp, each its own session",
        "",
        f"Opened after {curve['warm']} held ones (bench/loadgen `--mode sessions --streams`). For "
        f"comparison, {curve['connections']:,} TCP connections with no request on them yet, opened "
        f"beside the streams: {curve['kib_per_connection']:.2f} KiB of edge RSS each (what every stream "
        "and every call in flight pays first).",
        "",
        "| streams | edge held at the end | time to open s | edge RSS MiB (before → after) "
        "| KiB per stream |",
        "|---:|---:|---:|---:|---:|",
        f"| {curve['streams']:,} | {curve['held_at_end']:,} | {curve['open_seconds']:.1f} | "
        f"{curve['rss_before'] / MIB:.0f} → {curve['rss_after'] / MIB:.0f} | {curve['kib_per_stream']:.2f} |",
        *_heap(curve, "stream"),
    ]


SECTIONS = {
    "concurrency": _concurrency,
    "inflight": _inflight,
    "catalog": _catalog,
    "servers": _servers,
    "streams": _streams,
}


def markdown(results: dict[str, Any], figure: str | None = None) -> str:
    machine = results["machine"]
    lines = [
        f"## mcpgw scale curves{' (smoke)' if results['smoke'] else ''}, {results['started']} "
        f"({results['revision']})",
        "",
        f"{machine['cpus']} CPUs, {machine['memory_gib']} GiB, Python {machine['python']}; loopback; every "
        "curve on a gateway of its own (`mcpgw up`: NATS, registry, connector, audit, edge). Seconds per "
        "curve (1-minute load average as it began → ended): "
        + ", ".join(
            f"{name} {seconds:.0f} ({results['load'][name][0]:.1f} → {results['load'][name][1]:.1f})"
            for name, seconds in results["seconds"].items()
        )
        + ".",
    ]
    for name, section in SECTIONS.items():
        if name in results["curves"]:
            lines += ["", *section(results["curves"][name])]
        elif name in results["failures"]:
            lines += ["", f"### {name}: not measured", "", f"`{results['failures'][name][:500]}`"]
    lines += ["", "### Targets", "", "| target | goal | measured | met |", "|---|---|---:|---|"]
    for check in results["targets"].values():
        met = {True: "yes", False: "**no**", None: "not measured"}[check["met"]]
        value = check["value"]
        shown = "-" if value is None else (f"{value:,}" if isinstance(value, int) else f"{value:.2f}")
        goal = f"≤ {check['goal']:g}" if check["goal"] else "0"
        lines.append(f"| {check['what']} | {goal} | {shown} | {met} |")
    if figure:
        lines += ["", f"![scale curves]({figure})"]
    return "\n".join(lines) + "\n"


def unit_costs(results: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """KiB per unit of what the curves hold, with the target where there is one."""
    curves = results["curves"]
    units: dict[str, tuple[float, float | None]] = {}
    if "inflight" in curves:
        per = curves["inflight"]["kib_per_call"]
        goal = GOALS["inflight_kib_per_call"][0]
        units["call in flight\n(edge + connector)"] = (curves["inflight"]["kib_per_call_total"], goal)
        units["call in flight\n(edge)"] = (per["edge"], None)
        units["call in flight\n(connector)"] = (per["connector"], None)
    if "streams" in curves:
        units["GET stream\n(edge)"] = (curves["streams"]["kib_per_stream"], GOALS["stream_kib"][0])
        units["idle connection\n(edge)"] = (curves["streams"]["kib_per_connection"], None)
    return units


def chart(results: dict[str, Any], path: Path) -> None:
    """One figure, a subplot per curve (those not measured are left empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = results["curves"]
    figure, grid = plt.subplots(2, 3, figsize=(18, 10))
    axes = list(grid.flat)
    for axis in axes:
        axis.set_visible(False)

    if "concurrency" in curves:
        axis = axes[0]
        axis.set_visible(True)
        latency = axis.twinx()
        for target, colour in (("direct", "tab:gray"), ("mcpgw", "tab:blue")):
            rows = sorted((r for r in curves["concurrency"]["rows"] if r["target"] == target),
                          key=lambda r: r["concurrency"])  # fmt: skip
            cs = [r["concurrency"] for r in rows]
            axis.plot(
                cs, [r["calls_per_second"] for r in rows], "o-", color=colour, label=f"{target} calls/s"
            )
            latency.plot(cs, [r["p99_ms"] for r in rows], "x--", color=colour, label=f"{target} p99 ms")
        axis.set_xscale("log", base=2)
        latency.set_yscale("log")
        axis.set_xlabel("concurrency")
        axis.set_ylabel("calls/s")
        latency.set_ylabel("p99 latency (ms)")
        axis.set_title("1. throughput (lines) and p99 (dashed) by concurrency")
        axis.legend(loc="upper left", fontsize=8)
        latency.legend(loc="lower right", fontsize=8)

    if "inflight" in curves:
        curve = curves["inflight"]
        axis = axes[1]
        axis.set_visible(True)
        samples = curve["memory_samples"]
        for name in curve["idle_rss"]:
            idle = curve["idle_rss"][name]
            axis.plot(
                [s["t"] for s in samples], [(s[name] - idle) / MIB for s in samples], label=f"{name} RSS"
            )
        held = axis.twinx()
        down = curve["downstream_samples"]
        held.plot([s["t"] for s in down], [s["downstream_in_flight"] for s in down], ":", color="tab:red",
                  label="in flight at the downstream")  # fmt: skip
        edge = [s for s in curve["edge_samples"] if s.get("edge_in_flight") is not None]
        held.plot([s["t"] for s in edge], [s["edge_in_flight"] for s in edge], ":", color="tab:purple",
                  label="in flight at the edge")  # fmt: skip
        axis.set_xlabel("seconds after the calls started")
        axis.set_ylabel("RSS above idle (MiB)")
        held.set_ylabel("calls in flight")
        axis.set_title(f"2. {curve['count']:,} calls in flight: memory over time")
        axis.legend(loc="upper left", fontsize=8)
        held.legend(loc="upper right", fontsize=8)

    if "catalog" in curves:
        rows = curves["catalog"]["rows"]
        axis = axes[2]
        axis.set_visible(True)
        sizes = [r["tools"] for r in rows]
        axis.plot(sizes, [r["list_p50_ms"] for r in rows], "o-", label="tools/list p50 (every page)")
        axis.plot(sizes, [r["notified_ms"] or float("nan") for r in rows], "s-", label="list_changed heard")
        axis.plot(sizes, [r["relisted_ms"] or float("nan") for r in rows], "^--", label="connector re-listed")
        memory = axis.twinx()
        memory.plot(
            sizes, [r["rss_mib_listed"]["edge"] for r in rows], "d:", color="tab:green", label="edge RSS"
        )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("tools")
        axis.set_ylabel("ms")
        memory.set_ylabel("edge RSS (MiB)")
        axis.set_title("3. catalog size")
        axis.legend(loc="upper left", fontsize=8)
        memory.legend(loc="lower right", fontsize=8)

    if "servers" in curves:
        rows = curves["servers"]["rows"]
        axis = axes[3]
        axis.set_visible(True)
        counts = [r["servers"] for r in rows]
        axis.plot(counts, [r["rss_mib"]["connector"] for r in rows], "o-", label="connector RSS (MiB)")
        times = axis.twinx()
        times.plot(counts, [r["all_connected_s"] for r in rows], "s--", color="tab:orange",
                   label="all connected (s after mcpgw up)")  # fmt: skip
        axis.set_xscale("log")
        axis.set_xlabel("downstream servers")
        axis.set_ylabel("MiB")
        times.set_ylabel("seconds")
        axis.set_title("4. downstream servers")
        axis.legend(loc="upper left", fontsize=8)
        times.legend(loc="lower right", fontsize=8)

    if "streams" in curves:
        curve = curves["streams"]
        axis = axes[4]
        axis.set_visible(True)
        warm, before = curve["warm"], curve["rss_before"]
        points = [(0, before)] + [(s["streams"] - warm, s["edge_rss"]) for s in curve["samples"]]
        points.append((curve["held_at_end"] - warm, curve["rss_after"]))
        axis.plot([n for n, _ in points], [(b - before) / MIB for _, b in points], ".-")
        axis.set_xlabel("GET streams open on the edge beyond the warm batch")
        axis.set_ylabel("edge RSS above the warm batch (MiB)")
        axis.set_title(f"5. open GET streams: {curve['kib_per_stream']:.2f} KiB each")

    units = unit_costs(results)
    if units:
        axis = axes[5]
        axis.set_visible(True)
        names = list(units)
        axis.bar(names, [units[n][0] for n in names], color="tab:blue")
        for index, name in enumerate(names):
            goal = units[name][1]
            if goal is not None:
                axis.hlines(goal, index - 0.4, index + 0.4, colors="tab:red", linestyles="--")
        axis.set_ylabel("KiB of RSS")
        axis.set_title("memory per unit (red: the target)")
        axis.tick_params(axis="x", labelsize=8)

    figure.suptitle(f"mcpgw scale curves, {results['started']} ({results['revision']})")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
