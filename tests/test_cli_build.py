"""`digest build`: what a user sees and what lands on disk."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from conftest import finish, wait_for
from digest.publish import feeds
from helpers import item, snapshot, yaml_catalogue

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


def test_check_flag_reports_leftover_temporaries_with_stale_files(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """`build --check` fails CI on debris an interrupted build left, naming it and the fix."""
    write(yaml_catalogue())
    run("build")
    for name in (".all.atom.xml.0123abcd.digest-tmp", "archive/.2025-11.html.4242.tmp"):
        (tmp_path / "feeds" / name).write_bytes(b"half")
    write(yaml_catalogue(item(title="Renamed")))
    result = run("build", "--check")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-3:] == [
        "feeds/.all.atom.xml.0123abcd.digest-tmp is a leftover temporary file",
        "feeds/archive/.2025-11.html.4242.tmp is a leftover temporary file",
        "feeds/: 8 files out of date and 2 leftover temporary files of an interrupted build; "
        "run `digest build` to update them and remove the leftovers",
    ]
    assert run("build").stdout == (
        "Built feeds/: 11 files (8 written, 3 unchanged) from 1 published item; "
        "removed 2 leftover temporary files of an interrupted build.\n"
    )
    assert run("build", "--check").stdout == "feeds/ is up to date (11 files).\n"


def test_check_flag_on_missing_directory(run: Run, write: Callable[..., Path]) -> None:
    """`build --check` against a directory never built says every file is missing."""
    write(yaml_catalogue())
    result = run("build", "--check", "-o", "nowhere")
    assert result.exit_code == 1
    assert result.stderr.endswith(
        "nowhere/: 11 files out of date; run `digest build` to update them\n"
    )


# A cold build of this many generated items stages about 150 files, over a tenth of a second or so.
BIG = 1000


def big_catalogue(tmp_path: Path) -> str:
    """Write bench/make_catalogue.py's catalogue of BIG items to tmp_path; return its text."""
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "make_catalogue.py"), str(BIG)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    return (tmp_path / "items.yaml").read_text(encoding="utf-8")


def temporaries(directory: Path) -> list[str]:
    """Return the temporary files (any digest version's) below `directory`."""
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob(".*tmp")
        if p.is_file() and not p.is_symlink()
    )


def test_killed_build_leaves_temporaries_that_check_reports_and_build_removes(
    spawn: Callable[..., subprocess.Popen[str]], run: Run, tmp_path: Path
) -> None:
    """A build killed mid-write leaves no debris for `feeds/` to carry into a commit."""
    original = big_catalogue(tmp_path)
    first = run("build")
    assert first.exit_code == 0, first.output
    built = re.fullmatch(
        r"Built feeds/: (\d+) files \(\1 written, 0 unchanged\) (.*)\.\n", first.stdout
    )
    assert built is not None, first.stdout
    count, published = built.groups()
    feeds_dir = tmp_path / "feeds"
    before = snapshot(feeds_dir)
    # A new title changes every file: the next build stages all of them before renaming any.
    edited = original.replace("  title: Campus Newsroom\n", "  title: Campus News\n", 1)
    assert edited != original
    (tmp_path / "items.yaml").write_text(edited, encoding="utf-8")
    proc = spawn("build")
    wait_for(lambda: len(temporaries(feeds_dir)) >= 10, proc, "ten of the build's temporary files")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = temporaries(feeds_dir)
    assert len(left) >= 10
    assert {n: v for n, v in snapshot(feeds_dir).items() if n not in left} == before
    (tmp_path / "items.yaml").write_text(original, encoding="utf-8")

    check = run("build", "--check")

    assert check.exit_code == 1
    assert check.stdout == ""
    assert check.stderr.splitlines() == [
        *(f"feeds/{name} is a leftover temporary file" for name in left),
        f"feeds/: {len(left)} leftover temporary files of an interrupted build; "
        "run `digest build` to remove them",
    ]

    again = run("build")

    assert again.exit_code == 0, again.output
    assert again.stdout == (
        f"Built feeds/: {count} files (0 written, {count} unchanged) {published}; "
        f"removed {len(left)} leftover temporary files of an interrupted build.\n"
    )
    assert temporaries(feeds_dir) == []
    assert snapshot(feeds_dir) == before
    assert run("build", "--check").stdout == f"feeds/ is up to date ({count} files).\n"


BUSY = (
    "feeds/: another `digest build` or `render` is writing into this folder right now; wait for "
    "it to finish, then run this again\n"
)


def test_a_build_in_progress_keeps_its_temporaries(
    spawn: Callable[..., subprocess.Popen[str]], run: Run, tmp_path: Path
) -> None:
    """A second build while one is writing is refused and never breaks the one running."""
    big_catalogue(tmp_path)
    feeds_dir = tmp_path / "feeds"
    proc = spawn("build")
    wait_for(lambda: bool(temporaries(feeds_dir)), proc, "the build's temporary files")
    proc.send_signal(signal.SIGSTOP)
    # The signal only asks: wait until every thread of the build has stopped (the kernel tells
    # the parent), or a file its flushing threads were creating would appear after the look.
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), status
    try:
        staged = temporaries(feeds_dir)
        second = run("build")
        check = run("build", "--check")
        assert temporaries(feeds_dir) == staged
    finally:
        proc.send_signal(signal.SIGCONT)
    code, out, err = finish(proc)

    assert (second.exit_code, second.stdout, second.stderr) == (1, "", BUSY)
    assert (check.exit_code, check.stdout, check.stderr) == (1, "", BUSY)
    assert code == 0, err
    assert out.startswith("Built feeds/: ")
    assert temporaries(feeds_dir) == []
    assert run("build", "--check").exit_code == 0


def test_committed_feeds_are_current(tmp_path: Path, run: Run) -> None:
    """The feeds/ committed in the repository are what the bundled catalogue builds."""
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copytree(ROOT / "feeds", tmp_path / "feeds")
    result = run("build", "--check")
    assert result.exit_code == 0, result.stderr


def test_every_command_has_help_with_an_example(run: Run) -> None:
    """Each command documents itself and ends its help with an example."""
    import click

    from digest.cli import cli

    context = click.Context(cli)
    for name in cli.list_commands(context):
        command = cli.get_command(context, name)
        # A group (`digest subscribers`) documents itself, and each of its commands takes -c.
        paths = (
            [[name, sub] for sub in command.commands] if isinstance(command, click.Group) else []
        )
        for path in [[name], *paths]:
            result = run(*path, "--help")
            assert result.exit_code == 0
            assert "Example:" in result.stdout, path
            assert "-c, --catalogue" in result.stdout or (paths and path == [name]), path


def test_every_command_is_reachable() -> None:
    """A command defined in digest/cli/ but missing from the lazy group's list would be lost."""
    import importlib
    import pkgutil

    import click

    import digest.cli
    from digest.cli import cli

    defined, grouped = set(), set()
    for module in pkgutil.iter_modules(digest.cli.__path__):
        found = vars(importlib.import_module(f"digest.cli.{module.name}")).values()
        for value in found:
            if isinstance(value, click.Command) and value is not cli:
                defined.add(value)
                if isinstance(value, click.Group):
                    grouped.update(value.commands.values())
    context = click.Context(cli)
    reachable = {cli.get_command(context, name) for name in cli.list_commands(context)}
    assert defined - grouped == reachable


def test_usage_error_exits_2(run: Run) -> None:
    """Scripts can tell a wrong invocation (2) from a failure to act on (1)."""
    assert run("build", "--no-such-option").exit_code == 2
    assert run("no-such-command").exit_code == 2
