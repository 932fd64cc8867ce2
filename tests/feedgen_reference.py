"""The Atom and RSS feeds as feedgen writes them: what publish/feeds.py must match byte for byte.

`digest` wrote its XML feeds with feedgen (through lxml) until issue 21, then wrote them itself to
spare a build their import and their trees. This is the feedgen code it used, kept for the tests
(tests/test_feeds.py) that hold the two to the same bytes on any catalogue.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Sequence
from typing import Any

from feedgen.feed import FeedGenerator

from digest.publish import feeds
from digest.publish.catalogue import Catalogue


def render_feed(catalogue: Catalogue, feed: feeds.Feed) -> dict[str, bytes]:
    """Return one channel's Atom and RSS files as feedgen writes them, by file name."""
    entries = [feeds.Entry.of(catalogue.publication, item) for item in feed.items]
    return {
        feed.filename(form): xml(catalogue, feed, entries, form) for form in (feeds.ATOM, feeds.RSS)
    }


def xml(
    catalogue: Catalogue, feed: feeds.Feed, entries: Sequence[feeds.Entry], form: feeds.Format
) -> bytes:
    publication = catalogue.publication
    self_url = publication.feeds_url + feed.filename(form)
    fg = FeedGenerator()
    fg.load_extension("media", atom=True, rss=True)
    fg.id(feeds.feed_id(publication, feed.slug))
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
    updated = max((e.item.modified for e in entries), default=feeds.EPOCH)
    fg.updated(updated)
    fg.lastBuildDate(updated)
    for entry in entries:
        _add_entry(fg, entry)
    if form is feeds.ATOM:
        data: bytes = fg.atom_str(pretty=True, encoding="UTF-8", xml_declaration=True)
        return data
    rss: bytes = fg.rss_str(pretty=True, encoding="UTF-8", xml_declaration=True)
    return _RSS_TITLE.sub(_hex_references, rss)


_RSS_TITLE = re.compile(rb"<title>([^<]*)</title>")


def _hex_references(match: re.Match[bytes]) -> bytes:
    text = match.group(1).replace(b"&amp;", b"&#x26;").replace(b"&lt;", b"&#x3C;")
    return b"<title>" + text + b"</title>"


def _add_entry(fg: Any, entry: feeds.Entry) -> None:
    item = entry.item
    fe = fg.add_entry(order="append")
    fe.id(entry.id)
    fe.guid(entry.id, permalink=False)
    fe.title(item.title)
    if item.link:
        fe.link(href=item.link)
    fe.published(item.date)
    fe.updated(item.modified)
    if entry.content_html != entry.summary_html:
        fe.summary(entry.summary_html, type="html")
    fe.content(entry.content_html, type="html")
    fe.category(term=item.category, label=entry.category_name)
    for tag in item.tags:
        fe.category(term=tag, label=tag)
    if item.image:
        media: dict[str, Any] = {"url": item.image.url, "medium": "image", "group": None}
        kind, _ = mimetypes.guess_type(item.image.url)
        if kind and kind.startswith("image/"):
            media["type"] = kind
        fe.media.content(media)
        fe.media.thumbnail({"url": item.image.url, "group": None})
