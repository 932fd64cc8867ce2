"""Render the catalogue's events as iCalendar: all.ics, one calendar per category, one file each.

Every VEVENT's UID is the item's feed identity (`feeds.entry_id`), so a corrected title never
shows an event twice. SEQUENCE counts the changes to an event's time, place or status; the count
is kept beside the calendars, in `events/sequence.json`, a record the build publishes with them
(all or nothing, like every other file), so that a fresh clone of the published folder, `digest
build --check` in CI included, finds the same numbers. Nothing here reads the clock.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from digest.errors import BuildError
from digest.publish import markup
from digest.publish.catalogue import Catalogue, Event, Item, Publication
from digest.publish.feeds import entry_id

# A calendar holds the newest (by start) this many events; older ones stay in their own files.
CALENDAR_LIMIT = 1000
# How often subscribed calendar apps are asked to fetch again (Outlook and Apple honour it).
REFRESH = timedelta(hours=12)
# Where each event's SEQUENCE is remembered, relative to the output folder.
RECORD = "events/sequence.json"
PRODID = "-//digest//Calendars//EN"
ICALENDAR = "text/calendar"

STATUS = {"scheduled": "CONFIRMED", "cancelled": "CANCELLED", "postponed": "TENTATIVE"}
# Shown before the title where a calendar app would not otherwise say so.
PREFIX = {"scheduled": "", "cancelled": "Cancelled: ", "postponed": "Postponed: "}

# (fingerprint of time, place and status; SEQUENCE) for each event, by item id.
Record = dict[str, tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Calendar:
    """One subscribable calendar: every event, or one category's."""

    slug: str
    title: str
    items: tuple[Item, ...]  # the events, by start

    @property
    def filename(self) -> str:
        """Return the calendar's file name, beside the feeds."""
        return f"{self.slug}.ics"


def event_path(item: Item) -> str:
    """Return where an event's own .ics file is published, relative to feeds_url."""
    return f"events/{item.id}.ics"


def events(catalogue: Catalogue, now: datetime) -> tuple[Item, ...]:
    """Return every published item that is an event, by start (then id)."""
    tz = catalogue.publication.tz
    found = [i for i in catalogue.published(now) if i.event is not None]
    found.sort(key=lambda i: (start_moment(_event(i), tz), i.id))
    return tuple(found)


def calendars(catalogue: Catalogue, now: datetime) -> list[Calendar]:
    """Return all.ics then one calendar per category that has events, newest 1,000 each."""
    publication = catalogue.publication
    found = events(catalogue, now)
    out = [Calendar("all", publication.title, found[-CALENDAR_LIMIT:])]
    for category in publication.categories:
        chosen = tuple(i for i in found if i.category == category.slug)
        if chosen:
            title = f"{publication.title}: {category.name}"
            out.append(Calendar(category.slug, title, chosen[-CALENDAR_LIMIT:]))
    return out


def start_moment(event: Event, tz: tzinfo) -> datetime:
    """Return when an event starts as an instant (an all-day one: midnight in `tz`)."""
    if isinstance(event.start, datetime):
        return event.start
    return datetime.combine(event.start, time(), tzinfo=tz)


def _event(item: Item) -> Event:
    assert item.event is not None  # noqa: S101 -- callers pass events only
    return item.event


# -- SEQUENCE ------------------------------------------------------------------------------------


def fingerprint(event: Event) -> str:
    """Return a short hash of what makes an event a different appointment: time, place, status."""
    place = (event.location.name, event.location.address) if event.location else None
    parts = [_stamp(event.start), _stamp(event.end), place, event.online, event.status]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _stamp(moment: date | datetime) -> str:
    # An instant, not its spelling: the same time written with another offset is no change.
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat()
    return moment.isoformat()


def sequences(items: Iterable[Item], previous: Mapping[str, tuple[str, int]]) -> Record:
    """Return each event's record: SEQUENCE grows by one when its fingerprint changed.

    An event the record does not know starts at 0; one whose time, place and status are as
    recorded keeps its number, so a rebuild with no change writes the same bytes.
    """
    out: Record = {}
    for item in items:
        mark = fingerprint(_event(item))
        known = previous.get(item.id)
        if known is None:
            out[item.id] = (mark, 0)
        else:
            out[item.id] = (mark, known[1] if known[0] == mark else known[1] + 1)
    return out


