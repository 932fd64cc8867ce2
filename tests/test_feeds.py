"""The feeds, read back by a real feed parser the way subscribers' readers read them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

import feedgen_reference
from digest.publish import catalogue, feeds, site
from helpers import HEADER, NOW, build_text, item, load_text, yaml_catalogue

DATA = Path(__file__).parent / "data"
XML_FEEDS = ("atom.xml", "rss.xml")


@pytest.fixture
def rich() -> catalogue.Catalogue:
    return catalogue.load(DATA / "rich.yaml")


def parsed(files: dict[str, bytes], name: str) -> feedparser.FeedParserDict:
    result = feedparser.parse(files[name])
    assert not result.bozo, result.get("bozo_exception")
    return result


def titles(files: dict[str, bytes], slug: str = "all") -> dict[str, list[str]]:
    """Return the entry titles of one channel in each of the three formats."""
    out = {kind: [e.title for e in parsed(files, f"{slug}.{kind}").entries] for kind in XML_FEEDS}
    out["json"] = [i["title"] for i in json.loads(files[f"{slug}.json"])["items"]]
    return out


def ids(files: dict[str, bytes]) -> dict[str, list[str]]:
    """Return the entry ids of every feed file."""
    out = {}
    for name, data in files.items():
        if name.endswith(".json"):
            out[name] = [i["id"] for i in json.loads(data)["items"]]
        elif name.endswith(".xml"):
            out[name] = [e.id for e in parsed(files, name).entries]
    return out


def test_every_feed_file_is_written(rich: catalogue.Catalogue) -> None:
    """Subscribers find the combined feed and one per category in all three formats."""
    names = set(site.render(rich, NOW))
    slugs = ["all", "research", "people", "empty"]
    expected = {f"{s}.{k}" for s in slugs for k in ("atom.xml", "rss.xml", "json")}
    archive = {"archive/2025-11.html", "archive/2025-10.html", "archive/2025-09.html"}
    assert names == expected | {"index.html"} | archive


def test_titles_round_trip_exactly(tmp_path: Path) -> None:
    """Ampersands, angle brackets, Chinese and emoji show in readers exactly as written."""
    title = "Robots & <Humans>: 中文 🎉 &amp; a \"quote\" 'n' more"
    text = yaml_catalogue(item(title=json.dumps(title, ensure_ascii=False)))
    got = titles(build_text(text, tmp_path))
    assert got == {"atom.xml": [title], "rss.xml": [title], "json": [title]}


def test_entry_ids_are_tag_uris_from_host_and_id(rich: catalogue.Catalogue) -> None:
    """Entries are identified by tag URIs that readers keep forever."""
    files = site.render(rich, NOW)
    expected = [
        "tag:news.example.edu,2025:robot-lab",
        "tag:news.example.edu,2025:dean-appointed",
        "tag:news.example.edu,2025:grant-awarded",
    ]
    assert ids(files)["all.atom.xml"] == expected
    assert ids(files)["all.rss.xml"] == expected
    assert ids(files)["all.json"] == expected


def test_rss_guid_is_not_a_permalink(rich: catalogue.Catalogue) -> None:
    """RSS readers must not treat the tag URI as a web address."""
    rss = site.render(rich, NOW)["all.rss.xml"].decode()
    assert rss.count('<guid isPermaLink="false">tag:news.example.edu,2025:') == 3


@pytest.mark.parametrize(
    "change",
    [
        {"title": "Medical school (typo fixed)"},
        {"summary": "A corrected summary."},
        {"link": "https://news.example.edu/corrected"},
        {"date": "2025-11-18"},
        {"updated": "2025-12-01"},
    ],
)
def test_corrections_keep_entry_identity(tmp_path: Path, change: dict[str, str]) -> None:
    """Fixing a title, summary, link or date must not make readers show the item twice."""
    before = build_text(yaml_catalogue(item(id="med", title="Medcial school")), tmp_path)
    fields = {"id": "med", "title": "Medcial school", **change}
    after = build_text(yaml_catalogue(item(**fields)), tmp_path)
    assert ids(before) == ids(after)
    assert ids(after)["all.atom.xml"] == ["tag:news.example.edu,2025:med"]


def test_newest_first_and_feed_limit(rich: catalogue.Catalogue) -> None:
    """Readers get the newest `feed_limit` items, newest first, drafts and scheduled left out."""
    files = site.render(rich, NOW)
    # feed_limit is 3: the fourth published item is cut; the draft and the scheduled one never show.
    expected = [
        "Robots & <Humans>: a 中文 title 🎉",
        "New Dean appointed",
        "Research grant awarded",
    ]
    assert titles(files) == {"atom.xml": expected, "rss.xml": expected, "json": expected}


def test_category_feeds_hold_only_their_category(rich: catalogue.Catalogue) -> None:
    """A subscriber to one category never sees another's items."""
    files = site.render(rich, NOW)
    research = [
        "Robots & <Humans>: a 中文 title 🎉",
        "Research grant awarded",
        "Older news, beyond the feed limit",
    ]
    assert titles(files, "research")["atom.xml"] == research
    assert titles(files, "people")["rss.xml"] == ["New Dean appointed"]
    assert titles(files, "empty") == {"atom.xml": [], "rss.xml": [], "json": []}


