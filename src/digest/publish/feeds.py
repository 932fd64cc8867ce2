"""Render the catalogue's feeds: Atom 1.0, RSS 2.0 and JSON Feed 1.1, one set per category."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from digest.publish import markup
from digest.publish.catalogue import Catalogue, Item, Publication

# Entry and feed ids are tag URIs (RFC 4151) built from the site's host and a fixed date, never from
# an item's own date, title or link: correcting any of those must not duplicate an entry in readers.
TAG_DATE = "2025"
# A feed with no items still needs an updated time; a fixed one keeps the output deterministic.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Format:
    """A feed format: its file extension, media type and the name readers know it by."""

    extension: str
    mime: str
    label: str


ATOM = Format("atom.xml", "application/atom+xml", "Atom")
RSS = Format("rss.xml", "application/rss+xml", "RSS")
JSON_FEED = Format("json", "application/feed+json", "JSON Feed")
FORMATS = (ATOM, RSS, JSON_FEED)


@dataclass(frozen=True, slots=True)
class Feed:
    """One channel of the publication: everything, or one category."""

    slug: str
    title: str
    items: tuple[Item, ...]

    def filename(self, form: Format) -> str:
        """Return the file name of this feed in format `form`."""
        return f"{self.slug}.{form.extension}"


def entry_id(publication: Publication, item_id: str) -> str:
    """Return an item's permanent identity in every feed."""
    return f"tag:{publication.host},{TAG_DATE}:{item_id}"


def feed_id(publication: Publication, slug: str) -> str:
    """Return a feed's permanent identity."""
    return f"tag:{publication.host},{TAG_DATE}:feed:{slug}"


def channels(catalogue: Catalogue, now: datetime) -> list[Feed]:
    """Return the combined feed then one per category, each with its newest `feed_limit` items."""
    publication = catalogue.publication
    live = catalogue.published(now)
    limit = publication.feed_limit
    feeds = [Feed("all", publication.title, live[:limit])]
    for category in publication.categories:
        items = tuple(i for i in live if i.category == category.slug)[:limit]
        feeds.append(Feed(category.slug, f"{publication.title}: {category.name}", items))
    return feeds


def render(catalogue: Catalogue, now: datetime) -> dict[str, bytes]:
    """Return every feed file, by file name."""
    files: dict[str, bytes] = {}
    made: dict[int, Entry] = {}
    for feed in channels(catalogue, now):
        files.update(render_feed(catalogue, feed, made))
    return files


def render_feed(
    catalogue: Catalogue, feed: Feed, made: dict[int, Entry] | None = None
) -> dict[str, bytes]:
    """Return one channel's files, one per format, by file name.

    `made` keeps each item's entry (by the item's id) for the build's other channels: an item is
    in the combined feed and in its category's, and its Markdown need not be rendered twice.
    """
    publication = catalogue.publication
    if made is None:
        made = {}
    entries = []
    for item in feed.items:
        entry = made.get(id(item))
        if entry is None:
            entry = made[id(item)] = Entry.of(publication, item)
        entries.append(entry)
    return {
        feed.filename(ATOM): _xml(catalogue, feed, entries, ATOM),
        feed.filename(RSS): _xml(catalogue, feed, entries, RSS),
        feed.filename(JSON_FEED): _json(catalogue, feed, entries),
    }


@dataclass(frozen=True, slots=True)
class Entry:
    """What every format says about one item, computed once per build."""

    item: Item
    id: str
    summary_html: str
    summary_text: str
    content_html: str  # the whole item; equals summary_html when there is no body or image
    category_name: str

    @classmethod
    def of(cls, publication: Publication, item: Item) -> Entry:
        base = publication.site_url
        summary_html = markup.to_html(item.summary, base)
        parts = []
        if item.image:
            parts.append(_img(item.image.url, item.image.alt))
        if item.image or item.body:
            parts.append(summary_html)
        if item.body:
            parts.append(markup.to_html(item.body, base))
        names = {c.slug: c.name for c in publication.categories}
        return cls(
            item=item,
            id=entry_id(publication, item.id),
            summary_html=summary_html,
            summary_text=markup.to_text(summary_html),
            content_html="\n".join(parts) if parts else summary_html,
            category_name=names[item.category],
        )


def _img(url: str, alt: str) -> str:
    # Built from validated parts, then through the same sanitizer as everything else.
    from html import escape

    return markup.sanitize(f'<p><img src="{escape(url)}" alt="{escape(alt)}"></p>', url)


