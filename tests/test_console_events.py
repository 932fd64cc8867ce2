"""The announcement form's Event section: an item's event shown, changed, added, removed and
refused at its fields, and the calendars rebuilt after each save (Flask's test client over a
copy of the bundled catalogue; the calendars read back with icalendar)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import icalendar
import lxml.html
import pytest
from flask import Flask
from flask.testing import FlaskClient

from digest import console
from digest.publish import catalogue, feeds

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"  # noqa: S105 -- the tests' own
NOW = datetime(2025, 12, 1, 4, tzinfo=UTC)
AEP = "aep-fireworks-with-the-provost-2025"
PLAIN = "medical-school-preparations"  # an item with no event


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The bundled catalogue, subscribers and feeds (calendars too) in a folder of their own."""
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    shutil.copytree(ROOT / "feeds", tmp_path / "feeds")
    return tmp_path


@pytest.fixture
def app(project: Path) -> Iterator[Flask]:
    """The console over the project."""
    config = console.Config(
        catalogue_path=project / "items.yaml",
        state_path=project / ".digest" / "state.sqlite3",
        feeds_dir=project / "feeds",
        password=PASSWORD,
        secret_key="s" * 40,
        clock=lambda: NOW,
        outbox=project / "outbox",
    )
    made = console.create_app(config)
    yield made
    console.wait_for_jobs(made)


@pytest.fixture
def staff(app: Flask) -> FlaskClient:
    """A client logged in as Ada."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    response = client.post(
        "/login",
        data={"csrf_token": found.group(1), "name": "Ada", "password": PASSWORD, "next": ""},
    )
    assert response.status_code == 303
    return client


def field_error(page: str, name: str) -> list[str]:
    """Return the messages shown at one field."""
    tree = lxml.html.fromstring(page)
    return [e.text_content() for e in tree.xpath(f"//*[@id='{name}-error']")]


def posted(page: str) -> dict[str, str]:
    """Return the item form's fields as a browser posts them (only the checked radio)."""
    tree = lxml.html.fromstring(page)
    [form] = tree.xpath("//form[contains(@class, 'item-form')]")
    fields: dict[str, str] = {}
    for element in form.xpath(".//input[@name] | .//textarea[@name] | .//select[@name]"):
        name = element.get("name")
        if element.tag == "select":
            chosen = element.xpath("./option[@selected]")
            fields[name] = chosen[0].get("value") if chosen else element.xpath("./option/@value")[0]
        elif element.tag == "textarea":
            fields[name] = element.text or ""
        elif element.get("type") == "radio":
            if element.get("checked") is not None:
                fields[name] = element.get("value")
        else:
            fields[name] = element.get("value") or ""
    return fields


def form(staff: FlaskClient, item_id: str) -> dict[str, str]:
    """Return an item's form as the console shows it."""
    return posted(staff.get(f"/items/{item_id}").get_data(as_text=True))


def save(staff: FlaskClient, item_id: str, fields: dict[str, str]) -> Any:
    """Post the item's form with the Save button."""
    return staff.post(f"/items/{item_id}", data={**fields, "action": "save"})


def vevent(project: Path, item_id: str, name: str = "all.ics") -> Any:
    """Return the item's VEVENT in a built calendar (None when it has none)."""
    loaded = catalogue.load(project / "items.yaml")
    uid = feeds.entry_id(loaded.publication, item_id)
    calendar = icalendar.Calendar.from_ical((project / "feeds" / name).read_bytes())
    found = [e for e in calendar.walk("VEVENT") if str(e["UID"]) == uid]
    return found[0] if found else None


def input_of(page: str, name: str) -> Any:
    """Return the form's input element named `name`."""
    [element] = lxml.html.fromstring(page).xpath(f"//form//*[@name='{name}']")
    return element


def event_lines(text: str, item_id: str) -> list[str]:
    """Return the lines of an item's `event:` block in the file's text."""
    lines = text.splitlines()
    start = lines.index(f"  - id: {item_id}")
    end = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("  - id:")), None)
    own = lines[start:end]
    if "    event:" not in own:
        return []
    first = own.index("    event:")
    rest = [line for line in own[first + 1 :]]
    block = [own[first]]
    for line in rest:
        if not line.startswith("      "):
            break
        block.append(line)
    return block


