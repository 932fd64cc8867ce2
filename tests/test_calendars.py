"""The calendars `digest build` writes: all.ics, one per category, one per event, and SEQUENCE."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import icalendar
import pytest
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.publish import calendars, catalogue, feeds
from digest.publish.catalogue import Place
from helpers import build_text, item, load_text, snapshot, yaml_catalogue

Run = Callable[..., Result]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
KHAL = shutil.which("khal")

EVENING = (
    "{start: 2025-10-01T18:30, duration: 2h, "
    "location: {name: Sports Hall, address: Clear Water Bay}}"
)
FORUM = "{start: 2023-12-08, end: 2023-12-09, online: 'https://meet.example.edu/forum'}"


def catalogue_text(evening: str = EVENING, title: str = "AEP evening") -> str:
    """Return a catalogue with a timed event, an all-day one in another category, and news."""
    return yaml_catalogue(
        item("aep-evening", title, "2025-09-15", event=evening),
        item("forum", "AI forum", "2023-11-01", category="people", event=FORUM),
        item("news", "Plain news", "2025-11-19"),
    )


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every build in these tests happens at NOW."""
    monkeypatch.setattr("digest.cli._now", lambda: NOW)


def ics_files(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if name.endswith(".ics")}


def vevents(data: bytes) -> list[icalendar.Event]:
    return list(icalendar.Calendar.from_ical(data).walk("VEVENT"))


def by_uid(data: bytes) -> dict[str, icalendar.Event]:
    return {str(e["UID"]): e for e in vevents(data)}


def test_calendars_written_for_categories_with_events(tmp_path: Path) -> None:
    """Subscribers find all.ics, a calendar per category with events, and a file per event."""
    files = build_text(catalogue_text(), tmp_path)
    assert sorted(ics_files(files)) == [
        "all.ics",
        "events/aep-evening.ics",
        "events/forum.ics",
        "people.ics",
        "research.ics",
    ]
    assert [str(e["SUMMARY"]) for e in vevents(files["all.ics"])] == ["AI forum", "AEP evening"]
    assert [str(e["SUMMARY"]) for e in vevents(files["people.ics"])] == ["AI forum"]


def test_catalogue_without_events_writes_no_calendar(tmp_path: Path) -> None:
    """A publication with no events publishes no empty calendars and no record."""
    files = build_text(yaml_catalogue(), tmp_path)
    assert not [name for name in files if name.endswith(".ics") or name.startswith("events/")]


def test_every_ics_parses_and_round_trips(tmp_path: Path) -> None:
    """Every calendar file is iCalendar that a parser reads back to the same bytes."""
    for name, data in ics_files(build_text(catalogue_text(), tmp_path)).items():
        parsed = icalendar.Calendar.from_ical(data)
        assert parsed.to_ical() == data, name
        assert data.endswith(b"END:VCALENDAR\r\n"), name
        assert all(len(line) <= 75 for line in data.split(b"\r\n")), name


def test_calendar_header_and_time_zone(tmp_path: Path) -> None:
    """Calendar apps show the calendar's name, refresh twice a day and know the zone's rules."""
    data = build_text(catalogue_text(), tmp_path)["research.ics"]
    cal = icalendar.Calendar.from_ical(data)
    assert str(cal["X-WR-CALNAME"]) == "Campus News: Research"
    assert b"REFRESH-INTERVAL;VALUE=DURATION:PT12H\r\n" in data
    assert b"X-PUBLISHED-TTL:PT12H\r\n" in data
    assert str(cal["SOURCE"]) == "https://news.example.edu/feeds/research.ics"
    zones = list(cal.walk("VTIMEZONE"))
    assert [str(z["TZID"]) for z in zones] == ["Asia/Hong_Kong"]


def test_timed_event_fields(tmp_path: Path) -> None:
    """An evening is at 18:30-20:30 Hong Kong time, at its hall, with its UID and page."""
    files = build_text(catalogue_text(), tmp_path)
    event = vevents(files["events/aep-evening.ics"])[0]
    assert str(event["UID"]) == feeds.entry_id(
        load_text(catalogue_text(), tmp_path).publication, "aep-evening"
    )
    assert str(event["UID"]) == "tag:news.example.edu,2025:aep-evening"
    start, end = event.decoded("DTSTART"), event.decoded("DTEND")
    assert start.astimezone(UTC) == datetime(2025, 10, 1, 10, 30, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2025, 10, 1, 12, 30, tzinfo=UTC)
    assert b"DTSTART;TZID=Asia/Hong_Kong:20251001T183000\r\n" in files["events/aep-evening.ics"]
    assert str(event["LOCATION"]) == "Sports Hall, Clear Water Bay"
    assert str(event["STATUS"]) == "CONFIRMED"
    assert event.decoded("DTSTAMP") == datetime(2025, 9, 14, 16, 0, tzinfo=UTC)
    assert event.decoded("LAST-MODIFIED") == event.decoded("DTSTAMP")
    assert event.decoded("SEQUENCE") == 0
    assert str(event["URL"]) == "https://news.example.edu/feeds/archive/2025-09.html#aep-evening"
    assert str(event["DESCRIPTION"]) == "A summary."