def test_scheduled_item_appears_once_its_date_has_come(rich: catalogue.Catalogue) -> None:
    """An item dated in the future is published by the first build after its date."""
    later = datetime(2999, 1, 2, tzinfo=UTC)
    assert (
        "Scheduled item that must not appear"
        not in titles(site.render(rich, NOW), "people")["json"]
    )
    assert (
        titles(site.render(rich, later), "people")["json"][0]
        == "Scheduled item that must not appear"
    )


def test_output_does_not_depend_on_build_time(rich: catalogue.Catalogue) -> None:
    """Rebuilding later gives the same bytes: no build timestamps leak into feeds or the page."""
    first = site.render(rich, NOW)
    second = site.render(rich, NOW + timedelta(days=30))
    assert first == second


def test_feed_updated_is_newest_item_time(rich: catalogue.Catalogue) -> None:
    """A feed's updated time moves only when an item changes, so readers poll efficiently."""
    files = site.render(rich, NOW)
    atom = parsed(files, "all.atom.xml")
    assert atom.feed.updated == "2025-11-21T10:00:00+08:00"
    rss = parsed(files, "all.rss.xml")
    assert rss.feed.updated == "Fri, 21 Nov 2025 10:00:00 +0800"
    people = parsed(files, "people.atom.xml")
    assert people.feed.updated == "2025-11-03T00:00:00+08:00"
    # A feed with no items gets a fixed time, never the build time.
    assert parsed(files, "empty.atom.xml").feed.updated == "2000-01-01T00:00:00+00:00"


def test_entry_dates_carry_the_publication_offset(rich: catalogue.Catalogue) -> None:
    """Readers show the date the office meant: naive times are read in the publication's zone."""
    entry = parsed(site.render(rich, NOW), "all.atom.xml").entries[0]
    assert entry.published == "2025-11-20T09:30:00+08:00"
    assert entry.updated == "2025-11-21T10:00:00+08:00"
    rss_entry = parsed(site.render(rich, NOW), "all.rss.xml").entries[0]
    assert rss_entry.published == "Thu, 20 Nov 2025 09:30:00 +0800"


def test_links_are_where_readers_look(rich: catalogue.Catalogue) -> None:
    """The feed links to the site and to itself; an item with a link opens it."""
    files = site.render(rich, NOW)
    atom = parsed(files, "all.atom.xml")
    rels = [(link.rel, link.href) for link in atom.feed.links]
    assert rels == [
        ("self", "https://news.example.edu/feeds/all.atom.xml"),
        ("alternate", "https://news.example.edu/campus/"),
    ]
    assert atom.entries[0].link == "https://news.example.edu/campus/robot-lab"
    rss = parsed(files, "all.rss.xml")
    # feedgen takes the channel <link> from the last link() call: it must be the site, not the feed.
    assert rss.feed.link == "https://news.example.edu/campus/"
    assert rss.entries[0].link == "https://news.example.edu/campus/robot-lab"
    feed = json.loads(files["all.json"])
    assert feed["home_page_url"] == "https://news.example.edu/campus/"
    assert feed["feed_url"] == "https://news.example.edu/feeds/all.json"
    assert feed["items"][0]["url"] == "https://news.example.edu/campus/robot-lab"


