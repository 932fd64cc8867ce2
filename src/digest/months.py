"""Calendar months in the publication's time zone: what a digest covers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """One calendar month, like 2025-11."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """Read `YYYY-MM`; raise ValueError with a message for the user otherwise."""
        match = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise ValueError(f"'{text}' is not a month (use YYYY-MM, like 2025-11)")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, moment: datetime, tz: tzinfo) -> Month:
        """Return the month `moment` falls in, in time zone `tz`."""
        local = moment.astimezone(tz)
        return cls(local.year, local.month)

    @classmethod
    def previous(cls, now: datetime, tz: tzinfo) -> Month:
        """Return the calendar month before the one `now` falls in, in time zone `tz`."""
        current = cls.of(now, tz)
        return current.shift(-1)

    def shift(self, months: int) -> Month:
        """Return the month `months` later (earlier if negative)."""
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    def start(self, tz: tzinfo) -> datetime:
        """Return the first moment of the month in `tz`."""
        return datetime.combine(self.first_day, time(), tzinfo=tz)

    @property
    def first_day(self) -> date:
        """Return the month's first day."""
        return date(self.year, self.month, 1)

    @property
    def label(self) -> str:
        """Return the month as people write it: November 2025."""
        return f"{self.first_day:%B %Y}"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
