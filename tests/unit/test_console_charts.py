"""The overview's per-minute series over the last hour."""

from __future__ import annotations

from datetime import UTC, datetime

from services.edge.console.charts import buckets, charts, quantile

NOW = 1_800_000_000.0


def at(seconds_ago: float, **fields: object) -> dict[str, object]:
    time = datetime.fromtimestamp(NOW - seconds_ago, UTC).isoformat(timespec="milliseconds")
    return {"time": time, "outcome": "ok", "duration_ms": 10.0, "cost": 0.5, **fields}


def test_records_fall_into_their_minute() -> None:
    found = buckets([at(30), at(90), at(3599), at(3601), {"time": "not a time"}], NOW)
    assert [len(b) for b in found[-2:]] == [1, 1]
    assert len(found[0]) == 1
    assert sum(len(b) for b in found) == 3


def test_each_series_ends_with_the_last_minute() -> None:
    records = [at(10, duration_ms=ms) for ms in (1, 2, 3, 4, 100)] + [at(20, outcome="error")]
    rate, errors, p50, p95, cost = charts(records, NOW)
    assert rate.latest == "0.1/s"
    assert errors.latest == "16.7 %"
    assert p50.latest == "3 ms" and p95.latest == "100 ms"
    assert cost.latest == "3"
    assert len(rate.points.split()) == 60


def test_quantiles() -> None:
    assert quantile([], 0.5) == 0.0
    assert quantile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.95) == 4.0
