"""The editor's use cases: saving an item, a save racing a hand edit, history, revert, git."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest

from digest.app import editing, settings
from digest.app.settings import Settings
from digest.errors import DigestError
from digest.publish import catalogue
from digest.publish import editing as writer

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 12, 1, 12, tzinfo=UTC)
TITLE = 'Seminar #3: "AI & Society"'


@pytest.fixture
def home(tmp_path: Path) -> Settings:
    """The bundled catalogue and its feeds in a folder of their own."""
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    return settings.load(tmp_path / "items.yaml", {})


def new_item(**changes: writer.Value) -> dict[str, writer.Value]:
    """Return the form values of a new announcement."""
    values: dict[str, writer.Value] = {
        "title": TITLE,
        "date": "2025-11-28",
        "category": "engagement",
        "section": "events",
        "summary": "A talk on *AI* and society.",
    }
    values.update(changes)
    return values


def save(
    home: Settings,
    item_id: str | None,
    values: dict[str, writer.Value],
    action: str,
    staff: str = "Ada",
    seen: bytes | None = None,
) -> editing.Saved:
    """Save through the service as the console does, on the file as it is now."""
    opened = editing.open_catalogue(home)
    request = editing.Request(item_id, values, action, opened.version, staff, seen)
    return editing.save_item(home, request, home.home / "feeds", NOW)


def test_publishing_a_new_item_appends_it_records_it_and_rebuilds_the_feeds(home: Settings) -> None:
    """A published announcement is in items.yaml (only its lines), in the history and the feeds."""
    before = home.catalogue_path.read_bytes()
    saved = save(home, None, new_item(), "publish")
    after = home.catalogue_path.read_bytes()
    assert saved.item_id == "seminar-3-ai-society"
    assert saved.status == "published"
    assert after.startswith(before)  # appended: every earlier byte as it was
    assert after[len(before) :].decode() == (
        "\n  - id: seminar-3-ai-society\n"
        "    title: 'Seminar #3: \"AI & Society\"'\n"
        "    date: 2025-11-28\n"
        "    category: engagement\n"
        "    section: events\n"
        "    summary: A talk on *AI* and society.\n"
    )
    assert saved.build is not None
    assert saved.build.written > 0
    for name in ("all.atom.xml", "all.rss.xml", "engagement.atom.xml", "engagement.rss.xml"):
        feed = feedparser.parse((home.home / "feeds" / name).read_bytes())
        assert TITLE in [entry.title for entry in feed.entries], name
    for name in ("all.json", "engagement.json"):
        feed = json.loads((home.home / "feeds" / name).read_bytes())
        assert TITLE in [entry["title"] for entry in feed["items"]], name
    [edit] = editing.history(home, "seminar-3-ai-society")
    assert (edit.staff, edit.action, edit.before, edit.id) == ("Ada", "publish", None, saved.edit)
    assert "+    title: 'Seminar #3: \"AI & Society\"'" in edit.diff
    assert editing.version_of(after) == edit.version


def test_a_save_racing_a_hand_edit_is_refused_with_the_diff(home: Settings) -> None:
    """A form opened before someone edited the file by hand must not overwrite their change."""
    opened = editing.open_catalogue(home)
    hand = opened.raw.replace(b"feed_limit: 50", b"feed_limit: 40")
    home.catalogue_path.write_bytes(hand)
    request = editing.Request(None, new_item(), "publish", opened.version, "Ada", opened.raw)
    with pytest.raises(editing.Conflict) as refused:
        editing.save_item(home, request, home.home / "feeds", NOW)
    assert home.catalogue_path.read_bytes() == hand  # nothing lost, nothing written
    assert refused.value.diff is not None
    assert "-  feed_limit: 50\n+  feed_limit: 40\n" in refused.value.diff
    assert refused.value.version == editing.version_of(hand)
    assert "was changed (in git, by hand or in another tab) since this form was opened" in str(
        refused.value
    )
    assert editing.history(home) == []
    # Reapplied on top of the file as it is now: both changes are kept.
    again = editing.Request(None, new_item(), "publish", refused.value.version, "Ada")
    editing.save_item(home, again, home.home / "feeds", NOW)
    text = home.catalogue_path.read_text()
    assert "feed_limit: 40" in text
    assert TITLE in catalogue.load(home.catalogue_path).items[-1].title


def test_scheduling_needs_a_future_date_and_publishing_a_present_one(home: Settings) -> None:
    """Schedule with a past date, or publish with a future one, is refused at the date field."""
    raw = home.catalogue_path.read_bytes()
    with pytest.raises(editing.Invalid) as late:
        save(home, None, new_item(), "schedule")
    assert late.value.fields == {
        "date": ["is not in the future: choose a later date to schedule, or Publish now"]
    }
    with pytest.raises(editing.Invalid) as early:
        save(home, None, new_item(date="2026-02-01"), "publish")
    assert list(early.value.fields) == ["date"]
    assert home.catalogue_path.read_bytes() == raw
    saved = save(home, None, new_item(date="2026-02-01"), "schedule")
    assert saved.status == "scheduled"


def test_a_check_failure_is_reported_at_its_field_and_nothing_is_written(home: Settings) -> None:
    """A bad date and a missing summary come back as `digest check`'s messages, per field."""
    raw = home.catalogue_path.read_bytes()
    with pytest.raises(editing.Invalid) as refused:
        save(home, None, new_item(date="2025-11-31", summary="  "), "draft")
    assert refused.value.fields == {
        "date": ["'2025-11-31' is not a real date (day is out of range for month)"],
        "summary": ["is required"],
    }
    assert home.catalogue_path.read_bytes() == raw


