"""How `digest` says things to people: counts, times and results, the same in every front end.

The terminal, the scheduler's log and the console's pages all word a send's result, a time or a
count through these functions, so a staff member reads the same sentence wherever they look.
Times are shown in the publication's time zone, the one its schedule is written in.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any


def plural(count: int, noun: str) -> str:
    """Return `count noun`, the noun's last word in the plural unless the count is one."""
    if count == 1:
        return f"1 {noun}"
    head, _, last = noun.rpartition(" ")
    if last.endswith("y") and last[-2:-1] not in ("a", "e", "o", "u"):
        last = last[:-1] + "ies"
    elif last.endswith(("s", "x", "sh", "ch")):
        last += "es"
    else:
        last += "s"
    return f"{count} {head} {last}" if head else f"{count} {last}"


def moment(at: datetime | str, tz: tzinfo) -> str:
    """Return a time as people in `tz` read it: 2025-12-01 09:00 HKT (+08:00).

    A string is a ledger stamp (ISO 8601, UTC); one that is not is shown as it is. A zone without
    an abbreviation of its own (its name is an offset, "+04") shows the offset once.
    """
    if isinstance(at, str):
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            return at
    else:
        when = at
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    here = when.astimezone(tz)
    offset = here.isoformat(timespec="minutes")[-6:]
    name = here.tzname() or ""
    if not name or name[0] in "+-":
        return f"{here:%Y-%m-%d %H:%M} ({offset})"
    return f"{here:%Y-%m-%d %H:%M} {name} ({offset})"


def kilobytes(size: int) -> str:
    """Return a size in KB with one decimal, as the Gmail clipping warning counts it."""
    return f"{size / 1024:.1f} KB"


def lines(numbers: list[int]) -> str:
    """Return line numbers as people read them: line 7, lines 7 and 9, lines 3, 7 and 9."""
    shown = [str(number) for number in numbers]
    if len(shown) == 1:
        return f"line {shown[0]}"
    return f"lines {', '.join(shown[:-1])} and {shown[-1]}"


def result_line(month: str, summary: Any, transport: str, *, rehearsal: bool = False) -> str:
    """Return the one line that says how a send ended, for the terminal, the log and the page.

    A rehearsal (the outbox) sent nothing: it says what it wrote, never "sent".
    """
    if rehearsal:
        return (
            f"{month}: {plural(summary.sent, 'message')} written to {transport}, none emailed "
            f"(a rehearsal), failed {summary.failed}."
        )
    return (
        f"{month}: sent {summary.sent}, already sent {summary.already}, deferred "
        f"{summary.deferred}, failed {summary.failed} (via {transport})."
    )


# The rates above which mailbox providers start refusing a bulk sender (Gmail's and Yahoo's
# sender guidelines): bounces of what was sent, and complaints (spam reports).
BOUNCE_RATE_LIMIT = 0.02
COMPLAINT_RATE_LIMIT = 0.001


def rate(part: int, whole: int) -> str:
    """Return `part` of `whole` as a percentage people read: 1.25 %, 0 % when nothing was sent."""
    if not whole:
        return "0 %"
    return f"{100 * part / whole:.2f}".rstrip("0").rstrip(".") + " %"


def bounce_warnings(month: str, sent: int, bounced: int, complained: int) -> list[str]:
    """Return what to warn staff of for a month's bounces and complaints (nothing when fine)."""
    warnings = []
    if sent and bounced / sent > BOUNCE_RATE_LIMIT:
        warnings.append(
            f"{month}: bounce rate {rate(bounced, sent)} is above "
            f"{rate(int(BOUNCE_RATE_LIMIT * 10000), 10000)}: mailbox providers refuse senders "
            "whose bounces climb; check the list's old addresses (`digest subscribers list "
            "--status bounced`)"
        )
    if sent and complained / sent > COMPLAINT_RATE_LIMIT:
        warnings.append(
            f"{month}: complaint rate {rate(complained, sent)} is above "
            f"{rate(int(COMPLAINT_RATE_LIMIT * 10000), 10000)}: mailbox providers refuse senders "
            "whose readers mark them as spam; check that everyone on the list asked for the digest"
        )
    return warnings
