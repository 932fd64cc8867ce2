"""Months in the publication's time zone: which digest "last month" means."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from digest.months import Month

HONG_KONG = ZoneInfo("Asia/Hong_Kong")


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        (datetime(2025, 12, 1, 1, 0, tzinfo=HONG_KONG), HONG_KONG, Month(2025, 11)),
        # 17:00 UTC on 30 November is already 1 December in Hong Kong.
        (datetime(2025, 11, 30, 17, 0, tzinfo=UTC), HONG_KONG, Month(2025, 11)),
        (datetime(2025, 11, 30, 15, 59, tzinfo=UTC), HONG_KONG, Month(2025, 10)),
        (datetime(2026, 1, 15, tzinfo=UTC), UTC, Month(2025, 12)),
        (datetime(2026, 3, 1, 0, 30, tzinfo=UTC), ZoneInfo("America/New_York"), Month(2026, 1)),
    ],
)
def test_previous_month_in_the_publication_time_zone(
    now: datetime, zone: ZoneInfo, expected: Month
) -> None:
    """`--month` left out means the calendar month before today, where the office is."""
    assert Month.previous(now, zone) == expected


@pytest.mark.parametrize("text", ["2025-13", "2025-00", "25-11", "2025/11", "November", "2025-1"])
def test_bad_month_is_refused_with_the_format(text: str) -> None:
    """A mistyped month says how to write one."""
    with pytest.raises(ValueError, match=r"is not a month \(use YYYY-MM, like 2025-11\)"):
        Month.parse(text)


def test_month_reads_and_writes_yyyy_mm() -> None:
    """Months print as their file names do, and read back."""
    assert str(Month.parse("2025-11")) == "2025-11"
    assert Month(2025, 11).label == "November 2025"
    assert Month(2025, 12).shift(1) == Month(2026, 1)
    assert Month(2026, 1).shift(-1) == Month(2025, 12)
