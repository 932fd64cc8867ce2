"""The announcement form's Event section: its fields parsed into the item's `event` values, and
the inputs that show them (a date input for an all-day event, a date-and-time one for a timed
event, plain text for a time the browser's input cannot hold, such as one with an offset).

Whether the values make an event is `digest check`'s to say (through `app.editing`); the one
thing judged here is the form's own choice: "At a time" with a start that has no time."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from digest.publish.catalogue import EVENT_STATUSES
from digest.publish.editing import EVENT_KEYS, Value

TIMINGS = (("all-day", "All day"), ("timed", "At a time"))
# The form's names of the event's fields, `event_<key>`, as check problems are named too.
FIELDS = frozenset(f"event_{key}" for key in EVENT_KEYS)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# What an <input type="datetime-local"> holds: a day and a local time, nothing else.
_LOCAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?")
# A day followed by a time, in any form the catalogue reads (`T` or a space, an offset).
_TIMED = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d.*")


def event_from(form: Mapping[str, str]) -> dict[str, str]:
    """Return the event the form's fields give, as the item's `event` values.

    Empty fields are left out; all of them empty (the status left at "scheduled") is no event.
    "All day" keeps only the days of start and end, whatever the inputs held.
    """
    values = {key: form.get(f"event_{key}", "").strip() for key in EVENT_KEYS}
    if form.get("event_timing") == "all-day":
        for key in ("start", "end"):
            if _TIMED.fullmatch(values[key]):
                values[key] = values[key][:10]
    return {key: text for key, text in values.items() if text}


def problems(form: Mapping[str, str]) -> dict[str, list[str]]:
    """Return the form's own problems with the event, by field (none: an empty dict)."""
    start = form.get("event_start", "").strip()
    if form.get("event_timing") == "timed" and _DAY.fullmatch(start):
        return {
            "event_start": [
                "has no time, and the event is set to At a time: give the time it starts "
                "(like 2025-11-20T18:30), or choose All day"
            ]
        }
    return {}


@dataclass(frozen=True, slots=True)
class Shown:
    """The Event section as the form shows it."""

    values: Mapping[str, str]
    timing: str  # "all-day" or "timed"
    start_type: str  # the start input's type: date, datetime-local or text
    end_type: str
    statuses: tuple[str, ...] = EVENT_STATUSES
    timings: tuple[tuple[str, str], ...] = TIMINGS


def shown(event: Value, timing: str | None = None) -> Shown:
    """Return how to show `event` (the item's values, or what was typed), timed or all day as
    its start says unless the form chose (`timing`, on a refused save)."""
    values = dict(event) if isinstance(event, Mapping) else {}
    start = values.get("start", "")
    if timing not in ("all-day", "timed"):
        timing = "timed" if _TIMED.fullmatch(start) else "all-day"

    def kind(text: str) -> str:
        # A value the input cannot hold would be emptied by the browser: it is shown as text.
        if timing == "timed":
            return "datetime-local" if not text or _holds(_LOCAL, text) else "text"
        return "date" if not text or _holds(_DAY, text) else "text"

    return Shown(values, timing, kind(start), kind(values.get("end", "")))


def _holds(form: re.Pattern[str], text: str) -> bool:
    """Return whether `text` has the input's `form` and is a real day and time."""
    if not form.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
