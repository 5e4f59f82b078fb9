"""The overview's numbers over the last hour: tool calls bucketed per minute, and each series
drawn as an inline SVG polyline (no chart library, no script)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

WIDTH, HEIGHT = 300, 80


@dataclass(frozen=True, slots=True)
class Chart:
    """One series, ready to draw: its title, the latest value shown, and the SVG points."""

    title: str
    latest: str
    points: str
    peak: str


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank; 0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def buckets(records: list[dict[str, Any]], now: float, minutes: int = 60) -> list[list[dict[str, Any]]]:
    """The records of each of the last `minutes` minutes, oldest minute first."""
    start = now - minutes * 60
    found: list[list[dict[str, Any]]] = [[] for _ in range(minutes)]
    for record in records:
        try:
            at = datetime.fromisoformat(str(record["time"])).timestamp()
        except (KeyError, ValueError):
            continue
        index = int((at - start) // 60)
        if 0 <= index < minutes:
            found[index].append(record)
    return found


def _points(values: list[float]) -> tuple[str, float]:
    peak = max(values, default=0.0) or 1.0
    step = WIDTH / max(1, len(values) - 1)
    drawn = " ".join(
        f"{i * step:.1f},{HEIGHT - 4 - (v / peak) * (HEIGHT - 8):.1f}" for i, v in enumerate(values)
    )
    return drawn, max(values, default=0.0)


def charts(records: list[dict[str, Any]], now: float) -> list[Chart]:
    """Calls/s, error rate, p50 and p95 latency and cost, per minute over the last hour."""
    per_minute = buckets(records, now)
    rate = [len(b) / 60 for b in per_minute]
    errors = [
        (sum(1 for r in b if r.get("outcome") != "ok") / len(b)) * 100 if b else 0.0 for b in per_minute
    ]
    p50 = [quantile([float(r.get("duration_ms") or 0) for r in b], 0.5) for b in per_minute]
    p95 = [quantile([float(r.get("duration_ms") or 0) for r in b], 0.95) for b in per_minute]
    cost = [sum(float(r.get("cost") or 0) for r in b) for b in per_minute]
    shown = []
    for title, values, unit in (
        ("Calls per second", rate, "/s"),
        ("Error rate", errors, " %"),
        ("p50 latency", p50, " ms"),
        ("p95 latency", p95, " ms"),
        ("Cost per minute", cost, ""),
    ):
        points, peak = _points(values)
        shown.append(Chart(title, f"{values[-1]:.3g}{unit}", points, f"{peak:.3g}{unit}"))
    return shown
