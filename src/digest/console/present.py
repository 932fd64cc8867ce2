"""How the console words what staff read: times and error pages' titles.

A time reads in the publication's own zone with its abbreviation and offset; an error page is
titled with what happened rather than with an HTTP status.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from werkzeug.exceptions import HTTPException


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


class Refusal(HTTPException):
    """An error page whose title says what happened ("The catalogue has errors")."""

    def __init__(self, code: int, title: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.title = title


# What an error page is titled when the code that refused gave no title of its own.
TITLES = {
    400: "The request was not understood",
    403: "Not allowed",
    404: "Page not found",
    405: "That page cannot be opened this way",
    409: "Not possible right now",
    413: "The form is too large",
    500: "Something went wrong",
}


def title_of(error: HTTPException) -> str:
    """Return an error page's title, for staff: what happened, never "409 Conflict"."""
    if isinstance(error, Refusal):
        return error.title
    code = error.code or 500
    return TITLES.get(code, TITLES[500] if code >= 500 else TITLES[400])