def test_an_image_is_never_a_second_alternate_link(rich: catalogue.Catalogue) -> None:
    """Readers open the item's page, not its picture, and see the picture as a thumbnail."""
    files = site.render(rich, NOW)
    for kind in XML_FEEDS:
        entry = parsed(files, f"all.{kind}").entries[0]
        alternates = [link for link in entry.get("links", []) if link.get("rel") == "alternate"]
        assert [link.href for link in alternates] == ["https://news.example.edu/campus/robot-lab"]
        assert entry.media_thumbnail == [{"url": "https://news.example.edu/img/robot-lab.jpg"}]
        assert 'alt="Two students and a robot arm"' in entry.content[0].value
    assert json.loads(files["all.json"])["items"][0]["image"].endswith("/img/robot-lab.jpg")


def test_feedgen_traps_stay_closed(rich: catalogue.Catalogue) -> None:
    """No invalid content type, no lone media:group, no relative URL reaches a feed."""
    for name, data in site.render(rich, NOW).items():
        text = data.decode()
        assert 'type="CDATA"' not in text, name
        assert "media:group" not in text, name
        for url in re.findall(r'(?:href|src|url)="([^"]+)"', text):
            assert url.startswith(("https://", "http://", "mailto:")) or name == "index.html", (
                name,
                url,
            )


def test_summary_and_body_are_sanitized_everywhere(rich: catalogue.Catalogue) -> None:
    """Scripts, event handlers, javascript: and data: URLs and iframes never reach a reader."""
    for name, data in site.render(rich, NOW).items():
        text = data.decode()
        if name.endswith(".xml"):
            text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
        elif name.endswith(".json"):
            text = json.dumps(json.loads(data), ensure_ascii=False).replace("\\", "")
        lowered = text.lower()
        for bad in (
            "<script",
            "onclick",
            "onload",
            "javascript:",
            "data:image",
            "<iframe",
            "color:red",
        ):
            assert bad not in lowered, (name, bad)


def test_relative_urls_in_markdown_become_absolute(rich: catalogue.Catalogue) -> None:
    """A relative link in a summary opens the right page from any feed reader."""
    content = parsed(site.render(rich, NOW), "all.atom.xml").entries[0].content[0].value
    assert 'href="https://news.example.edu/plans/robots.html"' in content
    assert 'src="https://news.example.edu/img/lab.jpg"' in content


def test_summary_and_content(rich: catalogue.Catalogue) -> None:
    """Readers show the summary in lists and the whole item (image, body) when opened."""
    files = site.render(rich, NOW)
    entry = parsed(files, "all.atom.xml").entries[0]
    assert entry.summary == (
        '<p>The <strong>new</strong> lab opens; see <a href="https://news.example.edu/plans/'
        'robots.html">the plan</a>.</p>'
    )
    assert "<h2>What changes</h2>" in entry.content[0].value
    plain = parsed(files, "all.atom.xml").entries[2]
    assert plain.content[0].value == "<p>A grant of HK$1.2M.</p>"
    item = json.loads(files["all.json"])["items"][0]
    assert item["summary"] == (
        "The new lab opens; see the plan (https://news.example.edu/plans/robots.html)."
    )


def test_language_is_declared(rich: catalogue.Catalogue) -> None:
    """Readers and screen readers know the feed's language."""
    files = site.render(rich, NOW)
    assert b'xml:lang="zh-HK"' in files["all.atom.xml"]
    assert b"<language>zh-HK</language>" in files["all.rss.xml"]
    assert json.loads(files["all.json"])["language"] == "zh-HK"


