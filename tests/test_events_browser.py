"""The digest's "Coming up" section in a real browser, at a mail pane's width and a phone's."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from digest.mail import newsletter
from digest.months import Month
from helpers import NOW, item, load_text, yaml_catalogue

REMOTE = re.compile(r"^https?://")
NOVEMBER = Month(2025, 11)
EVENTS = [
    item(
        "talk",
        "Talk by Dr. William Mobley - Educating for Empathy & Compassion",
        "2025-11-05",
        event="{start: 2025-11-20T18:30, duration: PT90M, location: {name: Lecture Theater A, "
        "address: 'HKUST, Clear Water Bay, Kowloon'}}",
    ),
    item(
        "fireworks",
        "Academic Enrichment Program (AEP) - “Winter Fireworks with the Provost”",
        "2025-10-15",
        category="people",
        event="{start: 2025-12-12T19:00, end: 2025-12-12T21:30, location: {name: Atrium}, "
        "online: 'https://meet.example.edu/fireworks'}",
    ),
    item(
        "forum",
        "International AI Cooperation and Governance Forum",
        "2025-09-01",
        event="{start: 2025-12-08, end: 2025-12-09, location: HKUST, status: postponed}",
    ),
]


@pytest.fixture
def show(browser: Browser, tmp_path: Path) -> Iterator[Callable[[str, int], Page]]:
    """Open HTML at a width in the shared browser; every page is closed after the test."""
    pages: list[Page] = []

    def open_html(html: str, width: int) -> Page:
        path = tmp_path / f"digest-{len(pages)}.html"
        path.write_text(html, encoding="utf-8")
        page = browser.new_page(viewport={"width": width, "height": 900})
        pages.append(page)
        page.route(REMOTE, lambda route: route.abort())
        page.goto(path.as_uri())
        return page

    yield open_html
    for page in pages:
        page.close()


@pytest.mark.parametrize("width", [600, 375])
def test_coming_up_reads_well_at_mail_and_phone_widths(
    show: Callable[[str, int], Page], artifacts: Path, tmp_path: Path, width: int
) -> None:
    """Next month's events show their time, place and calendar links, none cut off sideways."""
    cat = load_text(yaml_catalogue(*EVENTS), tmp_path)
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    html, _ = rendered.personalise("Prof. Chan", "mailto:news@example.edu?subject=unsubscribe")
    page = show(html, width)
    section = page.locator("#coming-up")
    section.screenshot(path=artifacts / f"coming-up-{width}.png")
    assert section.locator("h2").inner_text().lower() == "coming up in december 2025"
    titles = section.locator("h3").all_inner_texts()
    assert titles == [
        "International AI Cooperation and Governance Forum",
        "Academic Enrichment Program (AEP) - “Winter Fireworks with the Provost”",
    ]
    whens = section.locator(".event-when").all_inner_texts()
    assert whens == ["Postponed: 8–9 December 2025", "12 December 2025, 19:00–21:30 HKT"]
    assert (
        section.locator(".add-to-calendar a").all_inner_texts()
        == [
            "iCalendar",
            "Google",
            "Outlook",
        ]
        * 2
    )
    sticking_out = page.eval_on_selector_all(
        "#coming-up *",
        f"els => els.filter(e => e.getBoundingClientRect().right > {width})"
        ".map(e => e.tagName + '.' + e.className)",
    )
    assert sticking_out == []
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    # Each link is a comfortable target for a finger: at least 18px tall.
    heights = page.eval_on_selector_all(
        "#coming-up .add-to-calendar a", "els => els.map(e => e.getBoundingClientRect().height)"
    )
    assert min(heights) >= 18


@pytest.mark.parametrize("width", [375, 1000])
def test_feed_page_calendar_links_fit(browser: Browser, artifacts: Path, width: int) -> None:
    """On a phone every calendar's subscribe links show whole, with no sideways scrolling."""
    from digest.publish import catalogue, site

    bundled = Path(__file__).parent.parent / "items.yaml"
    page_html = site.render(catalogue.load(bundled), NOW)["index.html"]
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.route(REMOTE, lambda route: route.abort())
        page.set_content(page_html.decode("utf-8"))
        page.locator("#calendars").screenshot(path=artifacts / f"feed-page-calendars-{width}.png")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        links = page.locator("#calendars a")
        assert links.count() == 4 * 3  # every event, Engagement, Institutional Advancement
        for index in range(links.count()):
            box = links.nth(index).bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= width
    finally:
        page.close()