def _updated(entries: Sequence[Entry]) -> datetime:
    return max((e.item.modified for e in entries), default=EPOCH)


def _xml(catalogue: Catalogue, feed: Feed, entries: Sequence[Entry], form: Format) -> bytes:
    """Return the Atom or RSS document, written directly (see `_atom`, `_rss`)."""
    lines = _atom(catalogue, feed, entries) if form is ATOM else _rss(catalogue, feed, entries)
    return "\n".join(lines).encode("utf-8")


# The Atom and RSS feeds were written with feedgen (through lxml) until issue 21; they are now
# written here, byte for byte as feedgen 1.0 with `pretty=True` wrote them (its element order and
# namespaces, lxml's escaping and indentation), which tests/test_feeds.py holds against feedgen
# itself. feedgen and lxml were a fifth of a cold build at 1,000 items: their import (with
# dateutil) and a tree of lxml elements for every feed.
_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>"
_MEDIA = "http://search.yahoo.com/mrss/"


def _text(value: str) -> str:
    """Return `value` escaped as lxml escapes an element's text."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if "\r" in value:
        value = value.replace("\r", "&#13;")
    return value


def _attr(value: str) -> str:
    """Return `value` escaped as lxml escapes an attribute's value (in double quotes)."""
    value = _text(value)
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\n" in value:
        value = value.replace("\n", "&#10;")
    if "\t" in value:
        value = value.replace("\t", "&#9;")
    return value


def _rss_title(value: str) -> str:
    # RSS titles are plain text that some readers treat as HTML; the RSS Best Practices Profile
    # asks for "&" and "<" as hexadecimal character references there, which every reader reads as
    # plain text.
    return _text(value).replace("&amp;", "&#x26;").replace("&lt;", "&#x3C;")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _rfc2822(moment: datetime) -> str:
    """Return `moment` as RSS dates are written: `%a, %d %b %Y %H:%M:%S %z` in the C locale."""
    day, month = _DAYS[moment.weekday()], _MONTHS[moment.month - 1]
    return f"{day}, {moment.day:02d} {month} {moment.year:04d} {moment:%H:%M:%S %z}"


def _atom(catalogue: Catalogue, feed: Feed, entries: Sequence[Entry]) -> list[str]:
    publication = catalogue.publication
    language = f' xml:lang="{_attr(publication.language)}"' if publication.language else ""
    author = publication.author
    out = [
        _DECLARATION,
        f'<feed xmlns:media="{_MEDIA}" xmlns="http://www.w3.org/2005/Atom"{language}>',
        f"  <id>{_text(feed_id(publication, feed.slug))}</id>",
        f"  <title>{_text(feed.title)}</title>",
        f"  <updated>{_updated(entries).isoformat()}</updated>",
    ]
    if author.name:
        out += ["  <author>", f"    <name>{_text(author.name)}</name>"]
        if author.email:
            out.append(f"    <email>{_text(author.email)}</email>")
        out.append("  </author>")
    self_url = _attr(publication.feeds_url + feed.filename(ATOM))
    out.append(f'  <link href="{self_url}" rel="self" type="{ATOM.mime}"/>')
    out.append(f'  <link href="{_attr(publication.site_url)}" rel="alternate" type="text/html"/>')
    out.append("  <generator>digest</generator>")
    subtitle = publication.subtitle or publication.title
    if subtitle:
        out.append(f"  <subtitle>{_text(subtitle)}</subtitle>")
    for entry in entries:
        _atom_entry(out, entry)
    out.append("</feed>\n")
    return out


def _atom_entry(out: list[str], entry: Entry) -> None:
    item = entry.item
    out += [
        "  <entry>",
        f"    <id>{_text(entry.id)}</id>",
        f"    <title>{_text(item.title)}</title>",
        f"    <updated>{item.modified.isoformat()}</updated>",
        _html_element("content", entry.content_html),
    ]
    if item.link:
        # feedgen drops every attribute but href from an entry's link (upstream issue 135).
        out.append(f'    <link href="{_attr(item.link)}"/>')
    if entry.content_html != entry.summary_html:
        out.append(_html_element("summary", entry.summary_html))
    for term, label in _categories(entry):
        labelled = f' label="{label}"' if label else ""
        out.append(f'    <category term="{term}"{labelled}/>')
    out.append(f"    <published>{item.date.isoformat()}</published>")
    out += _media(item, "    ")
    out.append("  </entry>")


