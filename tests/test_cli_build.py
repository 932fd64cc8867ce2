"""`digest build`: what a user sees and what lands on disk."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from digest import feeds
from helpers import HEADER, item, snapshot, yaml_catalogue

ROOT = Path(__file__).resolve().parent.parent
Run = Callable[..., Result]


def test_build_writes_feeds_and_says_so(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A first build reports every file it wrote."""
    write(yaml_catalogue())
    result = run("build")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout == "Built feeds/: 11 files (11 written, 0 unchanged) from 1 published item.\n"
    )
    assert (tmp_path / "feeds" / "all.atom.xml").is_file()
    assert (tmp_path / "feeds" / "index.html").is_file()


def test_second_build_changes_no_file(run: Run, write: Callable[..., Path], tmp_path: Path) -> None:
    """Building twice leaves every file and mtime as the first build left them."""
    write(yaml_catalogue())
    run("build", "-o", "out")
    for path in (tmp_path / "out").iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
    before = snapshot(tmp_path / "out")
    result = run("build", "-o", "out")
    assert (
        result.stdout == "Built out/: 11 files (0 written, 11 unchanged) from 1 published item.\n"
    )
    assert snapshot(tmp_path / "out") == before


def test_title_edit_keeps_every_entry_id(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """Fixing a title rewrites the feeds but every entry keeps its id in every feed."""
    write(
        yaml_catalogue(
            item(id="a", title="Medcial"), item(id="b", title="Other", date="2025-11-01")
        )
    )
    run("build")
    before = {
        p.name: p.read_text()
        for p in (tmp_path / "feeds").glob("*.*")
        if p.suffix in (".xml", ".json")
    }
    write(
        yaml_catalogue(
            item(id="a", title="Medical"), item(id="b", title="Other", date="2025-11-01")
        )
    )
    result = run("build")
    assert "written" in result.stdout
    for name, old in before.items():
        new = (tmp_path / "feeds" / name).read_text()
        for entry in ("a", "b"):
            tag = f"tag:news.example.edu,{feeds.TAG_DATE}:{entry}"
            assert (tag in old) == (tag in new), name


def test_failed_build_leaves_feeds_untouched(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A broken catalogue exits 1 and leaves the published feeds exactly as they were."""
    write(yaml_catalogue())
    run("build")
    before = snapshot(tmp_path / "feeds")
    write(yaml_catalogue(item(date="2025-11-31")))
    result = run("build")
    assert result.exit_code == 1
    assert result.stderr == (
        "items.yaml:17: items[0].date: '2025-11-31' is not a real date "
        "(day is out of range for month)\n"
    )
    assert result.stdout == ""
    assert snapshot(tmp_path / "feeds") == before


def test_check_flag_reports_stale_files(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """`build --check` fails CI when committed feeds lag the catalogue, and writes nothing."""
    write(yaml_catalogue())
    run("build")
    assert run("build", "--check").stdout == "feeds/ is up to date (11 files).\n"
    write(yaml_catalogue(item(title="Renamed")))
    before = snapshot(tmp_path / "feeds")
    result = run("build", "--check")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "feeds/all.atom.xml is out of date",
        "feeds/all.json is out of date",
        "feeds/all.rss.xml is out of date",
        "feeds/archive/2025-11.html is out of date",
        "feeds/index.html is out of date",
        "feeds/research.atom.xml is out of date",
        "feeds/research.json is out of date",
        "feeds/research.rss.xml is out of date",
        "feeds/: 8 files out of date; run `digest build` to update them",
    ]
    assert snapshot(tmp_path / "feeds") == before


def test_check_flag_on_missing_directory(run: Run, write: Callable[..., Path]) -> None:
    """`build --check` against a directory never built says every file is missing."""
    write(yaml_catalogue())
    result = run("build", "--check", "-o", "nowhere")
    assert result.exit_code == 1
    assert result.stderr.endswith(
        "nowhere/: 11 files out of date; run `digest build` to update them\n"
    )


def test_a_category_slug_too_long_for_a_file_name_is_a_clear_error(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A file name too long for the disk stops the build with that name, never a traceback."""
    write(yaml_catalogue())
    run("build")
    before = snapshot(tmp_path / "feeds")
    slug = "x" * 240
    people = "    - {slug: people, name: People}\n"
    write(
        yaml_catalogue(header=HEADER.replace(people, people + f"    - {{slug: {slug}, name: X}}\n"))
    )

    result = run("build")

    assert result.exit_code == 1
    assert result.stdout == ""
    limit = os.pathconf(tmp_path / "feeds", "PC_NAME_MAX") - 21
    assert result.stderr == (
        f"feeds/{slug}.atom.xml: cannot write it (File name too long: a name may have at most "
        f"{limit} bytes here; shorten the category slug); nothing in feeds was changed\n"
    )
    assert snapshot(tmp_path / "feeds") == before


def test_committed_feeds_are_current(tmp_path: Path, run: Run) -> None:
    """The feeds/ committed in the repository are what the bundled catalogue builds."""
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copytree(ROOT / "feeds", tmp_path / "feeds")
    result = run("build", "--check")
    assert result.exit_code == 0, result.stderr


def test_every_command_has_help_with_an_example(run: Run) -> None:
    """Each command documents itself and ends its help with an example."""
    from digest.cli import cli

    for name in cli.commands:
        result = run(name, "--help")
        assert result.exit_code == 0
        assert "Example:" in result.stdout, name
        assert "-c, --catalogue" in result.stdout, name


def test_usage_error_exits_2(run: Run) -> None:
    """Scripts can tell a wrong invocation (2) from a failure to act on (1)."""
    assert run("build", "--no-such-option").exit_code == 2
    assert run("no-such-command").exit_code == 2