def test_an_items_event_is_shown_in_its_fields(staff: FlaskClient) -> None:
    """Staff opening an event's item see its day, place and status, as a day (all day) input."""
    page = staff.get(f"/items/{AEP}").get_data(as_text=True)
    fields = posted(page)
    assert fields["event_timing"] == "all-day"
    assert fields["event_start"] == "2025-10-01"
    assert input_of(page, "event_start").get("type") == "date"
    assert (fields["event_location"], fields["event_status"]) == ("HKUST", "scheduled")
    assert fields["event_end"] == fields["event_duration"] == fields["event_online"] == ""
    shanghai = form(staff, "shanghai-center-opening")
    assert shanghai["event_address"] == "West Bund, Xuhui District, Shanghai"
    plain = posted(staff.get(f"/items/{PLAIN}").get_data(as_text=True))
    assert plain["event_start"] == plain["event_location"] == ""


def test_moving_and_cancelling_an_event_updates_its_calendar(
    staff: FlaskClient, project: Path
) -> None:
    """A new day in the form moves the event in all.ics (same UID, SEQUENCE + 1); cancelled
    marks it cancelled, and only the changed line of the file differs each time."""
    before_text = (project / "items.yaml").read_text()
    before = vevent(project, AEP)
    assert before["DTSTART"].dt == date(2025, 10, 1)
    fields = form(staff, AEP)
    fields["event_start"] = "2025-10-08"
    assert save(staff, AEP, fields).status_code == 303
    moved_text = (project / "items.yaml").read_text()
    old_lines, new_lines = before_text.splitlines(), moved_text.splitlines()
    assert len(old_lines) == len(new_lines)
    assert [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b] == [
        (
            "      start: 2025-10-01  # time not stated on the source page: all day",
            "      start: 2025-10-08  # time not stated on the source page: all day",
        )
    ]
    moved = vevent(project, AEP)
    assert moved["DTSTART"].dt == date(2025, 10, 8)
    assert moved["DTEND"].dt == date(2025, 10, 9)
    assert str(moved["UID"]) == str(before["UID"])
    assert moved["SEQUENCE"] == before["SEQUENCE"] + 1
    assert vevent(project, AEP, "engagement.ics")["DTSTART"].dt == date(2025, 10, 8)

    fields = form(staff, AEP)
    fields["event_status"] = "cancelled"
    assert save(staff, AEP, fields).status_code == 303
    assert event_lines((project / "items.yaml").read_text(), AEP)[-1] == "      status: cancelled"
    cancelled = vevent(project, AEP)
    assert str(cancelled["STATUS"]) == "CANCELLED"
    assert str(cancelled["UID"]) == str(before["UID"])
    assert cancelled["SEQUENCE"] == before["SEQUENCE"] + 2
    assert form(staff, AEP)["event_status"] == "cancelled"

    fields = form(staff, AEP)
    fields["event_status"] = "scheduled"  # the default: its line goes
    assert save(staff, AEP, fields).status_code == 303
    assert (project / "items.yaml").read_text() == moved_text


def test_adding_a_timed_event_writes_a_block_and_shows_date_time_inputs(
    staff: FlaskClient, project: Path
) -> None:
    """An item becomes an evening event: the block is written and the calendar has its time."""
    fields = form(staff, PLAIN)
    fields.update(
        event_timing="timed",
        event_start="2025-11-20T18:30",
        event_duration="90 minutes",
        event_location="Lecture Theater A #1",
        event_address="Clear Water Bay: 中文",
        event_online="https://meet.example.edu/aep",
    )
    assert save(staff, PLAIN, fields).status_code == 303
    assert event_lines((project / "items.yaml").read_text(), PLAIN) == [
        "    event:",
        "      start: 2025-11-20T18:30",
        "      duration: 90 minutes",
        "      location:",
        '        name: "Lecture Theater A #1"',
        '        address: "Clear Water Bay: 中文"',
        "      online: https://meet.example.edu/aep",
    ]
    item = catalogue.load(project / "items.yaml").items[0]
    assert item.event is not None
    assert item.event.location == catalogue.Place("Lecture Theater A #1", "Clear Water Bay: 中文")
    added = vevent(project, PLAIN)
    assert added["DTSTART"].dt == datetime.fromisoformat("2025-11-20T18:30+08:00")
    assert added["DTEND"].dt == datetime.fromisoformat("2025-11-20T20:00+08:00")
    page = staff.get(f"/items/{PLAIN}").get_data(as_text=True)
    assert posted(page)["event_timing"] == "timed"
    assert input_of(page, "event_start").get("type") == "datetime-local"
    assert input_of(page, "event_start").get("value") == "2025-11-20T18:30"