def _html_element(name: str, html: str) -> str:
    """Return an entry's content or summary element; feedgen leaves an empty one without text."""
    if not html:
        return f'    <{name} type="html"/>'
    return f'    <{name} type="html">{_text(html)}</{name}>'


def _categories(entry: Entry) -> list[tuple[str, str]]:
    """Return each category of an entry, its term and label escaped for an attribute."""
    item = entry.item
    found = [(_attr(item.category), _attr(entry.category_name))]
    found += [(_attr(tag), _attr(tag)) for tag in item.tags]
    return found


def _media(item: Item, indent: str) -> list[str]:
    """Return an item's media:content and media:thumbnail lines (none without an image)."""
    if not item.image:
        return []
    url = _attr(item.image.url)
    kind, _ = mimetypes.guess_type(item.image.url)
    kind_attr = f' type="{_attr(kind)}"' if kind and kind.startswith("image/") else ""
    return [
        f'{indent}<media:content url="{url}"{kind_attr} medium="image"/>',
        f'{indent}<media:thumbnail url="{url}"/>',
    ]


def _rss(catalogue: Catalogue, feed: Feed, entries: Sequence[Entry]) -> list[str]:
    publication = catalogue.publication
    self_url = _attr(publication.feeds_url + feed.filename(RSS))
    out = [
        _DECLARATION,
        f'<rss xmlns:media="{_MEDIA}" xmlns:atom="http://www.w3.org/2005/Atom" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" version="2.0">',
        "  <channel>",
        f"    <title>{_rss_title(feed.title)}</title>",
        f"    <link>{_text(publication.site_url)}</link>",
        f"    <description>{_text(publication.subtitle or publication.title)}</description>",
        f'    <atom:link href="{self_url}" rel="self" type="{RSS.mime}"/>',
        "    <docs>https://www.rssboard.org/rss-specification</docs>",
        "    <generator>digest</generator>",
    ]
    if publication.language:
        out.append(f"    <language>{_text(publication.language)}</language>")
    out.append(f"    <lastBuildDate>{_rfc2822(_updated(entries))}</lastBuildDate>")
    for entry in entries:
        _rss_item(out, entry)
    out += ["  </channel>", "</rss>\n"]
    return out


def _rss_item(out: list[str], entry: Entry) -> None:
    item = entry.item
    out += ["    <item>", f"      <title>{_rss_title(item.title)}</title>"]
    if item.link:
        out.append(f"      <link>{_text(item.link)}</link>")
    content = _text(entry.content_html)
    # feedgen's rule: the summary is the description when there is one that says less than the
    # content (and is not empty), with the content in content:encoded; else the content is.
    if entry.content_html != entry.summary_html and entry.summary_html:
        out.append(f"      <description>{_text(entry.summary_html)}</description>")
        out.append(f"      <content:encoded>{content}</content:encoded>")
    else:
        out.append(f"      <description>{content}</description>")
    out.append(f'      <guid isPermaLink="false">{_text(entry.id)}</guid>')
    out.append(f"      <category>{_text(entry.category_name)}</category>")
    out += [f"      <category>{_text(tag)}</category>" for tag in item.tags]
    out.append(f"      <pubDate>{_rfc2822(item.date)}</pubDate>")
    out += _media(item, "      ")
    out.append("    </item>")


def _json(catalogue: Catalogue, feed: Feed, entries: Sequence[Entry]) -> bytes:
    publication = catalogue.publication
    author: dict[str, str] = {"name": publication.author.name}
    if publication.author.email:
        author["url"] = f"mailto:{publication.author.email}"
    document: dict[str, Any] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": feed.title,
        "home_page_url": publication.site_url,
        "feed_url": publication.feeds_url + feed.filename(JSON_FEED),
        "description": publication.subtitle or publication.title,
        "language": publication.language,
        "authors": [author],
        "items": [_json_item(e) for e in entries],
    }
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _json_item(entry: Entry) -> dict[str, Any]:
    item = entry.item
    out: dict[str, Any] = {"id": entry.id}
    if item.link:
        out["url"] = item.link
    out["title"] = item.title
    out["content_html"] = entry.content_html
    out["summary"] = entry.summary_text
    if item.image:
        out["image"] = item.image.url
    out["date_published"] = item.date.isoformat()
    out["date_modified"] = item.modified.isoformat()
    out["tags"] = [entry.category_name, *item.tags]
    return out
