"""How the console words what staff read."""

from __future__ import annotations

from datetime import datetime, timedelta


def local_time(moment: datetime | str) -> str:
    """Return a time as people read it: 2025-12-01 09:00 UTC (ledger stamps are UTC)."""
    if isinstance(moment, str):
        return moment.replace("T", " ")[:16] + " UTC"
    if moment.utcoffset() == timedelta(0):
        return f"{moment:%Y-%m-%d %H:%M} UTC"
    offset = moment.isoformat(timespec="minutes")[-6:]
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()} ({offset})"
