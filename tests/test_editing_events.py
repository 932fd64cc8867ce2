"""Writing an item's `event:` block back into items.yaml: key by key in a block, the whole block
when added or in braces, removed with its lines; every other line byte-identical, and the event
read back exactly as saved (by the catalogue and by PyYAML's own reading)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.errors import CatalogueError
from digest.publish import catalogue, editing
from test_editing import TRICKY, append_to, catalogue_text, changed_lines, replace_in

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "items.yaml"
RAW = BUNDLED.read_bytes()
LOADED = catalogue.parse(RAW, BUNDLED, BUNDLED.name)
INDEX = {item.id: n for n, item in enumerate(LOADED.items)}
AEP = INDEX["aep-fireworks-with-the-provost-2025"]  # a block event, with comments in it
SHANGHAI = INDEX["shanghai-center-opening"]  # a location in braces, with an address
FORUM = INDEX["ai-cooperation-and-governance-forum-2023"]  # start and end
PLAIN = INDEX["medical-school-preparations"]  # no event
HK = ZoneInfo("Asia/Hong_Kong")


def outside_event(raw: bytes, index: int) -> list[str]:
    """Return the file's lines without item `index`'s event block (its key and deeper lines)."""
    lines = raw.decode().splitlines(keepends=True)
    items = catalogue.parse(raw, BUNDLED, BUNDLED.name).items
    start = items[index].line - 1
    item = lines[start : items[index + 1].line - 1 if index + 1 < len(items) else None]
    found = next((n for n, line in enumerate(item) if line.strip() == "event:"), None)
    if found is None:
        found = next(
            (n for n, line in enumerate(item) if line.lstrip().startswith("event: {")), None
        )
        if found is None:
            return lines
        return lines[: start + found] + lines[start + found + 1 :]
    indent = len(item[found]) - len(item[found].lstrip())
    end = found + 1
    while end < len(item) and (
        item[end].strip() and len(item[end]) - len(item[end].lstrip()) > indent
    ):
        end += 1
    return lines[: start + found] + lines[start + end :]


def test_changing_an_events_day_changes_only_that_line() -> None:
    """Moving an event rewrites its start line alone, keeping the comment after it."""
    edited = replace_in(RAW, BUNDLED, AEP, {"event": {"start": "2025-10-08", "location": "HKUST"}})
    assert changed_lines(RAW, edited.raw) == [
        (
            "replace",
            ["      start: 2025-10-01  # time not stated on the source page: all day\n"],
            ["      start: 2025-10-08  # time not stated on the source page: all day\n"],
        )
    ]
    event = edited.catalogue.items[AEP].event
    assert event == catalogue.Event(date(2025, 10, 8), date(2025, 10, 9), catalogue.Place("HKUST"))


def test_cancelling_adds_a_status_line_and_scheduled_removes_it() -> None:
    """Cancelled is one new line after the place; back to scheduled (the default) removes it."""
    values = {"start": "2025-10-01", "location": "HKUST", "status": "cancelled"}
    edited = replace_in(RAW, BUNDLED, AEP, {"event": values})
    assert changed_lines(RAW, edited.raw) == [("insert", [], ["      status: cancelled\n"])]
    again = replace_in(edited.raw, BUNDLED, AEP, {"event": {**values, "status": "scheduled"}})
    assert again.raw == RAW


def test_an_end_is_removed_with_its_line_and_comment() -> None:
    """Emptying an all-day event's end removes that line, the comments around it stay."""
    edited = replace_in(
        RAW, BUNDLED, FORUM, {"event": {"start": "2023-12-08", "location": "HKUST"}}
    )
    assert changed_lines(RAW, edited.raw) == [
        ("delete", ["      end: 2023-12-09  # the last day (8-9 December 2023)\n"], [])
    ]


def test_a_location_in_braces_stays_in_braces() -> None:
    """A place the file wrote as {name, address} is rewritten on its one line, in braces."""
    values = {"start": "2025-01-22", "location": "Shanghai AI Tower #2", "address": "West Bund"}
    edited = replace_in(RAW, BUNDLED, SHANGHAI, {"event": values})
    assert changed_lines(RAW, edited.raw) == [
        (
            "replace",
            [
                '      location: {name: Shanghai AI Tower, address: "West Bund, Xuhui District, '
                'Shanghai"}\n'
            ],
            ['      location: {name: "Shanghai AI Tower #2", address: "West Bund"}\n'],
        )
    ]


