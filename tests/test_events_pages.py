"""Events where people meet them: the feed page, the archive and the digest, and their JSON-LD."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from lxml import html as lxml_html

from digest.mail import newsletter
from digest.months import Month
from digest.publish import calendars, catalogue
from helpers import NOW, build_text, item, load_text, yaml_catalogue

NOVEMBER = Month(2025, 11)
HK = ZoneInfo("Asia/Hong_Kong")
TALK = (
    "{start: 2025-11-20T18:30, duration: 90 minutes, "
    "location: {name: Lecture Theater A, address: Clear Water Bay}, "
    "online: 'https://meet.example.edu/talk'}"
)
# Announced in August, held in December: the November digest's "Coming up".
GALA = "{start: 2025-12-05, end: 2025-12-06, location: {name: Sports Hall}}"
HOSTILE = "'Gala </script><script>alert(1)</script> & <!-- more'"


def text(**events: str) -> str:
    """Return a catalogue with a talk this month, a gala next month and plain news."""
    return yaml_catalogue(
        item("talk", "Evening talk", "2025-11-02", event=events.get("talk", TALK)),
        item(
            "gala",
            events.get("gala_title", "Winter gala"),
            "2025-08-20",
            category="people",
            event=events.get("gala", GALA),
        ),
        item("news", "Plain news", "2025-11-19"),
    )


def tree(page: bytes | str) -> lxml_html.HtmlElement:
    return lxml_html.fromstring(page)


def json_ld(page: bytes | str) -> list[dict[str, object]]:
    """Return the schema.org events a search engine reads from a page."""
    scripts = tree(page).xpath('//script[@type="application/ld+json"]')
    assert len(scripts) == 1
    document = json.loads(scripts[0].text)
    assert document["@context"] == "https://schema.org"
    graph: list[dict[str, object]] = document["@graph"]
    return graph


def query(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


def test_when_text_in_the_publication_zone() -> None:
    """Dates and times read as people write them, in Hong Kong time."""
    one = catalogue.Event(date(2025, 10, 1), date(2025, 10, 2))
    two = catalogue.Event(date(2023, 12, 8), date(2023, 12, 10))
    across = catalogue.Event(date(2025, 11, 30), date(2025, 12, 3))
    years = catalogue.Event(date(2025, 12, 31), date(2026, 1, 2))
    timed = catalogue.Event(
        datetime(2025, 11, 20, 10, 30, tzinfo=UTC), datetime(2025, 11, 20, 12, 0, tzinfo=UTC)
    )
    overnight = catalogue.Event(
        datetime(2025, 11, 20, 22, 0, tzinfo=HK), datetime(2025, 11, 21, 2, 0, tzinfo=HK)
    )
    assert calendars.when_text(one, HK) == "1 October 2025 (all day)"
    assert calendars.when_text(two, HK) == "8–9 December 2023"
    assert calendars.when_text(across, HK) == "30 November – 2 December 2025"
    assert calendars.when_text(years, HK) == "31 December 2025 – 1 January 2026"
    assert calendars.when_text(timed, HK) == "20 November 2025, 18:30–20:00 HKT"
    assert (
        calendars.when_text(overnight, HK) == "20 November 2025 22:00 – 21 November 2025 02:00 HKT"
    )


def test_feed_page_lists_the_calendars_with_subscribe_links(tmp_path: Path) -> None:
    """The feed page offers every calendar to calendar apps, Google Calendar and Outlook."""
    page = tree(build_text(text(), tmp_path)["index.html"])
    rows = page.xpath('//section[@id="calendars"]/table/tbody/tr')
    labels = [row.xpath("string(td[1])") for row in rows]
    assert labels == ["Every event", "Research", "People"]
    links = {a.text: a.get("href") for a in rows[0].xpath(".//a")}
    assert links["Calendar app"] == "webcal://news.example.edu/feeds/all.ics"
    assert links["iCalendar file"] == "https://news.example.edu/feeds/all.ics"
    assert query(links["Google Calendar"]) == {"cid": "webcal://news.example.edu/feeds/all.ics"}
    assert links["Google Calendar"].startswith("https://calendar.google.com/calendar/render?")
    assert query(links["Outlook"]) == {
        "url": "https://news.example.edu/feeds/all.ics",
        "name": "Campus News",
    }
    alternates = page.xpath('//link[@type="text/calendar"]/@href')
    assert alternates == [
        "https://news.example.edu/feeds/all.ics",
        "https://news.example.edu/feeds/research.ics",
        "https://news.example.edu/feeds/people.ics",
    ]


def test_feed_page_without_events_has_no_calendars(tmp_path: Path) -> None:
    """A publication with no events shows no empty calendar list and no JSON-LD."""
    page = build_text(yaml_catalogue(), tmp_path)["index.html"].decode()
    assert 'id="calendars"' not in page
    assert "application/ld+json" not in page
    assert "Add to calendar" not in page


def test_each_event_on_the_feed_page_can_be_added(tmp_path: Path) -> None:
    """Each event shows its time, place and meeting link, with links that add it to a calendar."""
    page = tree(build_text(text(), tmp_path)["index.html"])
    article = page.xpath('//article[@id="talk"]')[0]
    line = article.xpath('string(p[@class="event"])')
    assert (
        line
        == "20 November 2025, 18:30–20:00 HKT · Lecture Theater A, Clear Water Bay · Join online"
    )
    assert article.xpath('p[@class="event"]/time/@datetime') == ["2025-11-20T18:30:00+08:00"]
    links = {a.text: a.get("href") for a in article.xpath('p[@class="add"]/a')}
    assert links["iCalendar (.ics)"] == "https://news.example.edu/feeds/events/talk.ics"
    google = query(links["Google"])
    assert google["action"] == "TEMPLATE"
    assert google["text"] == "Evening talk"
    assert google["dates"] == "20251120T103000Z/20251120T120000Z"
    assert google["location"] == "Lecture Theater A, Clear Water Bay"
    assert "Online: https://meet.example.edu/talk" in google["details"]
    outlook = query(links["Outlook"])
    assert links["Outlook"].startswith("https://outlook.office.com/calendar/0/deeplink/compose?")
    assert (outlook["startdt"], outlook["enddt"], outlook["allday"]) == (
        "2025-11-20T18:30:00+08:00",
        "2025-11-20T20:00:00+08:00",
        "false",
    )
    assert outlook["subject"] == "Evening talk"
    assert not article.getparent().xpath('article[@id="news"]/p[@class="add"]')


def test_all_day_links_end_the_day_after(tmp_path: Path) -> None:
    """Google and Outlook get a two-day gala as the 5th to the 7th, exclusive, as they expect."""
    page = tree(build_text(text(), tmp_path)["index.html"])
    links = {a.text: a.get("href") for a in page.xpath('//article[@id="gala"]/p[@class="add"]/a')}
    assert query(links["Google"])["dates"] == "20251205/20251207"
    outlook = query(links["Outlook"])
    assert (outlook["startdt"], outlook["enddt"], outlook["allday"]) == (
        "2025-12-05",
        "2025-12-07",
        "true",
    )


def test_feed_page_json_ld_has_the_required_fields(tmp_path: Path) -> None:
    """Search engines read each event on the feed page as a schema.org Event."""
    events = {e["name"]: e for e in json_ld(build_text(text(), tmp_path)["index.html"])}
    assert set(events) == {"Evening talk", "Winter gala"}
    talk = events["Evening talk"]
    assert talk["@type"] == "Event"
    assert talk["startDate"] == "2025-11-20T18:30:00+08:00"
    assert talk["endDate"] == "2025-11-20T20:00:00+08:00"
    assert talk["eventStatus"] == "https://schema.org/EventScheduled"
    assert talk["eventAttendanceMode"] == "https://schema.org/MixedEventAttendanceMode"
    assert talk["location"] == [
        {"@type": "Place", "name": "Lecture Theater A", "address": "Clear Water Bay"},
        {"@type": "VirtualLocation", "url": "https://meet.example.edu/talk"},
    ]
    gala = events["Winter gala"]
    assert (gala["startDate"], gala["endDate"]) == ("2025-12-05", "2025-12-06")
    assert gala["location"] == {"@type": "Place", "name": "Sports Hall"}
    assert gala["eventAttendanceMode"] == "https://schema.org/OfflineEventAttendanceMode"


@pytest.mark.parametrize(
    ("status", "schema"),
    [("cancelled", "EventCancelled"), ("postponed", "EventPostponed")],
)
def test_json_ld_and_page_say_cancelled_or_postponed(
    tmp_path: Path, status: str, schema: str
) -> None:
    """A cancelled or postponed event says so on the page and to search engines."""
    files = build_text(text(gala=GALA[:-1] + f", status: {status}}}"), tmp_path)
    gala = {e["name"]: e for e in json_ld(files["index.html"])}["Winter gala"]
    assert gala["eventStatus"] == f"https://schema.org/{schema}"
    line = tree(files["index.html"]).xpath('string(//article[@id="gala"]/p[@class="event"])')
    assert line.startswith(f"{status.capitalize()}: 5–6 December 2025")


def test_json_ld_cannot_break_out_of_its_script(tmp_path: Path) -> None:
    """A title holding </script> or <!-- stays text inside the JSON-LD: no script of its own."""
    files = build_text(text(gala_title=HOSTILE), tmp_path)
    for name in ("index.html", "archive/2025-11.html"):
        page = files[name].decode()
        scripts = tree(page).xpath("//script")
        assert [s.get("type") for s in scripts] == ["application/ld+json"], name
        assert "<!--" not in scripts[0].text
        assert "\\u003c/script\\u003e" in scripts[0].text
        names = [e["name"] for e in json_ld(page)]
        assert "Gala </script><script>alert(1)</script> & <!-- more" in names, name


def test_archive_page_carries_json_ld_for_its_events(tmp_path: Path) -> None:
    """The November archive page describes its talk and the coming gala, each at its own page."""
    events = json_ld(build_text(text(), tmp_path)["archive/2025-11.html"])
    assert [(e["name"], e["url"]) for e in events] == [
        ("Evening talk", "https://news.example.edu/feeds/archive/2025-11.html#talk"),
        ("Winter gala", "https://news.example.edu/feeds/archive/2025-08.html#gala"),
    ]


def test_archive_month_without_events_has_no_json_ld(tmp_path: Path) -> None:
    """A month with no events and none coming carries no empty JSON-LD."""
    page = build_text(text(), tmp_path)["archive/2025-08.html"].decode()
    assert "application/ld+json" in page  # the gala's own month
    quiet = yaml_catalogue(item("news", "Plain news", "2025-11-19"))
    assert "application/ld+json" not in build_text(quiet, tmp_path)["archive/2025-11.html"].decode()


# -- the digest ----------------------------------------------------------------------------------


def digest(
    tmp_path: Path, categories: frozenset[str] | None = None, **events: str
) -> newsletter.Rendered:
    cat = load_text(text(**events), tmp_path)
    return newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW), categories)


def test_coming_up_holds_next_months_events_whatever_their_date(tmp_path: Path) -> None:
    """The November digest tells readers of December's gala, announced in August."""
    rendered = digest(tmp_path)
    page = tree(rendered.html)
    section = page.xpath('//td[@id="coming-up"]')[0]
    assert section.xpath("string(h2)") == "Coming up in December 2025"
    assert [t.text_content() for t in section.xpath('.//h3[@class="item-title"]')] == [
        "Winter gala"
    ]
    assert section.xpath('string(.//p[@class="event-when"])') == "5–6 December 2025"
    assert section.xpath('string(.//p[@class="event-place"])') == "Sports Hall"
    adds = [a.text for a in section.xpath('.//p[@class="add-to-calendar"]/a')]
    assert adds == ["iCalendar", "Google", "Outlook"]
    assert "COMING UP IN DECEMBER 2025" in rendered.text
    assert "When: 5–6 December 2025\nWhere: Sports Hall\n" in rendered.text
    assert "Add to calendar: https://news.example.edu/feeds/events/gala.ics" in rendered.text


