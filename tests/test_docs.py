"""The README stays true: every command documented, CI running the README's own test command."""

from __future__ import annotations

import re
from pathlib import Path

from digest.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_command_is_in_the_readme() -> None:
    """A user reading the README learns of every command the tool has."""
    for name in cli.commands:
        assert f"`digest {name}" in README, name


def test_ci_runs_the_readme_test_command() -> None:
    """CI tests exactly what a new developer runs, so a missing install step fails CI too."""
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert len(blocks) == 2
    test_command = blocks[1]
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
