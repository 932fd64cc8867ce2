"""The docs stay true: every command documented, CI running the README's own test command."""

from __future__ import annotations

import re
from pathlib import Path

import click

from digest.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDES = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "docs").glob("*.md")}


def test_every_command_is_in_the_staff_guide() -> None:
    """A user reading the staff guide learns of every command the tool has."""
    for name in cli.list_commands(click.Context(cli)):
        assert f"`digest {name}" in GUIDES["staff.md"], name


def test_every_variable_is_in_the_it_guide() -> None:
    """IT finds every DIGEST_* variable digest reads in its guide, the OAuth token command too."""
    from digest.app.settings import VARIABLES

    for name in VARIABLES:
        assert f"`{name}`" in GUIDES["it.md"], name


def test_readme_is_short_and_links_every_guide() -> None:
    """The README stays a page a newcomer reads, pointing into docs/ for the rest."""
    assert len(README.splitlines()) < 200
    for guide in ("editors.md", "staff.md", "it.md", "developers.md"):
        assert guide in GUIDES
        assert f"(docs/{guide})" in README


def test_every_guide_is_in_the_site() -> None:
    """A guide left out of mkdocs.yml's nav would be unreachable on the site."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for guide in GUIDES:
        assert f": {guide}" in nav, guide


def test_ci_runs_the_readme_test_command() -> None:
    """CI tests exactly what a new developer runs, so a missing install step fails CI too."""
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert len(blocks) == 2
    test_command = blocks[1]
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
