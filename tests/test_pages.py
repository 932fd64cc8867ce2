"""The feed page: what a person sees at the feeds address, and what browsers auto-discover."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from digest.publish import catalogue, site
from helpers import NOW, build_text, item, yaml_catalogue

DATA = Path(__file__).parent / "data"


class Page(HTMLParser):
    """Collect the parts of a page a test looks at."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.alternates: list[dict[str, str | None]] = []
        self.anchors: list[str] = []
        self.headings: list[str] = []
        self.scripts = 0
        self._in: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "link" and values.get("rel") == "alternate":
            self.alternates.append(values)
        if tag == "a" and values.get("href"):
            self.anchors.append(values["href"] or "")
        if tag == "script":
            self.scripts += 1
        if tag in ("h2", "h3"):
            self._in = tag
            self.headings.append("")

    def handle_data(self, data: str) -> None:
        if self._in:
            self.headings[-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None


def rich_page() -> Page:
    files = site.render(catalogue.load(DATA / "rich.yaml"), NOW)
    return Page(files["index.html"].decode())


def test_every_feed_is_auto_discoverable() -> None:
    """Pasting the page's address into a reader offers every feed, with absolute URLs."""
    found = [(a["type"], a["href"]) for a in rich_page().alternates]
    expected = []
    for slug in ("all", "research", "people", "empty"):
        expected += [
            ("application/atom+xml", f"https://news.example.edu/feeds/{slug}.atom.xml"),
            ("application/rss+xml", f"https://news.example.edu/feeds/{slug}.rss.xml"),
            ("application/feed+json", f"https://news.example.edu/feeds/{slug}.json"),
        ]
    assert found == expected


def test_subscribe_links_point_at_files_that_exist() -> None:
    """Every subscribe link on the page opens a feed the build wrote beside it."""
    files = site.render(catalogue.load(DATA / "rich.yaml"), NOW)
    page = Page(files["index.html"].decode())
    local = [href for href in page.anchors if "://" not in href]
    assert len(local) == 12 + 3  # every feed, then the three months with items
    assert all(href in files for href in local)


def test_latest_items_by_section_in_page_order() -> None:
    """The page reads like the source page: sections in declared order, newest first."""
    headings = rich_page().headings
    # The newest feed_limit (3) items only: "Older news" is left to the archive.
    assert headings == [
        "Subscribe",
        "Features",
        "Robots & <Humans>: a 中文 title 🎉",
        "Events",
        "New Dean appointed",
        "More",
        "Research grant awarded",
        "Monthly digests",
    ]


def test_hostile_title_shows_as_text(tmp_path: Path) -> None:
    """A title carrying markup is shown literally, never run by the browser."""
    title = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    files = build_text(yaml_catalogue(item(title=json.dumps(title))), tmp_path)
    html = files["index.html"].decode()
    assert Page(html).scripts == 0
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    assert escaped in html
