"""An item's `event` block: what `load` makes of it, and every mistake it refuses, at its line."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from digest.errors import CatalogueError
from digest.publish import catalogue
from helpers import HEADER, item

HK = ZoneInfo("Asia/Hong_Kong")
# HEADER ends on line 14; item() writes five lines, so `event:` is line 20 and its keys follow.
EVENT_LINE = 20


def with_event(*lines: str) -> str:
    """Return a one-item catalogue whose item has an event block of the given lines."""
    block = "".join(f"      {line}\n" for line in lines)
    return HEADER + item() + "    event:\n" + block


def parse(text: str) -> catalogue.Catalogue:
    """Validate catalogue text without touching the disk."""
    return catalogue.parse(text.encode("utf-8"), Path("items.yaml"), "items.yaml")


def event(*lines: str) -> catalogue.Event:
    found = parse(with_event(*lines)).items[0].event
    assert found is not None
    return found


def problems(*lines: str) -> list[str]:
    """Return what `digest check` says about an event block that must be refused."""
    with pytest.raises(CatalogueError) as info:
        parse(with_event(*lines))
    return [str(p) for p in info.value.problems]


def test_event_line_is_where_the_helper_puts_it() -> None:
    """The line numbers these tests expect are the lines the catalogue really has."""
    lines = with_event("start: 2025-10-01").splitlines()
    assert lines[EVENT_LINE - 1] == "    event:"


def test_all_day_event_without_end_is_one_day() -> None:
    """A date with no end is one whole day: the calendar shows it on that day only."""
    found = event("start: 2025-10-01", "location: {name: Sports Hall}")
    assert (found.start, found.end, found.last_day) == (
        date(2025, 10, 1),
        date(2025, 10, 2),
        date(2025, 10, 1),
    )
    assert found.all_day
    assert found.location == catalogue.Place("Sports Hall")
    assert found.status == "scheduled"


def test_all_day_end_is_the_last_day_written() -> None:
    """`end: 2023-12-09` on a forum starting the 8th shows both days, as editors mean it."""
    found = event("start: 2023-12-08", "end: 2023-12-09", "location: Campus")
    assert found.end == date(2023, 12, 10)  # exclusive, as iCalendar's DTEND
    assert found.last_day == date(2023, 12, 9)
    assert found.location == catalogue.Place("Campus")


def test_same_day_end_is_a_one_day_event() -> None:
    """An all-day end equal to its start is the one day people wrote, not an error."""
    assert event("start: 2023-12-08", "end: 2023-12-08", "location: Campus").end == date(
        2023, 12, 9
    )


def test_times_read_in_publication_zone_unless_offset_given() -> None:
    """A time without an offset is Hong Kong time; an offset given is kept."""
    local = event(
        "start: 2025-10-01T18:30", "end: 2025-10-01T20:00", "online: https://m.example.edu/x"
    )
    assert local.start == datetime(2025, 10, 1, 18, 30, tzinfo=HK)
    assert local.end == datetime(2025, 10, 1, 20, 0, tzinfo=HK)
    assert local.online == "https://m.example.edu/x"
    assert local.location is None
    offset = event("start: 2025-10-01T10:30Z", "duration: PT1H", "location: Hall")
    assert offset.start == datetime(2025, 10, 1, 10, 30, tzinfo=UTC)
    assert offset.start.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("written", "length"),
    [
        ("PT2H", timedelta(hours=2)),
        ("PT1H30M", timedelta(minutes=90)),
        ("P1DT2H", timedelta(hours=26)),
        ("2h", timedelta(hours=2)),
        ("90 minutes", timedelta(minutes=90)),
        ("1 hour 30 min", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
    ],
)
def test_durations_in_iso_or_words(written: str, length: timedelta) -> None:
    """Every documented way to write a duration gives the same end as the editor meant."""
    found = event("start: 2025-10-01T18:00", f"duration: {written}", "location: Hall")
    assert found.end - found.start == length


def test_all_day_duration_in_days() -> None:
    """P2D on an all-day event covers two days."""
    found = event("start: 2025-10-01", "duration: P2D", "location: Hall")
    assert found.last_day == date(2025, 10, 2)


def test_location_with_address_and_online_together() -> None:
    """A hybrid event keeps its hall, its address and its meeting link."""
    found = event(
        "start: 2025-10-01T18:00",
        "duration: 2 hours",
        "location: {name: Lecture Theater A, address: 'Clear Water Bay, Hong Kong'}",
        "online: https://meet.example.edu/aep",
        "status: postponed",
    )
    assert found.location == catalogue.Place("Lecture Theater A", "Clear Water Bay, Hong Kong")
    assert found.online == "https://meet.example.edu/aep"
    assert found.status == "postponed"


def test_item_without_event_has_none() -> None:
    """Announcements stay announcements: no event block, no calendar entry."""
    assert parse(HEADER + item()).items[0].event is None


def test_offset_times_compare_as_instants() -> None:
    """An end given in another offset is compared as the same moment in time."""
    found = event("start: 2025-10-01T18:00+08:00", "end: 2025-10-01T11:00Z", "location: Hall")
    assert found.end == datetime(2025, 10, 1, 19, 0, tzinfo=timezone(timedelta(hours=8)))


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ("start: 2025-10-01T18:00", "end: 2025-10-01T17:00", "location: Hall"),
            "items.yaml:22: items[0].event.end: is before start (2025-10-01T18:00:00+08:00); "
            "an event ends after it starts",
        ),
        (
            ("start: 2025-10-01T18:00", "end: 2025-10-01T18:00", "location: Hall"),
            "items.yaml:22: items[0].event.end: is the same time as start "
            "(2025-10-01T18:00:00+08:00); an event ends after it starts",
        ),
        (
            ("start: 2025-10-02", "end: 2025-10-01", "location: Hall"),
            "items.yaml:22: items[0].event.end: 2025-10-01 is before start (2025-10-02); for an "
            "all-day event `end` is its last day (a one-day event needs no end)",
        ),
        (
            ("start: 2025-10-01", "end: 2025-10-02T10:00", "location: Hall"),
            "items.yaml:22: items[0].event.end: must be a date, like start: both dates for an "
            "all-day event, or both dates with times",
        ),
        (
            ("start: 2025-10-01T10:00", "end: 2025-10-02", "location: Hall"),
            "items.yaml:22: items[0].event.end: must be a date and time, like start: both dates "
            "for an all-day event, or both dates with times",
        ),
        (
            (
                "start: 2025-10-01T10:00",
                "end: 2025-10-01T12:00",
                "duration: PT2H",
                "location: Hall",
            ),
            "items.yaml:23: items[0].event.duration: is given with `end`; give one of them",
        ),
        (
            ("start: 2025-10-01T10:00", "location: Hall"),
            "items.yaml:21: items[0].event.start: has a time but the event has neither `end` "
            "nor `duration`; add one, like duration: PT2H",
        ),
        (
            ("start: 2025-10-01",),
            "items.yaml:21: items[0].event: gives neither `location` nor `online`; say where "
            "people go, like location: {name: Lecture Theater A}, or online: https://... for a "
            "web meeting",
        ),
        (
            ("start: 2025-10-01", "online: http://meet.example.edu/aep"),
            "items.yaml:22: items[0].event.online: 'http://meet.example.edu/aep' is not an "
            "https:// URL; give the meeting's secure address (https://...)",
        ),
        (
            ("start: 2025-10-01", "online: meet.example.edu/aep"),
            "items.yaml:22: items[0].event.online: 'meet.example.edu/aep' is not an absolute "
            "http(s) URL (like https://example.edu/page)",
        ),
        (
            ("start: 2025-10-01", "location: Hall", "room: 101"),
            "items.yaml:23: items[0].event.room: unknown key 'room'; known keys: start, end, "
            "duration, location, online, status",
        ),
        (
            ("start: 2025-10-01", "location: Hall", "statu: cancelled"),
            "items.yaml:23: items[0].event.statu: unknown key 'statu'; did you mean 'status'?",
        ),
        (
            ("start: 2025-10-01", "location: Hall", "status: canceled"),
            "items.yaml:23: items[0].event.status: 'canceled' is not an event status; did you "
            "mean 'cancelled'?",
        ),
        (
            ("start: 2025-10-01", "location: Hall", "status: over"),
            "items.yaml:23: items[0].event.status: 'over' is not an event status; use "
            "scheduled, cancelled, postponed",
        ),
        (
            ("start: 2025-10-01", "location: {address: 1 University Road}"),
            "items.yaml:22: items[0].event.location.name: is required",
        ),
        (
            ("start: 2025-10-01", "location: {name: Hall, floor: 2}"),
            "items.yaml:22: items[0].event.location.floor: unknown key 'floor'; known keys: "
            "name, address",
        ),
        (
            ("location: Hall",),
            "items.yaml:21: items[0].event.start: is required",
        ),
        (
            ("start: next Friday", "location: Hall"),
            "items.yaml:21: items[0].event.start: 'next Friday' is not a date or a date and time "
            "(use YYYY-MM-DD for an all-day event, or an ISO 8601 date-time like "
            "2025-11-19T18:30)",
        ),
        (
            ("start: 2025-02-30", "location: Hall"),
            "items.yaml:21: items[0].event.start: '2025-02-30' is not a real date (day is out "
            "of range for month)",
        ),
        (
            ("start: 2025-10-01T10:00", "duration: soon", "location: Hall"),
            "items.yaml:22: items[0].event.duration: 'soon' is not a duration; write it like "
            "PT2H, PT1H30M or P1D (ISO 8601), or like 2 hours, 90 minutes, 1 day",
        ),
        (
            ("start: 2025-10-01T10:00", "duration: PT0M", "location: Hall"),
            "items.yaml:22: items[0].event.duration: 'PT0M' is no time at all; an event lasts "
            "a while",
        ),
        (
            ("start: 2025-10-01T10:00", "duration: P400D", "location: Hall"),
            "items.yaml:22: items[0].event.duration: 'P400D' is longer than 366 days; check it",
        ),
        (
            ("start: 2025-10-01", "duration: PT3H", "location: Hall"),
            "items.yaml:22: items[0].event.duration: is not a whole number of days, and this "
            "event's start is a date (an all-day event); give days, like P2D, or give start a "
            "time",
        ),
    ],
)
def test_event_mistakes_are_located(lines: tuple[str, ...], expected: str) -> None:
    """Each mistake in an event block is named at its own line, with the fix."""
    assert problems(*lines) == [expected]


def test_event_that_is_not_a_mapping_is_refused() -> None:
    """`event: 2025-10-01` says what an event block looks like."""
    text = HEADER + item(event="2025-10-01")
    with pytest.raises(CatalogueError) as info:
        parse(text)
    assert [str(p) for p in info.value.problems] == [
        "items.yaml:20: items[0].event: expected a mapping of keys, found '2025-10-01'"
    ]


def test_comment_cutting_a_location_is_located() -> None:
    """`location: Room 4 #2 building` would lose half the place: it must be quoted instead."""
    assert problems("start: 2025-10-01", "location: Room 4 #2 building") == [
        "items.yaml:22: items[0].event.location: ' #' starts a YAML comment, so this value was "
        "cut to 'Room 4'; put the whole value in quotes: location: \"Room 4 #2 building\""
    ]
