"""`digest build` with nothing to do (cli/quick.py): the same answer as click's, without click.

Each test sets up a folder, runs one `digest` command as a real process through the installed
entry point, then sets the folder up again the same way and runs the same command through the
click group alone (`digest.cli.group.cli`, which never takes the quick path), and compares what a
user sees: the exit status, stdout, stderr and the files. The entry point runs under
`python -X importtime`, whose report on stderr (set apart before comparing) says which modules
it imported: without click when there was nothing to do, with click when there was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import DIGEST
from helpers import item, snapshot, yaml_catalogue

ENTRY = [sys.executable, "-X", "importtime", DIGEST]
MODULE = [sys.executable, "-X", "importtime", "-m", "digest"]
CLICK = [sys.executable, "-c", "from digest.cli.group import cli; cli(prog_name='digest')"]
# What a no-change build must not import: the command line and the rendering libraries.
HEAVY = {"click", "yaml", "jinja2", "feedgen", "digest.cli.group", "digest.app.publishing"}

Prepare = Callable[[Path], None]


@dataclass(frozen=True)
class Outcome:
    """What one `digest` process did, as its user sees it."""

    code: int
    stdout: str
    stderr: str
    files: dict[str, bytes]  # the output folder's files afterwards
    rewrote: bool  # whether any file there was written (its bytes or mtime changed)
    imported: frozenset[str]  # modules imported, when run under -X importtime


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return this process's environment without any DIGEST_* variable, plus `extra`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "_DIGEST_"))}
    return {**kept, **(extra or {})}


def execute(
    command: list[str], args: tuple[str, ...], cwd: Path, output: Path, env: Mapping[str, str]
) -> Outcome:
    """Run `command ARGS` in `cwd` and return what it did to `output`."""
    before = snapshot(output) if output.is_dir() else {}
    proc = subprocess.run(
        [*command, *args], cwd=cwd, env=dict(env), capture_output=True, text=True, check=False
    )
    after = snapshot(output) if output.is_dir() else {}
    report = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    stderr = "".join(
        line
        for line in proc.stderr.splitlines(keepends=True)
        if not line.startswith("import time:")
    )
    imported = frozenset(line.split("|")[-1].strip() for line in report[1:])
    files = {name: data for name, (data, _) in after.items()}
    return Outcome(proc.returncode, proc.stdout, stderr, files, before != after, imported)


def both(
    tmp_path: Path,
    prepare: Prepare,
    *args: str,
    env: Mapping[str, str] | None = None,
    where: str = "site",
    output: str = "site/feeds",
    entry: list[str] = ENTRY,
) -> tuple[Outcome, Outcome]:
    """Return `digest ARGS` through the entry point and through click, each on a fresh setup."""
    outcomes = []
    for command in (entry, CLICK):
        site = tmp_path / "site"
        for folder in (site, tmp_path / "elsewhere"):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        prepare(site)
        outcomes.append(
            execute(command, args, tmp_path / where, tmp_path / output, env or environment())
        )
    return outcomes[0], outcomes[1]


def click_build(site: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
    """Build through click (as before the quick path), from `site`."""
    proc = subprocess.run(
        [*CLICK, "build", *args], cwd=site, env=env or environment(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def catalogue(site: Path) -> None:
    """Write a two-item catalogue into `site`."""
    (site / "items.yaml").write_text(
        yaml_catalogue(item(id="a", title="First"), item(id="b", title="Second")),
        encoding="utf-8",
    )


def built(site: Path) -> None:
    """Write the catalogue and build it once."""
    catalogue(site)
    click_build(site)


def same(quick: Outcome, normal: Outcome) -> None:
    """Assert that the user sees the same from both processes."""
    assert (quick.code, quick.stdout, quick.stderr) == (normal.code, normal.stdout, normal.stderr)
    assert quick.files == normal.files
    assert quick.rewrote == normal.rewrote


def answered_quickly(outcome: Outcome) -> bool:
    """Return whether the process answered without the command line or the renderers."""
    assert outcome.imported, "no -X importtime report"
    return not HEAVY & outcome.imported


def test_a_build_with_nothing_to_do_says_what_click_says_without_click(tmp_path: Path) -> None:
    """A no-change `digest build` prints the usual summary, rewrites nothing, and loads no click."""
    quick, normal = both(tmp_path, built, "build")
    same(quick, normal)
    assert quick.code == 0
    assert (
        quick.stdout == "Built feeds/: 11 files (0 written, 11 unchanged) from 2 published items.\n"
    )
    assert not quick.rewrote
    assert answered_quickly(quick)
    assert "digest.cli.quick" in quick.imported


def test_python_m_digest_takes_the_quick_path_too(tmp_path: Path) -> None:
    """`python -m digest build` with nothing to do is as quick as the `digest` command."""
    quick, normal = both(tmp_path, built, "build", entry=MODULE)
    same(quick, normal)
    assert quick.stdout.startswith("Built feeds/: 11 files (0 written, 11 unchanged)")
    assert answered_quickly(quick)


def test_the_first_build_is_clicks(tmp_path: Path) -> None:
    """With no output yet, the entry point builds everything, as click does."""
    quick, normal = both(tmp_path, catalogue, "build")
    same(quick, normal)
    assert (
        quick.stdout == "Built feeds/: 11 files (11 written, 0 unchanged) from 2 published items.\n"
    )
    assert not answered_quickly(quick)


def test_an_edit_is_built(tmp_path: Path) -> None:
    """After items.yaml changes, the build writes what changed, exactly as click's does."""

    def edited(site: Path) -> None:
        built(site)
        path = site / "items.yaml"
        path.write_text(path.read_text(encoding="utf-8").replace("Second", "2nd"), "utf-8")

    quick, normal = both(tmp_path, edited, "build")
    same(quick, normal)
    assert quick.code == 0
    assert " 0 written" not in quick.stdout
    assert quick.rewrote
    assert not answered_quickly(quick)