def test_removing_an_event_removes_its_block_only() -> None:
    """No event any more: the block's lines go, every other line stays."""
    edited = replace_in(RAW, BUNDLED, SHANGHAI, {"event": None})
    assert edited.catalogue.items[SHANGHAI].event is None
    [(kind, old, new)] = changed_lines(RAW, edited.raw)
    assert (kind, new) == ("delete", [])
    assert [line.strip().split(":")[0] for line in old] == ["event", "start", "location"]


def test_an_event_in_braces_is_rewritten_as_a_block() -> None:
    """An event written `event: {...}` becomes a block when it changes (the docs say so)."""
    text = RAW.decode().replace(
        "    event:\n      start: 2024-11-23  # time not stated on the source page: all day\n"
        "      location: HKUST campus\n",
        "    event: {start: 2024-11-23, location: HKUST campus}\n",
    )
    index = INDEX["jensen-huang-innovation-showcase-visit"]
    edited = replace_in(
        text.encode(), BUNDLED, index, {"event": {"start": "2024-11-24", "location": "HKUST"}}
    )
    assert changed_lines(text.encode(), edited.raw) == [
        (
            "replace",
            ["    event: {start: 2024-11-23, location: HKUST campus}\n"],
            ["    event:\n", "      start: 2024-11-24\n", "      location: HKUST\n"],
        )
    ]


def test_an_event_added_to_a_new_item_is_a_block() -> None:
    """A new item with an event gets its block after its other keys, two spaces in."""
    values: dict[str, editing.Value] = {
        "id": "talk",
        "title": "Talk",
        "date": "2025-11-01",
        "category": "engagement",
        "summary": "S",
        "event": {
            "start": "2025-11-20T18:30",
            "end": "2025-11-20T20:00",
            "online": "https://m.edu/x",
        },
    }
    edited = append_to(RAW, BUNDLED, values)
    assert edited.raw.decode().endswith(
        "    summary: S\n    event:\n      start: 2025-11-20T18:30\n"
        "      end: 2025-11-20T20:00\n      online: https://m.edu/x\n"
    )
    event = edited.catalogue.items[-1].event
    assert event is not None
    assert event.start == datetime(2025, 11, 20, 18, 30, tzinfo=HK)


def test_a_block_event_indented_by_four_keeps_four() -> None:
    """Keys added to an event indented by four spaces are indented by four, like their peers."""
    text = RAW.decode().replace(
        "      start: 2025-10-01  # time not stated on the source page: all day\n"
        "      # place not stated on the source page\n      location: HKUST\n",
        "        start: 2025-10-01\n        location: HKUST\n",
    )
    values = {"start": "2025-10-01", "location": "HKUST", "address": "Clear Water Bay"}
    edited = replace_in(text.encode(), BUNDLED, AEP, {"event": {**values, "status": "postponed"}})
    assert changed_lines(text.encode(), edited.raw) == [
        (
            "replace",
            ["        location: HKUST\n"],
            [
                "        location:\n",
                "            name: HKUST\n",
                "            address: Clear Water Bay\n",
                "        status: postponed\n",
            ],
        )
    ]


def test_an_unknown_event_key_is_refused() -> None:
    """A caller's typo in an event key is an error naming the known keys, not a silent loss."""
    with pytest.raises(editing.EditError, match="an event has no key 'room'; known keys: start"):
        replace_in(RAW, BUNDLED, AEP, {"event": {"start": "2025-10-01", "room": "101"}})


def test_an_events_problems_are_named_as_the_form_names_its_fields() -> None:
    """Check problems inside the event map to the event's own fields."""
    with pytest.raises(CatalogueError) as caught:
        replace_in(RAW, BUNDLED, AEP, {"event": {"start": "2025-10-01", "address": "Somewhere"}})
    fields, other = editing.problems_by_field(caught.value, AEP)
    assert fields == {"event.location": ["is required"]}
    assert other == []
    with pytest.raises(CatalogueError) as caught:
        replace_in(RAW, BUNDLED, AEP, {"event": {"start": "2025-10-01"}})
    fields, _ = editing.problems_by_field(caught.value, AEP)
    assert list(fields) == ["event.location"]