def read_record(data: bytes | None) -> Record:
    """Return the record a previous build published (none: every event starts at SEQUENCE 0)."""
    if data is None:
        return {}
    try:
        loaded = json.loads(data)
        return {
            str(key): (str(mark), int(number))
            for key, (mark, number) in loaded["events"].items()
            if isinstance(mark, str) and isinstance(number, int) and number >= 0
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BuildError(
            f"{RECORD} in the output folder is not a record digest wrote ({exc}); restore it "
            "from your copy of the published folder (git checkout, a backup), or delete it to "
            "start every event's SEQUENCE again at 0 (calendar apps may then miss an update)"
        ) from exc


def render_record(record: Record) -> bytes:
    """Return the record's file: sorted, one event a line, so that its changes diff cleanly."""
    lines = [
        f"  {json.dumps(key)}: {json.dumps([mark, number])}"
        for key, (mark, number) in sorted(record.items())
    ]
    body = ",\n".join(lines)
    return (
        '{\n "format": 1,\n "events": {\n' + body + ("\n" if lines else "") + " }\n}\n"
    ).encode()


# -- iCalendar -----------------------------------------------------------------------------------


class Writer:
    """Renders a build's calendar files; each VEVENT is made once and shared by every file.

    `record` is `sequences(...)` for the published events; `page` gives an item's web page,
    the VEVENT's URL when the item has no link of its own.
    """

    def __init__(self, catalogue: Catalogue, record: Record, page: Callable[[Item], str]) -> None:
        self.publication = catalogue.publication
        self.record = record
        self.page = page
        # icalendar takes milliseconds to write one VEVENT, and each event is in three files.
        self._events: dict[str, bytes] = {}

    def calendar(self, calendar: Calendar) -> bytes:
        """Return one subscribable calendar."""
        cal = _calendar(self.publication, calendar.title, calendar.filename, calendar.items)
        return _with_events(cal.to_ical(), [self._vevent(i) for i in calendar.items])

    def event(self, item: Item) -> bytes:
        """Return an event's own .ics file: what "Add to calendar" opens."""
        cal = _calendar(self.publication, item.title, event_path(item), (item,), subscribed=False)
        return _with_events(cal.to_ical(), [self._vevent(item)])

    def _vevent(self, item: Item) -> bytes:
        found = self._events.get(item.id)
        if found is None:
            component = _vevent(self.publication, item, self.record[item.id][1], self.page)
            found = self._events[item.id] = bytes(component.to_ical())
        return found


_END = b"END:VCALENDAR\r\n"


def _with_events(envelope: bytes, vevents: Sequence[bytes]) -> bytes:
    """Return the VCALENDAR `envelope` (as icalendar wrote it) with `vevents` as its last parts."""
    assert envelope.endswith(_END)  # noqa: S101 -- icalendar always ends a calendar so
    return envelope[: -len(_END)] + b"".join(vevents) + _END


def _calendar(
    publication: Publication,
    title: str,
    path: str,
    items: Sequence[Item],
    *,
    subscribed: bool = True,
) -> Any:
    import icalendar  # here: a build with no events, or nothing to do, never pays for it

    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    if subscribed:
        cal.add("name", title)
        cal.add("x-wr-calname", title)
        cal.add("x-wr-caldesc", publication.subtitle or publication.title)
        cal.add("x-wr-timezone", publication.timezone)
        cal.add("source", publication.feeds_url + path, parameters={"VALUE": "URI"})
        cal.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
        cal.add("x-published-ttl", icalendar.vDuration(REFRESH))
    cal.add_component(_timezone(publication, items))
    return cal


def _timezone(publication: Publication, items: Sequence[Item]) -> Any:
    """Return the publication zone's VTIMEZONE, with the rules of the years the events span."""
    years = [moment.year for item in items for moment in (_event(item).start, _event(item).end)]
    return _zone(publication.timezone, min(years, default=2000), max(years, default=2000))


@functools.lru_cache(maxsize=64)
def _zone(tzid: str, first: int, last: int) -> Any:
    """Return the VTIMEZONE of `tzid` for the years `first` to `last`.

    icalendar finds the transitions by stepping through every hour of the range, a tenth of a
    second a year: the component is made once per range and shared by every file that needs it
    (nothing changes a component once it is made).
    """
    from icalendar import Timezone

    try:
        return Timezone.from_tzid(
            tzid, first_date=date(first, 1, 1), last_date=date(last + 1, 1, 1)
        )
    except ValueError as exc:  # a zone icalendar cannot describe
        raise BuildError(
            f"publication.timezone: cannot describe {tzid} in iCalendar ({exc}); choose another "
            "IANA name for the same zone"
        ) from exc


def _vevent(
    publication: Publication, item: Item, sequence: int, page: Callable[[Item], str]
) -> Any:
    import icalendar

    event = _event(item)
    tz = publication.tz
    vevent = icalendar.Event()
    vevent.add("uid", entry_id(publication, item.id))
    vevent.add("dtstamp", item.modified.astimezone(UTC))
    vevent.add("created", item.date.astimezone(UTC))
    vevent.add("last-modified", item.modified.astimezone(UTC))
    vevent.add("sequence", sequence)
    vevent.add("summary", PREFIX[event.status] + item.title)
    if isinstance(event.start, datetime) and isinstance(event.end, datetime):
        vevent.add("dtstart", event.start.astimezone(tz))
        vevent.add("dtend", event.end.astimezone(tz))
    else:
        vevent.add("dtstart", event.start)
        vevent.add("dtend", event.end)
        vevent.add("transp", "TRANSPARENT")  # a day-long listing should not block the day
    vevent.add("status", STATUS[event.status])
    where = place_text(event)
    if where:
        vevent.add("location", where)
    vevent.add("description", description(publication, item))
    vevent.add("url", item.link or page(item), parameters={"VALUE": "URI"})
    names = {c.slug: c.name for c in publication.categories}
    vevent.add("categories", [names[item.category]])
    return vevent


def place_text(event: Event) -> str:
    """Return where an event happens as one line: the place and its address, else the link."""
    if event.location is not None:
        parts = [event.location.name, event.location.address]
        return ", ".join(p for p in parts if p)
    return event.online or ""


def description(publication: Publication, item: Item) -> str:
    """Return the event's description as plain text: the summary, then the meeting link."""
    text = markup.to_text(markup.to_html(item.summary, publication.site_url)).strip()
    event = _event(item)
    if event.online:
        text += f"\n\nOnline: {event.online}"
    return text