@pytest.mark.parametrize("change", ["touched", "deleted", "leftover"])
def test_a_changed_output_folder_is_built(tmp_path: Path, change: str) -> None:
    """A feed touched or deleted, or a killed build's leftover, sends the build to click."""

    def changed(site: Path) -> None:
        built(site)
        feed = site / "feeds" / "all.atom.xml"
        if change == "touched":
            os.utime(feed, ns=(1_000_000_000, 1_000_000_000))
        elif change == "deleted":
            feed.unlink()
        else:
            (site / "feeds" / ".all.atom.xml.0123abcd.digest-tmp").write_bytes(b"half")

    quick, normal = both(tmp_path, changed, "build")
    same(quick, normal)
    assert quick.code == 0
    if change == "leftover":
        assert "removed 1 leftover temporary file" in quick.stdout
    assert not answered_quickly(quick)


@pytest.mark.parametrize(
    ("spelling", "output"),
    [
        (("build", "-c", "{catalogue}"), "site/feeds"),
        (("build", "-c", "../site/items.yaml"), "site/feeds"),
        (("build", "--catalogue", "{catalogue}", "-o", "out/"), "elsewhere/out"),
        (("--debug", "build", "--catalogue={catalogue}", "--output=./out"), "elsewhere/out"),
        (("build", "-c{catalogue}", "-oout"), "elsewhere/out"),
    ],
)
def test_catalogue_from_another_folder(
    tmp_path: Path, spelling: tuple[str, ...], output: str
) -> None:
    """`-c` and `-o`, however they are spelled, from another folder: the same summary, quickly."""
    args = tuple(arg.format(catalogue=tmp_path / "site" / "items.yaml") for arg in spelling)

    def from_elsewhere(site: Path) -> None:
        catalogue(site)
        proc = subprocess.run(
            [*CLICK, *args], cwd=tmp_path / "elsewhere", env=environment(), capture_output=True
        )
        assert proc.returncode == 0, proc.stderr

    quick, normal = both(tmp_path, from_elsewhere, *args, where="elsewhere", output=output)
    same(quick, normal)
    assert quick.code == 0
    assert quick.stdout.endswith(": 11 files (0 written, 11 unchanged) from 2 published items.\n")
    assert not quick.rewrote
    assert answered_quickly(quick)