def test_json_feed_is_version_1_1(rich: catalogue.Catalogue) -> None:
    """JSON Feed readers accept the file: version, title, items with ids and content."""
    feed = json.loads(site.render(rich, NOW)["all.json"])
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["authors"] == [{"name": "News Office", "url": "mailto:news@example.edu"}]
    for entry in feed["items"]:
        assert entry["id"].startswith("tag:")
        assert entry["content_html"]
        assert datetime.fromisoformat(entry["date_published"]).utcoffset() == timedelta(hours=8)


def test_feed_ids_differ_from_every_entry_id(rich: catalogue.Catalogue) -> None:
    """A feed's own id can never collide with an item's."""
    assert feeds.feed_id(rich.publication, "all") == "tag:news.example.edu,2025:feed:all"
    assert feeds.entry_id(rich.publication, "all") == "tag:news.example.edu,2025:all"


# Text an editor could type: anything printable, including markup characters; the catalogue rejects
# control characters and line breaks in titles (tested in test_catalogue.py).
printable = st.characters(
    blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85\ufffe\uffff"
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    title=st.text(printable, min_size=1, max_size=60).filter(lambda t: t.strip()),
    summary=st.one_of(
        st.text(printable, min_size=1, max_size=200).filter(lambda t: t.strip()),
        st.sampled_from(
            [
                '<script>alert("x")</script>hi',
                "<img src=x onerror=alert(1)>",
                '<a href="javascript:alert(1)">x</a>',
                "<p onmouseover='x()'>y</p>",
                "[x](javascript:alert(1)) <svg onload=alert(1)>",
                "<scr<script>ipt>alert(1)</script>",
            ]
        ),
    ),
)
def test_any_title_and_summary_build(tmp_path: Path, title: str, summary: str) -> None:
    """Whatever an editor types, the build succeeds, titles are exact and no script survives."""
    text = yaml_catalogue(
        item(
            title=json.dumps(title, ensure_ascii=False),
            summary=json.dumps(summary, ensure_ascii=False),
        )
    )
    files = build_text(text, tmp_path)
    # A plain XML parser, not feedparser: feedparser "repairs" text that looks like doubly encoded
    # UTF-8 (it turns "Â¡" into "¡"), which is its own choice, not what the feed says.
    atom = etree.fromstring(files["all.atom.xml"])
    rss = etree.fromstring(files["all.rss.xml"])
    assert (
        atom.findtext("{http://www.w3.org/2005/Atom}entry/{http://www.w3.org/2005/Atom}title")
        == title.strip()
    )
    assert rss.findtext("channel/item/title") == title.strip()
    assert json.loads(files["all.json"])["items"][0]["title"] == title.strip()
    html_parts = [parsed(files, "all.atom.xml").entries[0].content[0].value]
    html_parts.append(parsed(files, "all.rss.xml").entries[0].description)
    html_parts.append(json.loads(files["all.json"])["items"][0]["content_html"])
    for fragment in html_parts:
        lowered = fragment.lower()
        assert "<script" not in lowered
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", lowered)
        assert not re.search(r"""(?:href|src)\s*=\s*["']?\s*javascript:""", lowered)


def test_images_without_alt_text_get_an_empty_one(tmp_path: Path) -> None:
    """Screen readers skip an undescribed picture instead of reading its address aloud."""
    summary = json.dumps(
        '<img src="/a.png"> ![](/b.png) ![The lab](/c.png) <img alt="D" src="/d.png">'
    )
    files = build_text(yaml_catalogue(item(summary=summary)), tmp_path)
    content = json.loads(files["all.json"])["items"][0]["content_html"]
    assert re.findall(r"<img [^>]*>", content) == [
        '<img alt="" src="https://news.example.edu/a.png">',
        '<img src="https://news.example.edu/b.png" alt="">',
        '<img src="https://news.example.edu/c.png" alt="The lab">',
        '<img alt="D" src="https://news.example.edu/d.png">',
    ]


