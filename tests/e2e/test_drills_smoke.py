"""`make drills` in miniature: every drill runs for a few seconds, so the suite cannot rot.

No target is asserted (the smoke run's counts are too small to mean anything, and several
targets are not met yet); what is asserted is that the harness ran every drill and wrote
its table, one row each.
"""

from __future__ import annotations

from pathlib import Path

from tests.processes import run_module

ROWS = [
    "downstream on a closed port",
    "slow clients",
    "sessions and GET streams",
    "kill -9 edge",
    "kill -9 connector",
    "kill -9 registry",
    "kill -9 audit",
    "kill -9 downstream (HTTP echo)",
    "kill -9 nats-server",
    "hostile input",
]


def test_the_drills_smoke_run_writes_a_table_with_every_drill(tmp_path: Path) -> None:
    done = run_module("bench.drills", "--smoke", "--out", str(tmp_path), timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    [report] = tmp_path.glob("smoke-drills-*.md")
    table = [line for line in report.read_text().splitlines() if line.startswith("| ")]
    assert table[0] == "| drill | measured | target | met |"
    assert [line.split(" | ")[0].removeprefix("| ") for line in table[1:]] == ROWS
    # Each kill drill made and counted calls, and matched them against the audit file.
    kills = [line for line in table if line.startswith("| kill -9")]
    assert all(" calls: " in line and "audited " in line for line in kills), kills
    assert done.stdout.count("| kill -9") == len(kills)