def test_retiring_and_reverting_are_new_changes_in_the_history(home: Settings) -> None:
    """Retire makes an item a draft; reverting that save brings it back, both recorded."""
    first = catalogue.load(home.catalogue_path).items[0]
    opened = editing.open_catalogue(home)
    values = editing.values_of(opened, first.id)
    retired = save(home, first.id, {**values, "title": "Withdrawn"}, "retire", staff="Bo")
    assert retired.status == "draft"
    now = catalogue.load(home.catalogue_path).items[0]
    assert (now.draft, now.title) == (True, "Withdrawn")
    reverted = editing.revert(home, retired.edit or 0, "Cy", home.home / "feeds", NOW)
    back = catalogue.load(home.catalogue_path).items[0]
    assert (back.draft, back.title) == (False, first.title)
    assert reverted.status == "published"
    assert home.catalogue_path.read_bytes() == (ROOT / "items.yaml").read_bytes()
    assert [(e.staff, e.action) for e in editing.history(home, first.id)] == [
        ("Cy", f"revert {retired.edit}"),
        ("Bo", "retire"),
    ]


def test_saving_an_unchanged_form_writes_nothing(home: Settings) -> None:
    """Pressing Save without changing anything leaves the file and the history alone."""
    first = catalogue.load(home.catalogue_path).items[0]
    values = editing.values_of(editing.open_catalogue(home), first.id)
    saved = save(home, first.id, values, "save")
    assert not saved.changed
    assert home.catalogue_path.read_bytes() == (ROOT / "items.yaml").read_bytes()
    assert editing.history(home) == []


def git(folder: Path, *args: str) -> str:
    """Run git in `folder` and return what it printed."""
    return subprocess.run(
        ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True
    ).stdout


def test_with_the_setting_each_save_is_committed_as_the_staff_member(home: Settings) -> None:
    """DIGEST_EDITOR_GIT_COMMIT=1 commits the catalogue alone, authored by who saved."""
    folder = home.home
    git(folder, "init", "-q")
    git(folder, "-c", "user.name=Setup", "-c", "user.email=setup@example.org", "add", ".")
    git(
        folder,
        "-c",
        "user.name=Setup",
        "-c",
        "user.email=setup@example.org",
        "commit",
        "-qm",
        "start",
    )
    (folder / "notes.txt").write_text("staged, not the editor's\n")
    git(folder, "add", "notes.txt")
    on = settings.load(home.catalogue_path, {"DIGEST_EDITOR_GIT_COMMIT": "1"})
    saved = save(on, None, new_item(), "publish", staff="Ada Lovelace")
    assert saved.commit is not None
    assert saved.notes == ()
    assert (
        git(folder, "log", "-1", "--format=%an|%s") == "Ada Lovelace|Publish seminar-3-ai-society\n"
    )
    assert git(folder, "show", "--name-only", "--format=", "HEAD") == "items.yaml\n"
    assert git(folder, "diff", "--cached", "--name-only") == "notes.txt\n"  # still only staged
    off = save(home, "seminar-3-ai-society", new_item(title="Seminar #4"), "publish")
    assert off.commit is None
    assert git(folder, "log", "--format=%s").count("\n") == 2


def test_not_a_repository_is_no_error(home: Settings) -> None:
    """With the setting on outside git, saves work and nothing is committed."""
    on = settings.load(home.catalogue_path, {"DIGEST_EDITOR_GIT_COMMIT": "1"})
    saved = save(on, None, new_item(), "draft")
    assert (saved.commit, saved.notes) == (None, ())


@pytest.mark.parametrize(
    ("title", "taken", "wanted"),
    [
        (TITLE, set(), "seminar-3-ai-society"),
        ("Café Crème — Réunion", set(), "cafe-creme-reunion"),
        ("中文標題", set(), "item"),
        ("New Dean", {"new-dean", "new-dean-2"}, "new-dean-3"),
        ("word " * 30, set(), "-".join(["word"] * 12)),
    ],
)
def test_ids_are_made_from_titles(title: str, taken: set[str], wanted: str) -> None:
    """A new item's id reads like its title, is unique, and is short enough for file names."""
    assert writer.slug_for(title, taken) == wanted


def test_a_save_keeps_the_files_permissions_and_leaves_no_temporary_file(home: Settings) -> None:
    """The catalogue keeps its mode after a save, and nothing is left beside it."""
    home.catalogue_path.chmod(0o640)
    save(home, None, new_item(), "publish")
    assert home.catalogue_path.stat().st_mode & 0o777 == 0o640
    assert not [p for p in home.home.iterdir() if p.name.endswith(".digest-tmp")]


def test_a_catalogue_that_cannot_be_written_is_named_and_unchanged(home: Settings) -> None:
    """A write the file system refuses gives a clear error; the file stays as it was."""
    # A name of 255 bytes, the most a file system allows: its temporary name is too long, which
    # refuses the write even for root (who may write in any folder).
    longest = home.home / ("x" * 250 + ".yaml")
    home.catalogue_path.rename(longest)
    raw = longest.read_bytes()
    there = settings.load(longest, {})
    with pytest.raises(DigestError, match=r"cannot write the catalogue \(File name too long\)"):
        save(there, None, new_item(), "publish")
    assert longest.read_bytes() == raw
    assert editing.history(there) == []
    assert sorted(p.name for p in home.home.iterdir()) == sorted(["subscribers.csv", longest.name])
