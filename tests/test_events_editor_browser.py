"""Events in the announcement editor, in a real browser: `digest serve` as a process over a copy
of the bundled catalogue, Chromium through Playwright, the built calendars read with icalendar;
the acceptance of issue 20's editor ("change one event's date in the console ...")."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import icalendar
import pytest
from playwright.sync_api import Browser, Page, expect

from conftest import serving
from digest.publish import catalogue, feeds

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a long passphrase for the tests"  # noqa: S105 -- the tests' own
AEP = "aep-fireworks-with-the-provost-2025"
AEP_TITLE = "Academic Enrichment Program (AEP) - “Fireworks with the Provost” (1 October 2025)"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A clean clone's worth of the project: the bundled catalogue, list and built feeds."""
    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "feeds", tmp_path / "feeds")
    return tmp_path


@pytest.fixture
def served(copy: Path) -> Iterator[str]:
    """`digest serve` on a free loopback port over the copy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= {"DIGEST_CONSOLE_PASSWORD": PASSWORD}
    with serving(copy, env) as url:
        yield url


def vevent(folder: Path, item_id: str) -> Any:
    """Return the item's VEVENT in the built all.ics, read with icalendar."""
    loaded = catalogue.load(folder / "items.yaml")
    uid = feeds.entry_id(loaded.publication, item_id)
    calendar = icalendar.Calendar.from_ical((folder / "feeds" / "all.ics").read_bytes())
    [found] = [e for e in calendar.walk("VEVENT") if str(e["UID"]) == uid]
    return found


def logged_in(browser: Browser, served: str) -> tuple[Page, list[str]]:
    """Return a page logged in to the console, and the CSP violations it reports."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.goto(served + "/login")
    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("Console password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    return page, violations


def shot(page: Page, artifacts: Path, name: str) -> None:
    """Keep a screenshot of the form's Event section (and what is above it) for a person."""
    page.screenshot(path=artifacts / f"event-editor-{name}.png", full_page=True)


def test_moving_then_cancelling_an_aep_evening_in_the_console(
    browser: Browser, served: str, copy: Path, artifacts: Path
) -> None:
    """Staff move an AEP evening and then cancel it: subscribers' calendars get the new day and
    then the cancellation, on the same event (same UID), each a higher SEQUENCE."""
    before = vevent(copy, AEP)
    assert before["DTSTART"].dt == date(2025, 10, 1)
    page, violations = logged_in(browser, served)
    page.get_by_role("link", name="Announcements").click()
    page.get_by_role("link", name=AEP_TITLE).click()
    expect(page.get_by_label("All day")).to_be_checked()
    start = page.get_by_label("Event start")
    expect(start).to_have_attribute("type", "date")
    expect(start).to_have_value("2025-10-01")
    expect(page.get_by_label("Place")).to_have_value("HKUST")
    page.locator("#event").scroll_into_view_if_needed()
    shot(page, artifacts, "1-aep-as-found")

    start.fill("2025-10-08")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text(f"Saved {AEP}: it is now published")).to_be_visible()
    expect(page.get_by_text("Feeds rebuilt:")).to_be_visible()
    expect(page.get_by_label("Event start")).to_have_value("2025-10-08")
    shot(page, artifacts, "2-aep-moved")
    moved = vevent(copy, AEP)
    assert moved["DTSTART"].dt == date(2025, 10, 8)
    assert str(moved["UID"]) == str(before["UID"])
    assert moved["SEQUENCE"] == before["SEQUENCE"] + 1

    page.get_by_label("Event status").select_option("cancelled")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("Feeds rebuilt:")).to_be_visible()
    expect(page.get_by_label("Event status")).to_have_value("cancelled")
    shot(page, artifacts, "3-aep-cancelled")
    cancelled = vevent(copy, AEP)
    assert str(cancelled["STATUS"]) == "CANCELLED"
    assert str(cancelled["UID"]) == str(before["UID"])
    assert cancelled["DTSTART"].dt == date(2025, 10, 8)
    assert cancelled["SEQUENCE"] == moved["SEQUENCE"] + 1
    assert b"STATUS:CANCELLED" in (copy / "feeds" / "all.ics").read_bytes()

    page.goto(served + "/feeds/")
    expect(page.get_by_text("Cancelled").first).to_be_visible()
    assert violations == []
    page.close()


def test_making_an_announcement_an_evening_event_with_a_time(
    browser: Browser, served: str, copy: Path, artifacts: Path
) -> None:
    """Staff switch the Event section to At a time, see a missing place at its field, fix it:
    the calendar has the evening at its local time."""
    page, violations = logged_in(browser, served)
    page.goto(served + "/items/medical-school-preparations")
    expect(page.get_by_label("Event start")).to_have_attribute("type", "date")
    page.get_by_label("Event start").fill("2025-11-20")
    page.get_by_label("At a time").check()
    start = page.get_by_label("Event start")
    expect(start).to_have_attribute("type", "datetime-local")
    expect(start).to_have_value("2025-11-20T00:00")  # the day kept; the time is to be set
    start.fill("2025-11-20T18:30")
    page.get_by_label("Duration").fill("PT2H")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#event_location-error")).to_have_text(
        "gives neither `location` nor `online`; say where people go, like location: "
        "{name: Lecture Theater A}, or online: https://... for a web meeting"
    )
    expect(page.get_by_label("Event start")).to_have_value("2025-11-20T18:30")
    expect(page.get_by_label("At a time")).to_be_checked()
    page.locator("#event").scroll_into_view_if_needed()
    shot(page, artifacts, "4-timed-error-at-place")

    page.get_by_label("Place").fill("Lecture Theater A")
    page.get_by_role("textbox", name="Address (optional)", exact=True).fill(
        "HKUST, Clear Water Bay, Kowloon"
    )
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("Feeds rebuilt:")).to_be_visible()
    shot(page, artifacts, "5-timed-saved")
    added = vevent(copy, "medical-school-preparations")
    assert added["DTSTART"].dt == datetime.fromisoformat("2025-11-20T18:30+08:00")
    assert added["DTEND"].dt == datetime.fromisoformat("2025-11-20T20:30+08:00")
    assert str(added["LOCATION"]) == "Lecture Theater A, HKUST, Clear Water Bay, Kowloon"
    assert violations == []
    page.close()
