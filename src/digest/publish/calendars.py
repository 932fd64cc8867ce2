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
    """Return all.ics then one calendar per category that has events, newest 1,000 each.

    A publication with no events has no calendars at all.
    """
    publication = catalogue.publication
    found = events(catalogue, now)
    if not found:
        return []
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


# -- where people meet the events: pages and the digest ------------------------------------------

GOOGLE = "https://calendar.google.com/calendar/render"
# Outlook on the web for work and school accounts (Microsoft 365), what a university runs.
OUTLOOK = "https://outlook.office.com/calendar/0"
# What Google and Outlook are given of the summary: their links carry it whole, and browsers and
# servers refuse addresses much over 8 KB.
MAX_DETAILS = 600


@dataclass(frozen=True, slots=True)
class Shown:
    """An event as the feed page and the digest show it: when, where, and "Add to calendar"."""

    when: str  # 1 October 2025, 18:30–20:30 HKT
    iso: str  # the start, for <time datetime>
    place: str | None
    online: str | None
    status: str  # scheduled, cancelled, postponed
    ics: str  # the event's own .ics, absolute
    google: str
    outlook: str


@dataclass(frozen=True, slots=True)
class Subscription:
    """How to subscribe to one calendar: its address, and the links that add it to an app."""

    label: str
    url: str
    webcal: str
    google: str
    outlook: str


def shown(publication: Publication, item: Item) -> Shown:
    """Return how the pages and the digest present `item`'s event."""
    event = _event(item)
    tz = publication.tz
    start = start_moment(event, tz).astimezone(tz)
    return Shown(
        when=when_text(event, tz),
        iso=start.date().isoformat() if event.all_day else start.isoformat(),
        place=place_text(event) if event.location else None,
        online=event.online,
        status=event.status,
        ics=publication.feeds_url + event_path(item),
        google=google_link(publication, item),
        outlook=outlook_link(publication, item),
    )


def when_text(event: Event, tz: tzinfo) -> str:
    """Return an event's date and time in the publication's zone, as people write them."""
    if not isinstance(event.start, datetime) or not isinstance(event.end, datetime):
        first, last = event.start, event.last_day
        if first == last:
            return f"{_day(first)} (all day)"
        if (first.year, first.month) == (last.year, last.month):
            return f"{first.day}–{_day(last)}"
        if first.year == last.year:
            return f"{first.day} {first:%B} – {_day(last)}"
        return f"{_day(first)} – {_day(last)}"
    start, end = event.start.astimezone(tz), event.end.astimezone(tz)
    zone = end.tzname() or ""
    if start.date() == end.date():
        return f"{_day(start)}, {start:%H:%M}–{end:%H:%M} {zone}".rstrip()
    return f"{_day(start)} {start:%H:%M} – {_day(end)} {end:%H:%M} {zone}".rstrip()


def _day(moment: date) -> str:
    return f"{moment.day} {moment:%B %Y}"


def _details(publication: Publication, item: Item) -> str:
    text = description(publication, item)
    return text if len(text) <= MAX_DETAILS else text[: MAX_DETAILS - 1].rstrip() + "…"


def google_link(publication: Publication, item: Item) -> str:
    """Return the Google Calendar link that opens the event, filled in, to be saved."""
    from urllib.parse import urlencode

    event = _event(item)
    if isinstance(event.start, datetime) and isinstance(event.end, datetime):
        dates = "/".join(f"{m.astimezone(UTC):%Y%m%dT%H%M%SZ}" for m in (event.start, event.end))
    else:
        dates = f"{event.start:%Y%m%d}/{event.end:%Y%m%d}"  # the end is exclusive here too
    query = {
        "action": "TEMPLATE",
        "text": PREFIX[event.status] + item.title,
        "dates": dates,
        "details": _details(publication, item),
        "location": place_text(event),
        "ctz": publication.timezone,
    }
    return f"{GOOGLE}?{urlencode(query)}"


def outlook_link(publication: Publication, item: Item) -> str:
    """Return the Outlook on the web link that opens the event, filled in, to be saved."""
    from urllib.parse import urlencode

    event = _event(item)
    tz = publication.tz
    if isinstance(event.start, datetime) and isinstance(event.end, datetime):
        start, end = (m.astimezone(tz).isoformat() for m in (event.start, event.end))
        all_day = "false"
    else:
        start, end, all_day = event.start.isoformat(), event.end.isoformat(), "true"
    query = {
        "path": "/calendar/action/compose",
        "rru": "addevent",
        "subject": PREFIX[event.status] + item.title,
        "startdt": start,
        "enddt": end,
        "allday": all_day,
        "body": _details(publication, item),
        "location": place_text(event),
    }
    return f"{OUTLOOK}/deeplink/compose?{urlencode(query)}"


def subscriptions(catalogue: Catalogue, now: datetime) -> list[Subscription]:
    """Return each calendar's subscribe links, as the feed page lists them."""
    from urllib.parse import quote, urlencode

    publication = catalogue.publication
    names = {c.slug: c.name for c in publication.categories}
    out = []
    for calendar in calendars(catalogue, now):
        url = publication.feeds_url + calendar.filename
        webcal = "webcal://" + url.split("://", 1)[1]
        out.append(
            Subscription(
                label="Every event" if calendar.slug == "all" else names[calendar.slug],
                url=url,
                webcal=webcal,
                google=f"{GOOGLE}?cid={quote(webcal, safe='')}",
                outlook=f"{OUTLOOK}/addfromweb?{urlencode({'url': url, 'name': calendar.title})}",
            )
        )
    return out


_EVENT_STATUS = {
    "scheduled": "https://schema.org/EventScheduled",
    "cancelled": "https://schema.org/EventCancelled",
    "postponed": "https://schema.org/EventPostponed",
}


def structured(publication: Publication, item: Item, page: str) -> dict[str, Any]:
    """Return `item`'s event as a schema.org Event, for search engines."""
    event = _event(item)
    tz = publication.tz
    if isinstance(event.start, datetime) and isinstance(event.end, datetime):
        start, end = event.start.astimezone(tz).isoformat(), event.end.astimezone(tz).isoformat()
    else:
        start, end = event.start.isoformat(), event.last_day.isoformat()
    places: list[dict[str, Any]] = []
    if event.location is not None:
        place: dict[str, Any] = {"@type": "Place", "name": event.location.name}
        if event.location.address:
            place["address"] = event.location.address
        places.append(place)
    if event.online:
        places.append({"@type": "VirtualLocation", "url": event.online})
    mode = "Mixed" if len(places) == 2 else "Online" if event.online else "Offline"
    return {
        "@type": "Event",
        "name": item.title,
        "startDate": start,
        "endDate": end,
        "eventStatus": _EVENT_STATUS[event.status],
        "eventAttendanceMode": f"https://schema.org/{mode}EventAttendanceMode",
        "location": places[0] if len(places) == 1 else places,
        "description": _details(publication, item),
        "url": item.link or page,
        "organizer": {
            "@type": "Organization",
            "name": publication.author.name,
            "url": publication.site_url,
        },
    }


def json_ld(publication: Publication, shown_on: Sequence[tuple[Item, str]]) -> str | None:
    """Return the JSON-LD of the events among `shown_on` (item, its address), safe in <script>.

    `<`, `>` and `&` are written as \\u escapes, which JSON reads as the same characters: no
    title can close the script element or open a comment.
    """
    found = [structured(publication, item, page) for item, page in shown_on if item.event]
    if not found:
        return None
    document = {"@context": "https://schema.org", "@graph": found}
    text = json.dumps(document, ensure_ascii=False, indent=1, sort_keys=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