def test_emptying_the_event_fields_removes_the_block(staff: FlaskClient, project: Path) -> None:
    """Staff empty the Event section: the item is no event, in the file and the calendars."""
    before = (project / "items.yaml").read_text()
    fields = form(staff, "shanghai-center-opening")
    for name in ("event_start", "event_location", "event_address"):
        fields[name] = ""
    assert save(staff, "shanghai-center-opening", fields).status_code == 303
    text = (project / "items.yaml").read_text()
    assert event_lines(text, "shanghai-center-opening") == []
    block = event_lines(before, "shanghai-center-opening")
    assert len(block) == 3
    assert text == before.replace("".join(line + "\n" for line in block), "", 1)
    assert vevent(project, "shanghai-center-opening") is None


def test_all_day_keeps_only_the_days(staff: FlaskClient, project: Path) -> None:
    """Choosing All day with times in the inputs saves the days alone."""
    fields = form(staff, PLAIN)
    fields.update(
        event_timing="all-day",
        event_start="2025-11-20T18:30",
        event_end="2025-11-21T10:00",
        event_location="HKUST",
    )
    assert save(staff, PLAIN, fields).status_code == 303
    event = catalogue.load(project / "items.yaml").items[0].event
    assert event is not None
    assert (event.start, event.last_day) == (date(2025, 11, 20), date(2025, 11, 21))


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"event_end": "2025-09-30"},
            "event_end",
            "2025-09-30 is before start (2025-10-01); for an all-day event `end` is its last day "
            "(a one-day event needs no end)",
        ),
        (
            {"event_location": ""},
            "event_location",
            "gives neither `location` nor `online`; say where people go, like location: "
            "{name: Lecture Theater A}, or online: https://... for a web meeting",
        ),
        (
            {"event_online": "http://meet.example.edu/x"},
            "event_online",
            "'http://meet.example.edu/x' is not an https:// URL; give the meeting's secure "
            "address (https://...)",
        ),
        (
            {"event_end": "2025-10-02", "event_duration": "P1D"},
            "event_duration",
            "is given with `end`; give one of them",
        ),
        ({"event_location": "", "event_address": "Clear Water Bay"}, "event_location", None),
        ({"event_start": ""}, "event_start", "is required"),
        ({"event_duration": "soon"}, "event_duration", None),
        (
            {"event_status": "canceled"},
            "event_status",
            "'canceled' is not an event status; did you mean 'cancelled'?",
        ),
        (
            {"event_timing": "timed"},
            "event_start",
            "has no time, and the event is set to At a time: give the time it starts (like "
            "2025-11-20T18:30), or choose All day",
        ),
        (
            {"event_timing": "timed", "event_start": "2025-10-01T18:30"},
            "event_start",
            "has a time but the event has neither `end` nor `duration`; add one, like "
            "duration: PT2H",
        ),
    ],
)
def test_an_events_problem_is_shown_at_its_field(
    staff: FlaskClient, project: Path, changes: dict[str, str], field: str, message: str | None
) -> None:
    """A wrong event value comes back at its own field, in `digest check`'s words; nothing
    is written and what was typed is still there."""
    before = (project / "items.yaml").read_bytes()
    fields = {**form(staff, AEP), **changes}
    response = save(staff, AEP, fields)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    shown = field_error(page, field)
    assert len(shown) == 1, page
    if message is not None:
        assert shown == [message]
    assert input_of(page, field).get("aria-invalid") == "true"
    again = posted(page)
    for name, value in changes.items():
        if name != "event_status":  # a select shows its own options only
            assert again[name] == value
    assert (project / "items.yaml").read_bytes() == before