def test_this_months_event_shows_in_its_section_not_in_coming_up(tmp_path: Path) -> None:
    """November's talk is in its category with its time and links, and not listed again."""
    rendered = digest(tmp_path)
    page = tree(rendered.html)
    talk = page.xpath('//td[@id="talk"]')[0]
    assert talk.xpath('string(p[@class="event-when"])') == "20 November 2025, 18:30–20:00 HKT"
    assert (
        talk.xpath('string(p[@class="event-place"])')
        == "Lecture Theater A, Clear Water Bay · Join online"
    )
    coming = page.xpath('//td[@id="coming-up"]')[0]
    assert "Evening talk" not in coming.text_content()
    assert "When: 20 November 2025, 18:30–20:00 HKT\n" in rendered.text
    assert "Online: https://meet.example.edu/talk\n" in rendered.text


def test_coming_up_follows_the_readers_categories(tmp_path: Path) -> None:
    """A reader of Research only is not told of People's gala."""
    rendered = digest(tmp_path, frozenset({"research"}))
    assert 'id="coming-up"' not in rendered.html
    assert "COMING UP" not in rendered.text


def test_no_coming_up_without_events_next_month(tmp_path: Path) -> None:
    """With nothing in December, the digest has no empty Coming up section."""
    rendered = digest(tmp_path, gala="{start: 2026-01-05, location: Hall}")
    assert 'id="coming-up"' not in rendered.html
    assert "COMING UP" not in rendered.text