@pytest.mark.parametrize("gone", ["pipe closed", "no stdout"])
def test_an_output_that_went_away(tmp_path: Path, gone: str) -> None:
    """`digest build | true` or `digest build >&-` with nothing to do: as click does it."""
    seen = []
    for name, command in (("entry", ENTRY), ("click", CLICK)):
        site = tmp_path / name
        site.mkdir()
        built(site)
        reader, writer = os.pipe()
        os.close(reader)
        with os.fdopen(writer, "wb") as closed:
            proc = subprocess.run(
                [*command, "build"]
                if gone == "pipe closed"
                else ["sh", "-c", 'exec "$@" >&-', "sh", *command, "build"],
                cwd=site,
                env=environment(),
                stdout=closed,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
        lines = proc.stderr.splitlines()
        imported = {line.split("|")[-1].strip() for line in lines[1:] if "import time:" in line}
        said = [line for line in lines if not line.startswith("import time:")]
        seen.append((proc.returncode, said, bool(imported) and not HEAVY & imported))
    # Without stdout click answers (exit 0); into a closed pipe the entry point does (exit 1).
    expected = [(1, [], True), (1, [], False)] if gone == "pipe closed" else [(0, [], False)] * 2
    assert seen == expected


@pytest.mark.parametrize(
    ("before", "now", "quickly"),
    [
        # The feed page's sign-up form: set for both builds, then set only for the second.
        ({"DIGEST_PUBLIC_URL": "https://digest.example.edu/"},) * 2 + (True,),
        ({}, {"DIGEST_PUBLIC_URL": "https://digest.example.edu/"}, False),
        # Variables a build does not use, set to values that check out.
        (
            {},
            {
                "DIGEST_STATE": "elsewhere.sqlite3",
                "DIGEST_SMTP_URL": "smtp://mail.example.edu:587",
                "DIGEST_TRUSTED_PROXIES": "1",
                "DIGEST_DATABASE_URL": "sqlite:///state.sqlite3",
                "DIGEST_DNS_SERVER": "[::1]:5353",
            },
            True,
        ),
        # Values that do not check out: click's command reports them and exits 1.
        ({}, {"DIGEST_TRUSTED_PROXIES": "lots"}, False),
        ({}, {"DIGEST_PUBLIC_URL": "http://digest.example.edu/"}, False),
        ({}, {"DIGEST_DATABASE_URL": "mysql://db.example.edu/digest"}, False),
        # A shell asking for completions is click's business.
        (
            {},
            {"_DIGEST_COMPLETE": "bash_complete", "COMP_WORDS": "digest bu", "COMP_CWORD": "1"},
            False,
        ),
    ],
)
def test_digest_variables(
    tmp_path: Path, before: dict[str, str], now: dict[str, str], quickly: bool
) -> None:
    """DIGEST_* variables are honoured and checked exactly as the command line does."""

    def prepared(site: Path) -> None:
        catalogue(site)
        click_build(site, env=environment(before))

    quick, normal = both(tmp_path, prepared, "build", env=environment(now))
    same(quick, normal)
    assert answered_quickly(quick) == quickly


@pytest.mark.parametrize(
    "args",
    [
        ("build", "--check"),
        ("build", "-o", "items.yaml"),  # a file where a folder is wanted: usage error, exit 2
        ("build", "-c", "feeds"),  # a folder where the catalogue is wanted: exit 2
        ("build", "-c", "missing.yaml"),
        ("build", "-o"),
        ("build", "-c", "items.yaml", "-c", "items.yaml"),
        ("build", "extra"),
        ("build", "--help"),
        ("check",),
        ("--version",),
    ],
)
def test_anything_else_is_clicks(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Other commands, options and mistakes get click's answers and exit codes, word for word."""
    quick, normal = both(tmp_path, built, *args)
    same(quick, normal)
    assert not answered_quickly(quick)


class _Interrupted(dict[str, str]):
    """An environment read while the user presses Ctrl-C: every DIGEST_* lookup is interrupted."""

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        if key.startswith("DIGEST_"):
            raise KeyboardInterrupt
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        if key.startswith("DIGEST_"):
            raise KeyboardInterrupt
        return super().__getitem__(key)


def test_ctrl_c_while_it_looks_is_clicks_aborted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during the quick look ends as click ends it: 'Aborted!', exit 1, no traceback,
    and no build either (falling through to click would build what the user stopped)."""
    from digest.cli import quick

    built(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path / "feeds")
    assert quick.build(["build"], _Interrupted(environment())) == 1
    assert capsys.readouterr() == ("", "\nAborted!\n")
    assert snapshot(tmp_path / "feeds") == before