def test_all_day_event_ends_the_day_after_its_last_day(tmp_path: Path) -> None:
    """A forum on 8-9 December is two whole days: DTEND is the 10th, as iCalendar counts."""
    event = vevents(build_text(catalogue_text(), tmp_path)["events/forum.ics"])[0]
    assert event.decoded("DTSTART") == date(2023, 12, 8)
    assert event.decoded("DTEND") == date(2023, 12, 10)
    assert str(event["LOCATION"]) == "https://meet.example.edu/forum"
    assert "Online: https://meet.example.edu/forum" in str(event["DESCRIPTION"])


def test_updated_sets_dtstamp_and_link_sets_url(tmp_path: Path) -> None:
    """A correction's time stamps the event, and the item's own link is the event's URL."""
    text = yaml_catalogue(
        item(
            "talk",
            "Talk",
            "2025-09-15",
            updated="2025-09-20T10:00",
            link="https://news.example.edu/talk",
            event=EVENING,
        )
    )
    event = vevents(build_text(text, tmp_path)["all.ics"])[0]
    assert event.decoded("DTSTAMP") == datetime(2025, 9, 20, 2, 0, tzinfo=UTC)
    assert event.decoded("CREATED") == datetime(2025, 9, 14, 16, 0, tzinfo=UTC)
    assert str(event["URL"]) == "https://news.example.edu/talk"


@pytest.mark.parametrize(
    ("status", "shown", "summary"),
    [
        ("cancelled", "CANCELLED", "Cancelled: AEP evening"),
        ("postponed", "TENTATIVE", "Postponed: AEP evening"),
    ],
)
def test_cancelled_and_postponed_say_so(
    tmp_path: Path, status: str, shown: str, summary: str
) -> None:
    """A cancelled event shows as cancelled under the same UID; a postponed one as tentative."""
    before = by_uid(build_text(catalogue_text(), tmp_path)["all.ics"])
    evening = EVENING[:-1] + f", status: {status}}}"
    after = by_uid(build_text(catalogue_text(evening), tmp_path)["all.ics"])
    assert before.keys() == after.keys()
    changed = after["tag:news.example.edu,2025:aep-evening"]
    assert str(changed["STATUS"]) == shown
    assert str(changed["SUMMARY"]) == summary


def test_title_fix_keeps_every_uid(tmp_path: Path) -> None:
    """Fixing a title must not make a calendar show the event twice."""
    before = build_text(catalogue_text(title="AEP evenign"), tmp_path)
    after = build_text(catalogue_text(title="AEP evening"), tmp_path)
    for name in ics_files(before):
        assert by_uid(before[name]).keys() == by_uid(after[name]).keys(), name
    assert (
        by_uid(after["all.ics"])["tag:news.example.edu,2025:aep-evening"].decoded("SEQUENCE") == 0
    )


def test_calendar_keeps_the_newest_thousand(tmp_path: Path) -> None:
    """A calendar holds the 1,000 latest events; every one keeps its own file."""
    many = [
        item(
            f"e{n}",
            f"Event {n}",
            "2025-01-01",
            event=f"{{start: {date.fromordinal(730000 + n)}, location: Hall}}",
        )
        for n in range(calendars.CALENDAR_LIMIT + 1)
    ]
    files = build_text(yaml_catalogue(*many), tmp_path)
    uids = by_uid(files["all.ics"])
    assert len(uids) == calendars.CALENDAR_LIMIT
    assert "tag:news.example.edu,2025:e0" not in uids
    assert "tag:news.example.edu,2025:e1000" in uids
    assert "events/e0.ics" in files


# -- SEQUENCE, through `digest build` ---------------------------------------------------------


def sequence_of(directory: Path, uid: str = "tag:news.example.edu,2025:aep-evening") -> int:
    return int(by_uid((directory / "all.ics").read_bytes())[uid].decoded("SEQUENCE"))


