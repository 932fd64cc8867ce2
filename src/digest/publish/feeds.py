"""Render the catalogue's feeds: Atom 1.0, RSS 2.0 and JSON Feed 1.1, one set per category."""

from __future__ import annotations

import json
import mimetypes
import re
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
    for feed in channels(catalogue, now):
        files.update(render_feed(catalogue, feed))
    return files


def render_feed(catalogue: Catalogue, feed: Feed) -> dict[str, bytes]:
    """Return one channel's files, one per format, by file name."""
    entries = [_Entry.of(catalogue.publication, item) for item in feed.items]
    return {
        feed.filename(ATOM): _xml(catalogue, feed, entries, ATOM),
        feed.filename(RSS): _xml(catalogue, feed, entries, RSS),
        feed.filename(JSON_FEED): _json(catalogue, feed, entries),
    }


@dataclass(frozen=True, slots=True)
class _Entry:
    """What every format says about one item, computed once per build."""

    item: Item
    id: str
    summary_html: str
    summary_text: str
    content_html: str  # the whole item; equals summary_html when there is no body or image
    category_name: str

    @classmethod
    def of(cls, publication: Publication, item: Item) -> _Entry:
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


def _updated(entries: Sequence[_Entry]) -> datetime:
    return max((e.item.modified for e in entries), default=EPOCH)


def _xml(catalogue: Catalogue, feed: Feed, entries: Sequence[_Entry], form: Format) -> bytes:
    from feedgen.feed import FeedGenerator  # imported here: a no-op CLI run should not pay for it

    publication = catalogue.publication
    self_url = publication.feeds_url + feed.filename(form)
    fg = FeedGenerator()
    fg.load_extension("media", atom=True, rss=True)
    fg.id(feed_id(publication, feed.slug))
    fg.title(feed.title)
    fg.subtitle(publication.subtitle or publication.title)
    # Self first, alternate last: feedgen takes the RSS channel <link> from the last link() call.
    fg.link(href=self_url, rel="self", type=form.mime)
    fg.link(href=publication.site_url, rel="alternate", type="text/html")
    author = {"name": publication.author.name}
    if publication.author.email:
        author["email"] = publication.author.email
    fg.author(author)
    fg.language(publication.language)
    fg.generator("digest")
    fg.docs("https://www.rssboard.org/rss-specification")
    # feedgen stamps both with the build time unless told otherwise.
    updated = _updated(entries)
    fg.updated(updated)
    fg.lastBuildDate(updated)
    for entry in entries:
        _add_entry(fg, entry)
    if form is ATOM:
        data: bytes = fg.atom_str(pretty=True, encoding="UTF-8", xml_declaration=True)
        return data
    rss: bytes = fg.rss_str(pretty=True, encoding="UTF-8", xml_declaration=True)
    return _RSS_TITLE.sub(_hex_references, rss)


# RSS titles are plain text that some readers treat as HTML; the RSS Best Practices Profile asks for
# "&" and "<" as hexadecimal character references there, which every reader reads as plain text.
_RSS_TITLE = re.compile(rb"<title>([^<]*)</title>")


def _hex_references(match: re.Match[bytes]) -> bytes:
    text = match.group(1).replace(b"&amp;", b"&#x26;").replace(b"&lt;", b"&#x3C;")
    return b"<title>" + text + b"</title>"


def _add_entry(fg: Any, entry: _Entry) -> None:
    item = entry.item
    # feedgen prepends entries by default, which would reverse newest-first order.
    fe = fg.add_entry(order="append")
    fe.id(entry.id)
    fe.guid(entry.id, permalink=False)
    fe.title(item.title)
    # One link only: feedgen drops `rel` on entry links (upstream issue 135), so any second link,
    # an enclosure say, would become a second alternate link. Images go to media:* instead.
    if item.link:
        fe.link(href=item.link)
    fe.published(item.date)
    fe.updated(item.modified)
    # Atom needs content or an alternate link, and most items have no link: content is always there,
    # and a separate summary only when the content says more (feedgen maps them to RSS
    # description and content:encoded the same way).
    if entry.content_html != entry.summary_html:
        fe.summary(entry.summary_html, type="html")
    fe.content(entry.content_html, type="html")
    fe.category(term=item.category, label=entry.category_name)
    for tag in item.tags:
        fe.category(term=tag, label=tag)
    if item.image:
        # group=None: feedgen otherwise wraps these in a <media:group>.
        media: dict[str, str] = {"url": item.image.url, "medium": "image", "group": None}  # type: ignore[dict-item]
        kind, _ = mimetypes.guess_type(item.image.url)
        if kind and kind.startswith("image/"):
            media["type"] = kind
        fe.media.content(media)
        fe.media.thumbnail({"url": item.image.url, "group": None})


def _json(catalogue: Catalogue, feed: Feed, entries: Sequence[_Entry]) -> bytes:
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


def _json_item(entry: _Entry) -> dict[str, Any]:
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
