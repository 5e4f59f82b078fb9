"""Reset windows, computed directly: fixed windows from the epoch, and calendar ones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.windows import Window


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def test_fixed_windows_count_from_the_epoch() -> None:
    window = Window.parse("3s")
    assert window.bounds(9.0) == (3, 12.0)
    assert window.bounds(11.999) == (3, 12.0)
    assert window.bounds(12.0) == (4, 15.0)
    assert Window.parse("1m").bounds(at(2026, 12, 6, 13, 4, 30)) == (
        int(at(2026, 12, 6, 13, 4) // 60),
        at(2026, 12, 6, 13, 5),
    )
    # A month that is not calendar-aligned is 30 days.
    assert Window.parse("1M").seconds == 30 * 86400


@pytest.mark.parametrize(
    ("duration", "now", "ends"),
    [
        ("1d", at(2026, 12, 6, 13, 4), at(2026, 12, 7)),
        ("1w", at(2026, 12, 6, 13, 4), at(2026, 12, 7)),  # a Sunday: the week ends at Monday 00:00
        ("1w", at(2026, 12, 7, 0, 0), at(2026, 12, 14)),
        ("1M", at(2026, 12, 6), at(2027, 1, 1)),
        ("1M", at(2027, 2, 28, 23, 59), at(2027, 3, 1)),
        ("3M", at(2026, 2, 1), at(2026, 4, 1)),
        ("1Y", at(2026, 12, 31, 23, 59, 59), at(2027, 1, 1)),
        ("1h", at(2026, 12, 6, 13, 4), at(2026, 12, 6, 14)),
    ],
)
def test_calendar_windows_end_on_calendar_boundaries(duration: str, now: float, ends: float) -> None:
    index, end = Window.parse(duration, calendar_aligned=True).bounds(now)
    assert end == ends
    # The next instant after the end is the next window.
    assert Window.parse(duration, calendar_aligned=True).bounds(end)[0] == index + 1


@pytest.mark.parametrize("text", ["", "1", "0m", "1 fortnight", "-1m", "1.5h", "1ms", "m"])
def test_what_is_not_a_reset_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a reset duration"):
        Window.parse(text)