def test_time_change_raises_sequence_by_one(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """Moving an event makes calendar apps update it: same UID, SEQUENCE one higher, each time."""
    write(catalogue_text())
    assert run("build").exit_code == 0
    assert sequence_of(tmp_path / "feeds") == 0
    write(catalogue_text(EVENING.replace("2025-10-01T18:30", "2025-10-08T18:30")))
    assert run("build").exit_code == 0
    feeds_dir = tmp_path / "feeds"
    assert sequence_of(feeds_dir) == 1
    event = by_uid((feeds_dir / "events/aep-evening.ics").read_bytes())
    assert event["tag:news.example.edu,2025:aep-evening"].decoded("SEQUENCE") == 1
    # The forum did not change: its number stays.
    assert sequence_of(feeds_dir, "tag:news.example.edu,2025:forum") == 0
    write(
        catalogue_text(
            EVENING.replace("Sports Hall", "Lecture Theater A").replace(
                "2025-10-01T18:30", "2025-10-08T18:30"
            )
        )
    )
    assert run("build").exit_code == 0
    assert sequence_of(feeds_dir) == 2


def test_rebuild_with_no_change_keeps_the_bytes(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A rebuild of a moved event, without the build cache, writes the same files as before."""
    write(catalogue_text())
    run("build")
    write(catalogue_text(EVENING.replace("18:30", "19:00")))
    run("build")
    before = snapshot(tmp_path / "feeds")
    shutil.rmtree(tmp_path / ".digest")  # no build cache: every file is rendered again
    result = run("build")
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path / "feeds") == before
    assert run("build", "--check").exit_code == 0


def test_title_change_keeps_sequence(run: Run, write: Callable[..., Path], tmp_path: Path) -> None:
    """A corrected title is not a new appointment: SEQUENCE stays, the summary changes."""
    write(catalogue_text(title="AEP evenign"))
    run("build")
    write(catalogue_text(title="AEP evening"))
    run("build")
    assert sequence_of(tmp_path / "feeds") == 0


def test_fresh_clone_of_the_output_reproduces_the_numbers(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """The record travels with the published folder: a copy checks clean, and builds the same."""
    write(catalogue_text())
    run("build")
    write(catalogue_text(EVENING.replace("18:30", "19:00")))
    run("build")
    shutil.copytree(tmp_path / "feeds", tmp_path / "clone")
    shutil.rmtree(tmp_path / ".digest")
    check = run("build", "--check", "-o", "clone")
    assert check.exit_code == 0, check.output
    assert sequence_of(tmp_path / "clone") == 1


def test_output_without_record_starts_at_zero(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """Built into an empty folder, every event starts at SEQUENCE 0."""
    write(catalogue_text(EVENING.replace("18:30", "19:00")))
    run("build")
    assert sequence_of(tmp_path / "feeds") == 0
    record = (tmp_path / "feeds" / calendars.RECORD).read_text()
    assert '"aep-evening": [' in record


def test_damaged_record_stops_the_build(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A record that is not digest's is reported with the fix, and nothing is written."""
    write(catalogue_text())
    run("build")
    (tmp_path / "feeds" / calendars.RECORD).write_text("{not json")
    shutil.rmtree(tmp_path / ".digest")
    before = snapshot(tmp_path / "feeds")
    result = run("build")
    assert result.exit_code == 1
    assert "events/sequence.json in the output folder is not a record digest wrote" in result.stderr
    assert "delete it to start every event's SEQUENCE again at 0" in result.stderr
    assert snapshot(tmp_path / "feeds") == before


# -- a real calendar client ------------------------------------------------------------------


def khal(home: Path, zone: str, *args: str) -> str:
    """Run khal with a throwaway configuration and calendar in `home`, in time zone `zone`."""
    config = home / "config"
    if not config.exists():
        (home / "vdir").mkdir(parents=True)
        config.write_text(
            "[calendars]\n[[events]]\n"
            f"path = {home / 'vdir'}\ntype = calendar\n"
            "[locale]\ntimeformat = %H:%M\ndateformat = %Y-%m-%d\n"
            "longdateformat = %Y-%m-%d\ndatetimeformat = %Y-%m-%d %H:%M\n"
            "longdatetimeformat = %Y-%m-%d %H:%M\n"
            f"local_timezone = {zone}\ndefault_timezone = {zone}\n"
            f"[sqlite]\npath = {home / 'khal.db'}\n"
        )
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "TZ": zone, "LANG": "C.UTF-8"}
    done = subprocess.run(
        [KHAL or "khal", "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


FORUM_LISTED = "2023-12-08 | 2023-12-09 | AI forum | https://meet.example.edu/forum | CONFIRMED"


def khal_list(home: Path, zone: str) -> list[str]:
    listed = khal(
        home,
        zone,
        "list",
        "--once",
        "-df",
        "",
        "-f",
        "{start} | {end} | {title} | {location} | {status}",
        "2023-01-01",
        "2026-12-31",
    )
    return [line.rstrip() for line in listed.splitlines() if line.strip()]


@pytest.mark.skipif(KHAL is None, reason="needs Debian's khal (.ci/run installs it)")
@pytest.mark.parametrize(
    ("zone", "evening"),
    [
        ("Asia/Hong_Kong", "2025-10-01 18:30 | 2025-10-01 20:30"),
        ("Europe/London", "2025-10-01 11:30 | 2025-10-01 13:30"),
    ],
)
def test_khal_imports_every_calendar(tmp_path: Path, zone: str, evening: str) -> None:
    """A real calendar client reads each .ics and lists the events at the right local times."""
    files = ics_files(build_text(catalogue_text(), tmp_path))
    for name, data in files.items():
        home = tmp_path / "khal" / name.replace("/", "-")
        path = tmp_path / "ics" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        khal(home, zone, "import", "--batch", "-a", "events", str(path))
        listed = khal_list(home, zone)
        expected = {
            "forum": FORUM_LISTED,
            "evening": f"{evening} | AEP evening | Sports Hall, Clear Water Bay | CONFIRMED",
        }
        holds = {
            "all.ics": ["forum", "evening"],
            "people.ics": ["forum"],
            "research.ics": ["evening"],
            "events/forum.ics": ["forum"],
            "events/aep-evening.ics": ["evening"],
        }
        wanted = [expected[k] for k in holds[name]]
        assert listed == wanted, name


@pytest.mark.skipif(KHAL is None, reason="needs Debian's khal (.ci/run installs it)")
def test_khal_sees_a_cancellation_under_the_same_uid(tmp_path: Path) -> None:
    """Importing the cancelled calendar over the old one updates the event instead of adding one."""
    home = tmp_path / "khal"
    for n, evening in enumerate((EVENING, EVENING[:-1] + ", status: cancelled}")):
        folder = tmp_path / f"build-{n}"
        folder.mkdir()
        path = folder / "all.ics"
        path.write_bytes(build_text(catalogue_text(evening), folder)["all.ics"])
        khal(home, "Asia/Hong_Kong", "import", "--batch", "-a", "events", str(path))
    assert khal_list(home, "Asia/Hong_Kong") == [
        FORUM_LISTED,
        "2025-10-01 18:30 | 2025-10-01 20:30 | Cancelled: AEP evening | Sports Hall, Clear Water "
        "Bay | CANCELLED",
    ]


def test_drafts_and_scheduled_events_are_on_no_calendar(tmp_path: Path) -> None:
    """An event announced only later, or still a draft, is on no calendar and has no file yet."""
    files = build_text(
        yaml_catalogue(
            item("soon", "Soon", "2026-02-01", event=EVENING),
            item("hidden", "Hidden", "2025-09-01", draft="true", event=EVENING),
            item("public", "Public", "2025-09-01", event=EVENING),
        ),
        tmp_path,
    )
    assert list(by_uid(files["all.ics"])) == ["tag:news.example.edu,2025:public"]
    assert sorted(n for n in files if n.startswith("events/")) == [
        "events/public.ics",
        "events/sequence.json",
    ]


# Titles as catalogue.load lets them through: one line, no control characters.
TITLES = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    min_size=1,
    max_size=80,
).filter(lambda t: t.strip() == t and t)


@settings(max_examples=60, deadline=None)
@given(title=TITLES, place=TITLES)
def test_any_title_and_place_round_trip_through_ics_and_json_ld(title: str, place: str) -> None:
    """Whatever an editor types, the calendar and the search engines read back exactly that."""
    cat = catalogue_of(yaml_catalogue(item("talk", "Talk", "2025-09-15", event=EVENING)))
    event = cat.items[0].event
    assert event is not None
    talk = dataclasses.replace(
        cat.items[0],
        title=title,
        event=dataclasses.replace(event, location=Place(place)),
    )
    record = calendars.sequences([talk], {})
    data = calendars.Writer(cat, record, lambda i: "https://news.example.edu/feeds/").event(talk)
    parsed = icalendar.Calendar.from_ical(data)
    assert parsed.to_ical() == data
    vevent = next(iter(parsed.walk("VEVENT")))
    assert str(vevent["SUMMARY"]) == title
    assert str(vevent["LOCATION"]) == place
    text = calendars.json_ld(cat.publication, [(talk, "https://news.example.edu/feeds/")])
    assert text is not None
    assert "<" not in text
    assert ">" not in text
    assert json.loads(text)["@graph"][0]["name"] == title
    assert json.loads(text)["@graph"][0]["location"]["name"] == place


def catalogue_of(text: str) -> catalogue.Catalogue:
    return catalogue.parse(text.encode("utf-8"), Path("items.yaml"), "items.yaml")