def test_a_time_with_an_offset_is_shown_as_text_and_kept(staff: FlaskClient, project: Path) -> None:
    """A time the browser's input cannot hold (with its offset) is shown as written, and a save
    of something else leaves it as it was."""
    path = project / "items.yaml"
    text = path.read_text().replace(
        "      start: 2025-10-01  # time not stated on the source page: all day\n",
        "      start: 2025-10-01T10:30Z\n      duration: PT2H\n",
    )
    path.write_text(text)
    page = staff.get(f"/items/{AEP}").get_data(as_text=True)
    assert posted(page)["event_timing"] == "timed"
    assert input_of(page, "event_start").get("type") == "text"
    assert input_of(page, "event_start").get("value") == "2025-10-01T10:30Z"
    fields = posted(page)
    fields["title"] = "Fireworks"
    assert save(staff, AEP, fields).status_code == 303
    after = path.read_text()
    assert event_lines(after, AEP) == event_lines(text, AEP)


def test_reverting_a_move_puts_the_event_back(staff: FlaskClient, project: Path) -> None:
    """Revert in the history undoes an event's change: the file is as it was, and the calendar
    shows the old day again (one SEQUENCE higher still: it changed twice)."""
    before = (project / "items.yaml").read_bytes()
    sequence = vevent(project, AEP)["SEQUENCE"]
    fields = form(staff, AEP)
    fields["event_start"] = "2025-10-08"
    assert save(staff, AEP, fields).status_code == 303
    page = staff.get(f"/items/{AEP}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    assert staff.post("/edits/1/revert", data={"csrf_token": token.group(1)}).status_code == 303
    assert (project / "items.yaml").read_bytes() == before
    back = vevent(project, AEP)
    assert back["DTSTART"].dt == date(2025, 10, 1)
    assert back["SEQUENCE"] == sequence + 2


def test_a_new_announcement_can_be_an_event(staff: FlaskClient, project: Path) -> None:
    """Staff add an online talk from the New announcement form: it is on the calendars."""
    fields = posted(staff.get("/items/new").get_data(as_text=True))
    assert fields["event_timing"] == "all-day"
    fields.update(
        title="Online talk",
        category="engagement",
        summary="A talk.",
        event_timing="timed",
        event_start="2025-11-25T12:30",
        event_end="2025-11-25T13:30",
        event_online="https://meet.example.edu/talk",
        action="publish",
    )
    assert staff.post("/items/new", data=fields).status_code == 303
    assert (
        (project / "items.yaml")
        .read_text()
        .endswith(
            "    summary: A talk.\n    event:\n      start: 2025-11-25T12:30\n"
            "      end: 2025-11-25T13:30\n      online: https://meet.example.edu/talk\n"
        )
    )
    added = vevent(project, "online-talk")
    assert added["DTSTART"].dt == datetime.fromisoformat("2025-11-25T12:30+08:00")


def test_an_explicit_scheduled_status_stays_when_the_event_moves(
    staff: FlaskClient, project: Path
) -> None:
    """A file that writes `status: scheduled` keeps that line when staff move the event."""
    path = project / "items.yaml"
    text = path.read_text().replace(
        "      location: HKUST\n    summary: |\n      Creating",
        "      location: HKUST\n      status: scheduled\n    summary: |\n      Creating",
        1,
    )
    path.write_text(text)
    fields = form(staff, AEP)
    assert fields["event_status"] == "scheduled"
    fields["event_start"] = "2025-10-02"
    assert save(staff, AEP, fields).status_code == 303
    assert event_lines(path.read_text(), AEP)[-1] == "      status: scheduled"
    assert path.read_text() == text.replace("start: 2025-10-01  #", "start: 2025-10-02  #", 1)
