"""The code stays in pieces a newcomer can read, in the packages the docs' picture shows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "digest"
FRONT_ENDS = [*sorted((SRC / "cli").glob("*.py")), *sorted((SRC / "console").glob("*.py"))]


@pytest.mark.parametrize("source", FRONT_ENDS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_front_end_modules_are_short(source: Path) -> None:
    """The command line and the console stay thin: no module of theirs over 450 lines."""
    assert len(source.read_text(encoding="utf-8").splitlines()) <= 450


@pytest.mark.parametrize(
    "source", sorted(SRC.rglob("*.py")), ids=lambda path: str(path.relative_to(SRC))
)
def test_no_function_over_80_lines(source: Path) -> None:
    """Every function fits on a screen or two, so each job reads in one place."""
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 80, f"{node.name} has {length} lines"


def test_the_packages_show_the_flow() -> None:
    """The stages the developers' guide draws are the packages in the tree."""
    packages = {path.name for path in SRC.iterdir() if (path / "__init__.py").exists()}
    assert packages == {"publish", "mail", "send", "app", "cli", "console"}


def test_one_send_composition_for_every_front_end() -> None:
    """`digest send`, the scheduler and the console all send through app.sending.send_month."""
    callers = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "delivery.send_month(" in path.read_text(encoding="utf-8")
    }
    assert callers == {"app/sending.py"}
    for front in ("cli/sending.py", "console/state.py"):
        assert "send_month(" in (SRC / front).read_text(encoding="utf-8")
    assert "scheduled_send(" in (SRC / "cli" / "running.py").read_text(encoding="utf-8")
