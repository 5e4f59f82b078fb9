"""A drill's row: what it measured, the targets it is held to, and the Markdown table of them all."""

from __future__ import annotations

import datetime
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil

from bench.targets import revision


@dataclass(frozen=True)
class Check:
    """One target of the issue's "Done when" and whether this run met it."""

    goal: str
    met: bool
    # What was measured against it, shown when it was not met.
    measured: str = ""


@dataclass
class Row:
    drill: str
    measured: str = ""
    checks: list[Check] = field(default_factory=list)
    # Details that do not fit a table cell (failure reasons, per-code counts), listed below it.
    notes: list[str] = field(default_factory=list)
    # Set when the drill could not be measured at all; the harness broke when `broken`.
    error: str = ""
    broken: bool = False

    def check(self, goal: str, met: bool, measured: str = "") -> None:
        self.checks.append(Check(goal, met, measured))

    @property
    def unmet(self) -> list[Check]:
        return [c for c in self.checks if not c.met]

    def failed(self) -> bool:
        """Whether the full run must exit non-zero for this row."""
        return self.broken or bool(self.error) or bool(self.unmet)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 when there are no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _met(row: Row) -> str:
    if row.error:
        return "**no**: not measured"
    if not row.checks:
        return "—"
    if not row.unmet:
        return "yes"
    return "**no**: " + "; ".join(c.measured or c.goal for c in row.unmet)


def machine() -> str:
    return (
        f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )


def markdown(rows: list[Row], settings: str, *, smoke: bool, elapsed: float, extra: list[str]) -> str:
    """The run's heading, its one table, and the notes under it."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    kind = "smoke run (targets shown, not asserted)" if smoke else "full run"
    lines = [
        f"## mcpgw failure drills, {now}",
        "",
        f"mcpgw {revision()}; {machine()}; loopback. {kind}, {elapsed:.0f} s. {settings}",
        "",
        "| drill | measured | target | met |",
        "|---|---|---|---|",
    ]
    for row in rows:
        goals = "; ".join(c.goal for c in row.checks) or "—"
        measured = row.measured or row.error
        lines.append(f"| {row.drill} | {_cell(measured)} | {_cell(goals)} | {_cell(_met(row))} |")
    notes = [(row.drill, note) for row in rows for note in row.notes]
    if notes or extra:
        lines += ["", "Notes:", ""]
        lines += [f"- {drill}: {note}" for drill, note in notes]
        lines += [f"- {note}" for note in extra]
    return "\n".join(lines) + "\n"