PLACES = st.one_of(
    st.sampled_from([*TRICKY[:-1], "Hall #2: 'A'", '"Quoted" hall', "會議室 A: 東翼", "a, b"]),
    catalogue_text(),
)


def moments(all_day: bool) -> st.SearchStrategy[tuple[str, date | datetime]]:
    """A start as the form writes it, and what the catalogue reads it as."""
    days = st.dates(date(2020, 1, 1), date(2030, 12, 31))
    if all_day:
        return days.map(lambda d: (d.isoformat(), d))
    times = st.tuples(days, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
    return times.map(
        lambda t: (
            f"{t[0].isoformat()}T{t[1]:02d}:{t[2]:02d}",
            datetime(t[0].year, t[0].month, t[0].day, t[1], t[2], tzinfo=HK),
        )
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    all_day=st.booleans(),
    name=PLACES,
    address=st.one_of(st.none(), PLACES),
    online=st.booleans(),
    status=st.sampled_from(catalogue.EVENT_STATUSES),
    target=st.sampled_from(["block", "braces", "none", "new"]),
)
def test_random_events_always_load_back_as_saved(
    data: st.DataObject,
    all_day: bool,
    name: str,
    address: str | None,
    online: bool,
    status: str,
    target: str,
) -> None:
    """Whatever place, address and times staff type, the event loads back exactly, and no line
    outside its block changes."""
    start, moment = data.draw(moments(all_day))
    length = data.draw(st.integers(0, 3) if all_day else st.integers(1, 300))
    event: dict[str, str] = {"start": start, "location": name, "status": status}
    if address is not None:
        event["address"] = address
    if online:
        event["online"] = "https://meet.example.edu/room?id=1"
    if all_day:
        last = moment + timedelta(days=length)
        if length:
            event["end"] = last.isoformat()  # type: ignore[union-attr]
        end: date | datetime = last + timedelta(days=1)
    else:
        event["duration"] = f"{length} minutes"
        end = moment + timedelta(minutes=length)
    if target == "new":
        values = {"id": "n", "title": "N", "date": "2025-01-01", "category": "visit"}
        edited = append_to(RAW, BUNDLED, {**values, "summary": "S", "event": event})
        index = len(LOADED.items)
        assert edited.raw.startswith(RAW)
    else:
        index = {"block": AEP, "braces": SHANGHAI, "none": PLAIN}[target]
        edited = replace_in(RAW, BUNDLED, index, {"event": event})
        assert outside_event(edited.raw, index) == outside_event(RAW, index)
    got = edited.catalogue.items[index].event
    place = catalogue.Place(
        str(editing.normal("location", name)),
        editing.normal("address", address) if address else None,  # type: ignore[arg-type]
    )
    online_url = event.get("online")
    assert got == catalogue.Event(moment, end, place, online_url, status)
    read = yaml.safe_load(edited.raw)["items"][index]["event"]  # PyYAML's YAML 1.1 types
    where = read["location"]
    assert (where if isinstance(where, str) else where["name"]) == place.name
    if address is not None:
        assert where["address"] == place.address
    assert str(read["start"]).replace(" ", "T")[: len(start)] == start
    assert editing.values_at(edited.raw, edited.catalogue, index)["event"] == editing.normal(
        "event", event
    )


def test_a_block_location_stays_a_block() -> None:
    """A place written as name: and address: lines keeps that form, at its own indentation."""
    text = RAW.decode().replace(
        '      location: {name: Shanghai AI Tower, address: "West Bund, Xuhui District, '
        'Shanghai"}\n',
        "      location:\n          name: Shanghai AI Tower\n          address: 'West Bund'\n",
    )
    values = {"start": "2025-01-22", "location": "上海 AI Tower: 西岸", "address": "West Bund #1"}
    edited = replace_in(text.encode(), BUNDLED, SHANGHAI, {"event": values})
    assert changed_lines(text.encode(), edited.raw) == [
        (
            "replace",
            [
                "          name: Shanghai AI Tower\n",
                "          address: 'West Bund'\n",
            ],
            [
                '          name: "上海 AI Tower: 西岸"\n',
                "          address: 'West Bund #1'\n",
            ],
        )
    ]
