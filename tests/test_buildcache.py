"""The build cache: a rebuild skips what has not changed and writes what a cold build would."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import Result

from digest.publish import buildcache
from helpers import HEADER, item, snapshot, yaml_catalogue

Run = Callable[..., Result]
NOW = datetime(2026, 1, 1, tzinfo=UTC)

ITEMS = [
    item("november", "November news", "2025-11-19"),
    item("october", "October news", "2025-10-02", category="people"),
    item("september", "September news", "2025-09-09"),
    item("later", "Scheduled news", "2026-02-01"),
]


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every build in these tests happens at NOW unless a test moves the clock."""
    monkeypatch.setattr("digest.cli._now", lambda: NOW)


def contents(directory: Path) -> dict[str, bytes]:
    return {name: data for name, (data, _) in snapshot(directory).items()}


def cold(run: Run, tmp_path: Path) -> dict[str, bytes]:
    """Build from scratch into a directory of its own, with no manifest, and return its files."""
    shutil.rmtree(tmp_path / "cold", ignore_errors=True)
    shutil.rmtree(tmp_path / ".digest", ignore_errors=True)
    result = run("build", "-o", "cold")
    assert result.exit_code == 0, result.output
    files = contents(tmp_path / "cold")
    shutil.rmtree(tmp_path / "cold")
    return files


def test_unchanged_rebuild_skips_everything(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A rebuild with nothing changed writes nothing, leaves every mtime, and says so."""
    write(yaml_catalogue(*ITEMS))
    first = run("build")
    before = snapshot(tmp_path / "feeds")
    second = run("build")
    assert second.exit_code == 0, second.output
    assert second.stdout == (
        "Built feeds/: 13 files (0 written, 13 unchanged) from 3 published items.\n"
    )
    assert first.stdout.startswith("Built feeds/: 13 files (13 written, 0 unchanged)")
    assert snapshot(tmp_path / "feeds") == before


def test_edit_rewrites_only_its_month_and_feeds_and_matches_a_cold_build(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """Fixing one item's title shows up where it belongs and nowhere else is touched."""
    write(yaml_catalogue(*ITEMS))
    run("build")
    before = snapshot(tmp_path / "feeds")
    edited = [i.replace("September news", "September news, corrected") for i in ITEMS]
    write(yaml_catalogue(*edited))
    result = run("build")
    assert result.exit_code == 0, result.output
    after = snapshot(tmp_path / "feeds")
    changed = sorted(name for name in after if after[name] != before[name])
    # Its own month, the combined and research feeds, and the page listing the latest items.
    assert changed == [
        "all.atom.xml",
        "all.json",
        "all.rss.xml",
        "archive/2025-09.html",
        "index.html",
        "research.atom.xml",
        "research.json",
        "research.rss.xml",
    ]
    assert b"September news, corrected" in after["archive/2025-09.html"][0]
    assert contents(tmp_path / "feeds") == cold(run, tmp_path)


def test_a_file_changed_by_hand_is_rebuilt(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """An output file edited or deleted by hand is restored, though the catalogue is unchanged."""
    write(yaml_catalogue(*ITEMS))
    run("build")
    (tmp_path / "feeds" / "archive" / "2025-10.html").write_text("defaced")
    (tmp_path / "feeds" / "people.json").unlink()
    result = run("build")
    assert result.stdout.startswith("Built feeds/: 13 files (2 written, 11 unchanged)")
    assert contents(tmp_path / "feeds") == cold(run, tmp_path)


def test_scheduled_item_appears_when_its_day_comes(
    run: Run, write: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged catalogue still publishes a scheduled item once its date has passed."""
    write(yaml_catalogue(*ITEMS))
    run("build")
    assert b"Scheduled news" not in (tmp_path / "feeds" / "all.atom.xml").read_bytes()
    monkeypatch.setattr("digest.cli._now", lambda: datetime(2026, 3, 1, tzinfo=UTC))
    result = run("build")
    assert "from 4 published items" in result.stdout
    assert b"Scheduled news" in (tmp_path / "feeds" / "all.atom.xml").read_bytes()
    assert (tmp_path / "feeds" / "archive" / "2026-02.html").is_file()
    assert contents(tmp_path / "feeds") == cold(run, tmp_path)


def test_office_template_change_rebuilds_the_archive(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """Editing newsletter_templates/ beside the catalogue changes the archive pages at once."""
    write(yaml_catalogue(*ITEMS))
    run("build")
    templates = tmp_path / "newsletter_templates"
    templates.mkdir()
    shipped = Path(__file__).resolve().parent.parent / "newsletter_templates" / "style.css"
    style = shipped.read_text(encoding="utf-8").replace("#003366", "#660033")
    (templates / "style.css").write_text(style, encoding="utf-8")
    result = run("build")
    assert result.stdout.startswith("Built feeds/: 13 files (3 written, 10 unchanged)")
    assert "#660033" in (tmp_path / "feeds" / "archive" / "2025-11.html").read_text()
    assert contents(tmp_path / "feeds") == cold(run, tmp_path)


def test_damaged_manifest_means_a_full_correct_build(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A cache file that cannot be read is ignored, never trusted."""
    write(yaml_catalogue(*ITEMS))
    run("build")
    for manifest in (tmp_path / ".digest" / "builds").iterdir():
        manifest.write_text("{not json")
    write(yaml_catalogue(*ITEMS[:2]))
    result = run("build")
    assert result.exit_code == 0, result.output
    assert "from 2 published items" in result.stdout
    built = contents(tmp_path / "feeds")
    # Files of a month that has gone are left in place, as always; the rest is a cold build.
    assert built.pop("archive/2025-09.html")
    assert built == cold(run, tmp_path)


def test_manifest_is_not_written_through_a_planted_symlink(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A link planted where the cache writes its manifest cannot make a build overwrite a file."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    manifest = buildcache.location(Path("feeds"))
    manifest.parent.mkdir(parents=True)
    # The names the old code used for its temporary file, and the manifest's own.
    for name in (f".{manifest.name}.{os.getpid()}.tmp", manifest.name):
        (manifest.parent / name).symlink_to(victim)
    write(yaml_catalogue(*ITEMS))

    first = run("build")
    second = run("build")

    assert victim.read_bytes() == b"precious"
    assert first.exit_code == 0, first.output
    assert not manifest.is_symlink()
    assert second.stdout == (
        "Built feeds/: 13 files (0 written, 13 unchanged) from 3 published items.\n"
    )


def test_invalid_catalogue_after_a_build_still_fails(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A broken catalogue is reported, whatever an earlier build left in the cache."""
    write(yaml_catalogue(*ITEMS))
    run("build")
    write(HEADER + item(date="2025-13-01"))
    result = run("build")
    assert result.exit_code == 1
    assert "is not a real date" in result.stderr
