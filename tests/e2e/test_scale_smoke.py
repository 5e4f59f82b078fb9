"""`make scale-test` in a short form: deploy/docker-compose.yml as separate hosts (network
namespaces), each piece broken in turn under load, with nothing lost. Needs root, `ip netns`
and Debian's haproxy (`make install` adds it); skipped without them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.processes import run_module

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("haproxy") is None,
    reason="the scale test needs root, iproute2 and haproxy",
)


def test_every_piece_is_broken_in_turn_and_nothing_is_lost(tmp_path: Path) -> None:
    done = run_module(
        "bench.scale", "--step-seconds", "3", "--sessions", "4", "--out", str(tmp_path), timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [report] = tmp_path.glob("scale-*.json")
    rows = {row["step"]: row for row in json.loads(report.read_text())}
    kills = {"kill the audit's NATS leader", "kill edge-1", "kill connector-1", "kill registry-1"}
    assert set(rows) == {"steady", *kills, "cut edge-2's link 10 s"}
    for step, row in rows.items():
        assert row["ok"] > 0 and row["wrong"] == 0 and row["audit_lost"] == 0, step
        assert row["sessions_lost"] == 0, step
        if step.startswith("kill"):
            assert row["recovery_s"] <= 5.0, step