def feedgen_agrees(built: catalogue.Catalogue) -> None:
    """Assert that every Atom and RSS file of `built` is byte for byte what feedgen writes."""
    for feed in feeds.channels(built, NOW):
        ours = feeds.render_feed(built, feed)
        for name, data in feedgen_reference.render_feed(built, feed).items():
            assert ours[name] == data, name


@pytest.mark.parametrize("name", ["rich.yaml", "bundled"])
def test_xml_feeds_are_what_feedgen_writes(name: str) -> None:
    """The feeds are written without feedgen, to the byte what feedgen (and lxml) wrote."""
    path = Path(__file__).parents[1] / "items.yaml" if name == "bundled" else DATA / name
    feedgen_agrees(catalogue.load(path))


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    title=st.text(printable, min_size=1, max_size=40).filter(lambda t: t.strip()),
    subtitle=st.one_of(st.none(), st.text(printable, min_size=1, max_size=30)),
    author=st.text(printable, min_size=1, max_size=30).filter(lambda t: t.strip()),
    summary=st.one_of(
        st.text(printable, min_size=1, max_size=120).filter(lambda t: t.strip()),
        st.sampled_from(["<script>x</script>", 'a "quoted" & <b>bold</b> > \t tab', "x\r\ny"]),
    ),
    body=st.one_of(st.none(), st.text(printable, min_size=1, max_size=60)),
    link=st.one_of(st.none(), st.sampled_from(['https://e.example/a?b=1&c="2"', "https://e.x/"])),
    image=st.one_of(
        st.none(), st.sampled_from(["https://e.x/i.png", "https://e.x/i?a&b", "https://e.x/v"])
    ),
    alt=st.text(printable, min_size=1, max_size=20).filter(lambda t: t.strip()),
    tags=st.lists(st.sampled_from(["a-b", "lab", "x1"]), max_size=3, unique=True),
    updated=st.booleans(),
)
def test_any_item_is_written_as_feedgen_writes_it(
    tmp_path: Path,
    title: str,
    subtitle: str | None,
    author: str,
    summary: str,
    body: str | None,
    link: str | None,
    image: str | None,
    alt: str,
    tags: list[str],
    updated: bool,
) -> None:
    """Whatever the text (quotes, ampersands, tabs, CRs, any script), feedgen's bytes exactly."""
    extra: dict[str, str] = {}
    if body is not None and body.strip():
        extra["body"] = json.dumps(body, ensure_ascii=False)
    if link is not None:
        extra["link"] = json.dumps(link)
    if image is not None:
        extra["image"] = json.dumps({"url": image, "alt": alt}, ensure_ascii=False)
    if tags:
        extra["tags"] = json.dumps(tags)
    if updated:
        extra["updated"] = "2025-11-21T10:00:00+08:00"
    header = HEADER.replace("title: Campus News", f"title: {json.dumps(title, ensure_ascii=False)}")
    header = header.replace("name: News Office", f"name: {json.dumps(author, ensure_ascii=False)}")
    if subtitle is not None and subtitle.strip():
        header = header.replace(
            "  site_url:", f"  subtitle: {json.dumps(subtitle, ensure_ascii=False)}\n  site_url:"
        )
    text = yaml_catalogue(
        item(title=json.dumps(title, ensure_ascii=False), **extra),
        item(id="second", summary=json.dumps(summary, ensure_ascii=False), category="people"),
        header=header,
    )
    feedgen_agrees(load_text(text, tmp_path))


@given(st.text(st.characters(blacklist_categories=("Cs",), min_codepoint=9), max_size=30))
def test_text_and_attributes_are_escaped_as_lxml_escapes_them(value: str) -> None:
    """Any character XML can carry is escaped as lxml (inside feedgen) escaped it."""
    try:
        element = etree.Element("e", a=value)
        element.text = value
    except ValueError:  # a character XML cannot carry: the catalogue refuses those already
        return
    expected = etree.tostring(element, encoding="unicode")
    assert f'<e a="{feeds._attr(value)}">{feeds._text(value)}</e>' == expected or (
        not value and expected == '<e a=""/>'
    )
