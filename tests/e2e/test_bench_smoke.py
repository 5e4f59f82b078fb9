"""`make bench` in miniature: every measurement runs for a moment, so the harness cannot rot.

No performance target is asserted here (timed tests lie on shared machines); what is
asserted is that the harness measures what it claims: every call checked and answered,
every gateway call audited, and the report, table and chart written.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import run_module


def test_the_bench_smoke_run_measures_every_point_and_writes_its_report(tmp_path: Path) -> None:
    done = run_module("bench.run", "--smoke", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    [report] = tmp_path.glob("smoke-*.json")
    results = json.loads(report.read_text())
    points = results["points"]
    assert {p["target"] for p in points} == {
        "direct",
        "mcpgw",
        "floor-audited",
        "direct-stdio",
        "mcpgw-stdio",
    }
    assert all(p["calls"] > 0 and p["errors"] == 0 for p in points)
    # Only the gateway's own processes are charged, and each of them was found.
    gateway = next(p for p in points if p["target"] == "mcpgw")
    assert set(gateway["cpu_seconds"]) == {"up", "nats", "registry", "connector", "audit", "edge"}
    floor = next(p for p in points if p["target"] == "floor-audited")
    assert set(floor["cpu_seconds"]) == {"nats", "connector", "audit", "edge"}
    assert results["audit"]["lost"] == 0 and results["audit"]["recorded"] > 0
    assert results["tools_list"]["errors"] == 0 and results["tools_list"]["calls"] > 0
    assert "| mcpgw | 1 |" in report.with_suffix(".md").read_text()
    assert report.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_the_catalog_measurement_reaches_one_answer_in_every_mode(tmp_path: Path) -> None:
    done = run_module("bench.catalog", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    [report] = tmp_path.glob("catalog-*.json")
    measured = {m["mode"]: m for m in json.loads(report.read_text())}
    assert set(measured) == {"classic", "code", "search"}
    # Every catalog tool is listed classic; code and search list their meta-tools only.
    assert measured["classic"]["tools"] >= 300
    assert (measured["code"]["tools"], measured["search"]["tools"]) == (4, 2)
    assert measured["code"]["definition_tokens"] < measured["classic"]["definition_tokens"] / 20
    # One script runs the four dependent steps that take classic four turns of calls.
    assert measured["code"]["round_trips"] < measured["classic"]["round_trips"]
    assert len({json.dumps(m["answer"], sort_keys=True) for m in measured.values()}) == 1


def test_the_scale_curves_smoke_run_measures_every_curve(tmp_path: Path) -> None:
    done = run_module("bench.curves", "--smoke", "--out", str(tmp_path), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    [report] = tmp_path.glob("curves-smoke-*.json")
    results = json.loads(report.read_text())
    assert not results["failures"]
    curves = results["curves"]
    assert set(curves) == {"concurrency", "inflight", "catalog", "servers", "streams"}
    inflight = curves["inflight"]
    assert inflight["completed"] == inflight["count"] > 0 and inflight["errors"] == 0
    assert inflight["kib_per_call"]["edge"] > 0 and inflight["kib_per_call"]["connector"] > 0
    assert len(curves["catalog"]["rows"]) == len(results["settings"]["catalog"])
    assert len(curves["servers"]["rows"]) == len(results["settings"]["servers"])
    assert curves["streams"]["held_at_end"] >= curves["streams"]["streams"]
    assert results["targets"]["errors"]["value"] == 0
    assert report.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
