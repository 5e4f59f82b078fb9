"""The windows limits and budgets reset on: Bifrost's reset durations ("1m", "1h", "1d",
"1w", "1M", "1Y", and mcpgw's seconds, "30s"), as fixed windows every edge computes alike.

A window is numbered from the Unix epoch, every edge naming the same one from its own
clock: every `duration` seconds (a month is 30 days, a year 365), or, calendar-aligned, at
UTC calendar boundaries (midnight, Monday, the 1st of the month, 1 January).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_RESET = re.compile(r"^\s*([1-9][0-9]{0,5})\s*(s|m|h|d|w|M|Y)\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}
# Thursday 1 January 1970 + 4 days: weeks start on Monday.
_MONDAY = 4 * 86400


@dataclass(frozen=True, slots=True)
class Window:
    """A reset duration: `amount` of `unit`."""

    amount: int
    unit: str
    calendar_aligned: bool = False

    @classmethod
    def parse(cls, text: str, calendar_aligned: bool = False) -> Window:
        """ValueError for text that is not a reset duration."""
        match = _RESET.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a reset duration such as '30s', '1m', '1h', '1d', '1w', '1M' or '1Y'"
            )
        return cls(int(match.group(1)), match.group(2), calendar_aligned)

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    @property
    def seconds(self) -> int:
        return self.amount * UNIT_SECONDS[self.unit]

    def bounds(self, now: float) -> tuple[int, float]:
        """The number of the window `now` falls in, and when it ends (Unix seconds)."""
        if not self.calendar_aligned or self.unit in ("s", "m", "h"):
            # Hours and shorter divide the day, so epoch windows are calendar windows too.
            index = int(now // self.seconds)
            return index, float((index + 1) * self.seconds)
        if self.unit in ("d", "w"):
            offset = _MONDAY if self.unit == "w" else 0
            index = int((now - offset) // self.seconds)
            return index, float((index + 1) * self.seconds + offset)
        moment = datetime.fromtimestamp(now, UTC)
        if self.unit == "M":
            months = (moment.year - 1970) * 12 + moment.month - 1
            index = months // self.amount
            first = (index + 1) * self.amount
            end = datetime(1970 + first // 12, first % 12 + 1, 1, tzinfo=UTC)
        else:
            index = (moment.year - 1970) // self.amount
            end = datetime(1970 + (index + 1) * self.amount, 1, 1, tzinfo=UTC)
        return index, end.timestamp()
