"""Writing a month's issue (`newsletter.issues."YYYY-MM"`) back into items.yaml: only the month's
lines change, and the issue reads back as exactly what staff saved."""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.app import editing as service
from digest.app import settings as app_settings
from digest.errors import CatalogueError
from digest.months import Month
from digest.publish import catalogue, editing, issue_editing
from digest.publish.issue_editing import IssueValues
from test_editing import catalogue_text, paragraphs

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "items.yaml"
RICH = ROOT / "tests" / "data" / "rich.yaml"
SHAPED = ROOT / "tests" / "data" / "shaped.yaml"
NOVEMBER = (
    "medical-school-preparations",
    "talk-william-mobley-empathy-and-compassion",
    "gptx-collaboration",
)
NOW = datetime(2025, 12, 1, 4, tzinfo=UTC)


def write(source: Path, month: str, values: IssueValues, raw: bytes | None = None) -> bytes:
    """Write `values` as `month`'s issue of the catalogue `source` (or of `raw`)."""
    raw = source.read_bytes() if raw is None else raw
    before = catalogue.parse(raw, source, source.name)
    return issue_editing.write_issue(raw, before, month, values).raw


def plan_of(raw: bytes, source: Path, month: str) -> IssueValues:
    """Return the month's issue as the catalogue `raw` reads."""
    loaded = catalogue.parse(raw, source, source.name)
    assert loaded.newsletter is not None
    plan = loaded.newsletter.plan(Month.parse(month))
    return IssueValues(plan.intro, plan.items, plan.subject) if plan else IssueValues()


def changed_lines(before: bytes, after: bytes) -> tuple[list[str], list[str]]:
    """Return the lines taken out and put in, from a line diff of the two files."""
    old = before.decode().splitlines(keepends=True)
    new = after.decode().splitlines(keepends=True)
    removed, added = [], []
    for tag, a1, a2, b1, b2 in difflib.SequenceMatcher(
        None, old, new, autojunk=False
    ).get_opcodes():
        if tag != "equal":
            removed += old[a1:a2]
            added += new[b1:b2]
    return removed, added


def ids_of(source: Path, month: str) -> tuple[str, ...]:
    """Return three published ids that `month`'s issue may list, in the date rule's order."""
    loaded = catalogue.load(source)
    end = Month.parse(month).shift(1).start(loaded.publication.tz)
    return tuple(i.id for i in loaded.published(NOW) if i.date < end)[:3]


@pytest.mark.parametrize("source", [BUNDLED, RICH, SHAPED], ids=["bundled", "rich", "shaped"])
@pytest.mark.parametrize("month", ["2025-11", "2025-12", "2026-01"])
def test_an_issue_changes_only_its_own_lines(source: Path, month: str) -> None:
    """Saving a month's issue adds or replaces only that month's lines; the rest is unchanged."""
    raw = source.read_bytes()
    ids = tuple(reversed(ids_of(source, month)))
    values = IssueValues('From the Provost: "thanks" #1\n\nSecond line.', ids, "Hi {month:%B}")
    after = write(source, month, values)
    assert plan_of(after, source, month) == values
    removed, added = changed_lines(raw, after)
    old = plan_of(raw, source, month)
    if old == IssueValues():
        assert removed == []  # nothing of the file was taken out
    else:
        assert all(line.startswith("      ") or f'"{month}"' in line for line in removed)
    assert all(line.startswith("  ") or line == "\n" for line in added)
    before = catalogue.parse(raw, source, source.name)
    loaded = catalogue.parse(after, source, source.name)
    assert before.newsletter is not None
    assert loaded.newsletter is not None
    others = {p.month: p.intro for p in before.newsletter.issues if p.month != month}
    assert {p.month: p.intro for p in loaded.newsletter.issues if p.month != month} == others


def test_clearing_the_only_issue_gives_back_the_file() -> None:
    """Writing an issue and then clearing it leaves items.yaml byte for byte as it was."""
    raw = BUNDLED.read_bytes()
    once = write(BUNDLED, "2025-11", IssueValues("A note.", NOVEMBER[::-1], None))
    assert b"  issues:\n" in once
    again = write(BUNDLED, "2025-11", IssueValues(), once)
    assert again == raw


