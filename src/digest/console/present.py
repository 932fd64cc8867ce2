"""How the console words what staff read: times in the publication's own zone, with its
abbreviation and offset."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def local_time(moment: datetime | str, tz: tzinfo) -> str:
    """Return a time as people in `tz` read it: 2025-12-01 09:00 HKT (+08:00).

    A string is a ledger stamp (ISO 8601, UTC); one that is not is shown as it is. A zone without
    an abbreviation of its own (its name is an offset, "+04") shows the offset once.
    """
    if isinstance(moment, str):
        try:
            when = datetime.fromisoformat(moment)
        except ValueError:
            return moment
    else:
        when = moment
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    here = when.astimezone(tz)
    offset = here.isoformat(timespec="minutes")[-6:]
    name = here.tzname() or ""
    if not name or name[0] in "+-":
        return f"{here:%Y-%m-%d %H:%M} ({offset})"
    return f"{here:%Y-%m-%d %H:%M} {name} ({offset})"
