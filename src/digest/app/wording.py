"""How `digest` says things to people: counts, times and results, the same in every front end.

The terminal, the scheduler's log and the console's pages all word a send's result, a time or a
count through these functions, so a staff member reads the same sentence wherever they look.
Times are shown in the publication's time zone, the one its schedule is written in.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads it the same

if TYPE_CHECKING:  # imported by a no-change build (digest.cli.quick), which skips `typing`
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


def built(
    where: str, total: int, written: int, unchanged: int, published: int, removed: int = 0
) -> str:
    """Return what `digest build` says it did: the files written and left alone, and from what."""
    tidied = ""
    if removed:
        tidied = f"; removed {plural(removed, 'leftover temporary file')} of an interrupted build"
    return (
        f"Built {where}: {plural(total, 'file')} ({written} written, {unchanged} unchanged) "
        f"from {plural(published, 'published item')}{tidied}."
    )


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


def off_the_list(ended: dict[str, int]) -> str:
    """Return who is off the list for good, by why: "3 off the list (2 unsubscribed, 1 bounced)"."""
    total = sum(ended.values())
    parts = ", ".join(f"{count} {status}" for status, count in ended.items())
    return f"{plural(total, 'address')} off the list ({parts})"


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
    others = getattr(summary, "others", 0)  # sent meanwhile by the senders sharing the month
    sent = f"{summary.sent} ({others} more by other senders)" if others else str(summary.sent)
    return (
        f"{month}: sent {sent}, already sent {summary.already}, deferred "
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


# How `digest bounces` and the scheduler's log name what came back.
BOUNCE_KINDS = {
    "hard": ("hard bounce", "hard bounces"),
    "soft": ("soft bounce", "soft bounces"),
    "complaint": ("complaint", "complaints"),
    "autoreply": ("auto-reply", "auto-replies"),
    "unknown": ("not recognised", "not recognised"),
}


def bounce_kind(kind: str, count: int | None = None) -> str:
    """Return what a message that came back is, in words ("hard bounce"), or a count of them."""
    one, many = BOUNCE_KINDS[kind]
    return one if count is None else f"{count} {one if count == 1 else many}"


def month_label(month: str | None) -> str:
    """Return a ledger month ("2025-11") as people read it ("November 2025"), or "no month"."""
    if month is None:
        return "no month"
    from digest.months import Month

    return Month.parse(month).label


def bounce_line(one: Any, dry_run: bool) -> str:
    """Return the line `digest bounces` prints for one message (an app.bounces.Handled)."""
    what = bounce_kind(str(one.kind))
    if str(one.kind) == "autoreply":
        return f"{one.key}: {what}: ignored, {'would be ' if dry_run else ''}moved to processed"
    if one.address is None:
        code = f" ({one.status})" if one.status else ""
        names = "names nobody on the list" if str(one.kind) != "unknown" else "not a bounce"
        return f"{one.key}: {what}{code}: {names}; left where it was"
    code = f"{one.status}, " if one.status else ""
    told = f"{one.address}, {month_label(one.month)} ({code}matched by {one.matched})"
    if not one.new:
        return f"{one.key}: {what}: {told}: recorded before; nothing changes"
    if one.changes:
        status = str(one.changes[0].after.status)
        return f"{one.key}: {what}: {told}: {'would be ' if dry_run else ''}{status}"
    return f"{one.key}: {what}: {told}: {'would be ' if dry_run else ''}counted"


def bounce_summary(run: Any) -> str:
    """Return the one line that sums up a `digest bounces` run (an app.bounces.BounceRun)."""
    kinds = [
        bounce_kind(kind, count)
        for kind in BOUNCE_KINDS
        if (count := sum(1 for one in run.handled if str(one.kind) == kind))
    ]
    head = plural(len(run.handled), "message") + (f" ({', '.join(kinds)})" if kinds else "")
    verb = "would be" if run.dry_run else "was" if run.ended == 1 else "were"
    ended = f"{plural(run.ended, 'subscription')} {verb} ended"
    left = f"{plural(run.left, 'message')} left where {'it was' if run.left == 1 else 'they were'}"
    tail = "; dry run: nothing was recorded or moved" if run.dry_run else ""
    return f"{head}: {plural(run.recorded, 'new report')} recorded, {ended}, {left}{tail}."


def ledger_busy(where: str, seconds: float) -> str:
    """Return the notice that a send waits for a state database another program keeps locked.

    `where` is the file, or the PostgreSQL URL without its password: each engine has its culprit.
    """
    from digest.send.database import is_postgresql

    wait = f"waiting up to {seconds:g} second{'' if seconds == 1 else 's'} for it."
    if is_postgresql(where):
        return (
            f"The state database {where} is locked by another session (a psql session with a "
            f"transaction open, say: pg_locks shows which); {wait}"
        )
    return (
        f"The delivery ledger {where} is locked by another program (an sqlite3 shell with a "
        f"transaction open, say); {wait}"
    )