def test_replacing_one_month_keeps_the_others_and_their_comments() -> None:
    """Shaping December in a file that shapes three months keeps November's comment and August."""
    raw = SHAPED.read_bytes()
    after = write(SHAPED, "2025-12", IssueValues("New greetings.", None, None))
    removed, added = changed_lines(raw, after)
    assert removed == ["      intro: Season's greetings from the News Office.\n"]
    assert added == ["      intro: New greetings.\n"]


def test_a_flow_style_issues_block_is_refused() -> None:
    """`issues: {"2025-11": {...}}` on one line is refused, naming the line, not rewritten."""
    raw = RICH.read_bytes().replace(
        b'  unsubscribe: "mailto:news@example.edu?subject=unsubscribe"\n',
        b'  unsubscribe: "mailto:news@example.edu?subject=unsubscribe"\n'
        b'  issues: {"2025-12": {intro: Hello}}\n',
    )
    with pytest.raises(editing.EditError, match=r"rich.yaml:\d+: write `issues:` with one month"):
        write(RICH, "2025-11", IssueValues("A note."), raw)


def test_an_unknown_id_is_the_checks_error_at_the_items() -> None:
    """Listing an id no item has raises the catalogue's own error, at the month's items."""
    with pytest.raises(CatalogueError) as caught:
        write(BUNDLED, "2025-11", IssueValues(None, ("no-such-item",), None))
    fields, other = issue_editing.issue_problems(caught.value, "2025-11")
    assert list(fields) == ["items"]
    assert "'no-such-item' is not the id of any item" in fields["items"][0]
    assert other == []


def subjects() -> st.SearchStrategy[str]:
    """A subject line: any catalogue text without format braces, sometimes with the month's."""
    text = catalogue_text().filter(lambda t: "{" not in t and "}" not in t)
    return st.one_of(text, text.map(lambda t: f"{t} {{month:%B %Y}}"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    intro=st.one_of(st.none(), catalogue_text(), paragraphs()),
    order=st.permutations(NOVEMBER),
    subject=st.one_of(st.none(), subjects()),
    source=st.sampled_from([BUNDLED, SHAPED]),
)
def test_random_issues_always_load_back_as_saved(
    intro: str | None, order: list[str], subject: str | None, source: Path
) -> None:
    """Whatever staff type as intro or subject (#, :, quotes, CJK, emoji), it reads back so."""
    raw = source.read_bytes()
    ids = tuple(order) if source == BUNDLED else ("dean-appointed", "robot-lab")
    values = IssueValues(intro, ids, subject)
    try:
        after = write(source, "2025-11", values)
    except CatalogueError as exc:  # the check refusing a text is fine; it must say where
        refused = issue_editing.issue_problems(exc, "2025-11")[0]
    else:
        refused = {}
    if refused:
        return
    assert plan_of(after, source, "2025-11") == issue_editing.normal_issue(values)
    if source == BUNDLED:
        old, new = raw.decode().splitlines(True), after.decode().splitlines(True)
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        assert [op[0] for op in matcher.get_opcodes() if op[0] != "equal"] == ["insert"]


def test_a_save_racing_a_hand_edit_is_refused_with_the_diff(tmp_path: Path) -> None:
    """The file changed since the form opened: refused, the diff shown, the hand edit kept."""
    path = tmp_path / "items.yaml"
    path.write_bytes(BUNDLED.read_bytes())
    (tmp_path / "subscribers.csv").write_bytes((ROOT / "subscribers.csv").read_bytes())
    config = app_settings.load(path, {})
    opened = service.open_catalogue(config)
    by_hand = opened.raw.replace(b"subscribers: subscribers.csv", b"subscribers: people.csv")
    path.write_bytes(by_hand)
    asked = service.IssueRequest(
        "2025-11", IssueValues("A note."), opened.version, "Ada", opened.raw
    )
    with pytest.raises(service.Conflict) as caught:
        service.save_issue(config, asked, tmp_path / "feeds", NOW)
    assert caught.value.diff is not None
    assert "+  subscribers: people.csv" in caught.value.diff
    assert path.read_bytes() == by_hand
    assert service.history(config) == []
