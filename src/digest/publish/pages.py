"""Render the human pages published beside the feeds: the feed index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import jinja2
from markupsafe import Markup

from digest.publish import calendars, markup
from digest.publish.catalogue import Catalogue, Item
from digest.publish.feeds import FORMATS, Feed, channels


@dataclass(frozen=True, slots=True)
class ArchiveLink:
    """A month's web digest, as the feed page lists it."""

    label: str
    href: str
    items: int


@dataclass(frozen=True, slots=True)
class _Row:
    label: str
    feed: Feed


@dataclass(frozen=True, slots=True)
class _Entry:
    id: str
    title: str
    link: str | None
    day: str
    iso: str
    category: str
    summary: Markup
    event: calendars.Shown | None = None


@dataclass(frozen=True, slots=True)
class _Group:
    name: str
    entries: tuple[_Entry, ...]


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # autoescape=True, not select_autoescape(): that default does not cover `.j2` templates.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("digest", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def day(moment: datetime) -> str:
    """Return a date as the page writes it: 19 November 2025."""
    return f"{moment.day} {moment:%B %Y}"


def render_index(
    catalogue: Catalogue,
    now: datetime,
    archive: Sequence[ArchiveLink],
    signup: str | None = None,
) -> bytes:
    """Return index.html: every feed, the latest items by section, and the monthly archive.

    With `signup` (the public pages' address), a form to get the digest by email; without it,
    the page says nothing about email.
    """
    publication = catalogue.publication
    tz = publication.tz
    names = {c.slug: c.name for c in publication.categories}
    rows = [
        _Row("Everything" if feed.slug == "all" else names[feed.slug], feed)
        for feed in channels(catalogue, now)
    ]

    def entry(item: Item) -> _Entry:
        local = item.date.astimezone(tz)
        return _Entry(
            id=item.id,
            title=item.title,
            link=item.link,
            day=day(local),
            iso=local.date().isoformat(),
            category=names[item.category],
            summary=Markup(markup.to_html(item.summary, publication.site_url)),  # noqa: S704 -- sanitized by nh3
            event=calendars.shown(publication, item) if item.event else None,
        )

    latest = catalogue.published(now)[: publication.feed_limit]
    groups = []
    for section in publication.sections:
        chosen = tuple(entry(i) for i in latest if i.section == section.slug)
        if chosen:
            groups.append(_Group(section.name, chosen))
    rest = tuple(entry(i) for i in latest if i.section is None)
    if rest:
        groups.append(_Group("More" if groups else "Latest", rest))
    events = calendars.json_ld(
        publication, [(i, f"{publication.feeds_url}#{i.id}") for i in latest]
    )
    template = _environment().get_template("index.html.j2")
    brand = catalogue.newsletter.brand if catalogue.newsletter else None
    page = template.render(
        publication=publication,
        rows=rows,
        formats=FORMATS,
        groups=groups,
        archive=archive,
        brand=brand,
        calendars=calendars.subscriptions(catalogue, now),
        json_ld=Markup(events) if events else None,  # noqa: S704 -- <, > and & escaped as \u
        signup=signup.rstrip("/") if signup else None,
    )
    return page.encode("utf-8")
