"""Assemble everything `digest build` publishes: feeds and pages, by relative file name."""

from __future__ import annotations

import marshal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from digest.mail import newsletter
from digest.months import Month
from digest.publish import calendars, feeds, pages
from digest.publish.buildcache import key
from digest.publish.catalogue import Catalogue, Event, Item


@dataclass(frozen=True, slots=True)
class Build:
    """What a build publishes: every file's content key, and the files rendered this time."""

    keys: dict[str, str]  # every file of the build -> hash of what its content is made from
    files: dict[str, bytes]  # the files rendered; the others are on disk already, as keyed
    reused: tuple[str, ...]


def render(
    catalogue: Catalogue,
    now: datetime,
    previous: calendars.Record | None = None,
    signup: str | None = None,
) -> dict[str, bytes]:
    """Return every published file of the catalogue at `now`, by path relative to the output.

    `previous` is the events' record the output folder holds (`calendars.read_record`); `signup`
    the public pages' address (DIGEST_PUBLIC_URL), for the feed page's sign-up form.
    """
    return build(catalogue, now, "", {}, previous, signup=signup).files


def build(
    catalogue: Catalogue,
    now: datetime,
    environment: str,
    reusable: Mapping[str, str],
    previous: calendars.Record | None = None,
    *,
    signup: str | None = None,
) -> Build:
    """Render the files of the catalogue at `now`, except those `reusable` already holds.

    `reusable` maps a file name to the key of the content it is known to hold on disk; a file
    whose key is unchanged is not rendered again. `environment` is the hash of everything else
    output depends on (code, templates, libraries), part of every key. `previous` is the record
    of the events' SEQUENCE numbers the output folder holds (none: each starts at 0). `signup`,
    the public pages' address (DIGEST_PUBLIC_URL), puts a sign-up form on the feed page.
    """
    publication = catalogue.publication
    common = key(environment, repr(publication), repr(catalogue.newsletter))
    keys: dict[str, str] = {}
    files: dict[str, bytes] = {}
    reused: list[str] = []
    stamps: dict[int, str] = {}  # shared by every fingerprint of this build

    def wanted(names: Sequence[str], content: str) -> bool:
        for name in names:
            keys[name] = content
        if all(reusable.get(name) == content for name in names):
            reused.extend(names)
            return False
        return True

    made: dict[int, feeds.Entry] = {}  # each item's feed entry, for every channel it is in
    for feed in feeds.channels(catalogue, now):
        names = [feed.filename(form) for form in feeds.FORMATS]
        content = key(common, "feed", feed.slug, feed.title, _items_key(feed.items, stamps))
        if wanted(names, content):
            files.update(feeds.render_feed(catalogue, feed, made))
    _calendars(catalogue, now, common, previous or {}, wanted, files, stamps)
    archive = []
    renderer = newsletter.Renderer(catalogue)
    for issue in newsletter.issues(catalogue, now):
        month = issue.month
        path = newsletter.archive_path(month)
        shown = _items_key(issue.items + issue.coming, stamps)
        if wanted([path], key(common, "month", str(month), shown)):
            files[path] = renderer.render(issue, web=True).html.encode("utf-8")
        archive.append(pages.ArchiveLink(month.label, path, len(issue.items)))
    latest = catalogue.published(now)[: publication.feed_limit]
    subscribe = repr([c.slug for c in calendars.calendars(catalogue, now)])
    index: list[str | bytes] = [
        common, "index", _items_key(latest, stamps), repr(archive), subscribe
    ]  # fmt: skip
    if signup:  # unset, the key every earlier build gave the page
        index.append(f"signup {signup}")
    if wanted(["index.html"], key(*index)):
        files["index.html"] = pages.render_index(catalogue, now, archive, signup)
    return Build(keys, files, tuple(reused))


def _calendars(
    catalogue: Catalogue,
    now: datetime,
    common: str,
    previous: calendars.Record,
    wanted: Callable[[Sequence[str], str], bool],
    files: dict[str, bytes],
    stamps: dict[int, str],
) -> None:
    """Add the calendars, each event's .ics and the SEQUENCE record to the build's files."""
    events = calendars.events(catalogue, now)
    if not events:
        return
    record = calendars.sequences(events, previous)

    def page(item: Item) -> str:
        month = Month.of(item.date, catalogue.publication.tz)
        return f"{catalogue.publication.feeds_url}{newsletter.archive_path(month)}#{item.id}"

    writer = calendars.Writer(catalogue, record, page)
    for calendar in calendars.calendars(catalogue, now):
        numbers = repr([record[i.id][1] for i in calendar.items])
        content = key(
            common, "calendar", calendar.slug, _items_key(calendar.items, stamps), numbers
        )
        if wanted([calendar.filename], content):
            files[calendar.filename] = writer.calendar(calendar)
    for item in events:
        path = calendars.event_path(item)
        content = key(common, "event", _items_key((item,), stamps), str(record[item.id][1]))
        if wanted([path], content):
            files[path] = writer.event(item)
    text = calendars.render_record(record)
    if wanted([calendars.RECORD], key(common, "record", text)):
        files[calendars.RECORD] = text


def _event_key(event: Event | None) -> tuple[object, ...] | None:
    """Return an event's fields as plain values, for a fingerprint."""
    if event is None:
        return None
    place = (event.location.name, event.location.address) if event.location else None
    moments = [f"{m.isoformat()} {getattr(m, 'tzinfo', None)}" for m in (event.start, event.end)]
    return (*moments, place, event.online, event.status)


def _items_key(items: Sequence[Item], stamps: dict[int, str]) -> bytes:
    """Return a fingerprint of items: every field that reaches any output, in order.

    `stamps` remembers each date object's text: thousands of items share each one.
    """

    def stamp(moment: datetime | None) -> str | None:
        if moment is None:
            return None
        found = stamps.get(id(moment))
        if found is None:
            found = stamps[id(moment)] = f"{moment.isoformat()} {moment.tzinfo}"
        return found

    fields = [
        (
            i.id,
            i.title,
            stamp(i.date),
            stamp(i.updated),
            i.category,
            i.section,
            i.summary,
            i.body,
            i.link,
            (i.image.url, i.image.alt) if i.image else None,
            i.tags,
            i.draft,
            _event_key(i.event),
        )
        for i in items
    ]
    return marshal.dumps(fields, 4)
