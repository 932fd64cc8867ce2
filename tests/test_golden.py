"""Golden files: any change in what `digest build` writes shows up as a reviewed diff.

Rewrite them after an intended change with `pytest --update-goldens`, then read the diff.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from digest import catalogue, site
from helpers import NOW

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
SOURCES = {"bundled": HERE.parent / "items.yaml", "rich": HERE / "data" / "rich.yaml"}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_build_matches_golden_files(name: str, update_goldens: bool) -> None:
    """Feeds and the feed page change only when someone meant them to."""
    files = site.render(catalogue.load(SOURCES[name]), NOW)
    directory = GOLDEN / name
    if update_goldens:
        for old in directory.rglob("*"):
            if old.is_file() and str(old.relative_to(directory)) not in files:
                old.unlink()
        for relative, data in files.items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_bytes(data)
    expected = {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }
    assert sorted(files) == sorted(expected)
    for relative, data in sorted(files.items()):
        if data != expected[relative]:
            diff = difflib.unified_diff(
                expected[relative].decode().splitlines(),
                data.decode().splitlines(),
                f"golden/{name}/{relative}",
                "built",
                lineterm="",
            )
            pytest.fail("\n".join(diff))
