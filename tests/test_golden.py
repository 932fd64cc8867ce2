"""Golden files: any change in what `digest build` writes shows up as a reviewed diff.

Rewrite them after an intended change with `pytest --update-goldens`, then read the diff.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from digest.mail import newsletter
from digest.months import Month
from digest.publish import catalogue, site
from helpers import NOW

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
SOURCES = {
    "bundled": HERE.parent / "items.yaml",
    "rich": HERE / "data" / "rich.yaml",
    # newsletter.issues and newsletter.brand: an intro, an explicit order, a logo, an accent.
    "shaped": HERE / "data" / "shaped.yaml",
}


def digest_files(name: str) -> dict[str, bytes]:
    """Return November 2025's digest as the placeholder subscriber gets it."""
    cat = catalogue.load(SOURCES[name])
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, Month(2025, 11), NOW))
    html, text = rendered.personalise(None, "mailto:unsubscribe@example.edu")
    return {"digest-2025-11.html": html.encode(), "digest-2025-11.txt": text.encode()}


@pytest.mark.parametrize(
    ("name", "kind"), [(n, k) for n in sorted(SOURCES) for k in ("build", "digest")]
)
def test_output_matches_golden_files(name: str, kind: str, update_goldens: bool) -> None:
    """Feeds, pages and the newsletter change only when someone meant them to."""
    if kind == "build":
        files = site.render(catalogue.load(SOURCES[name]), NOW)
        directory = GOLDEN / name
    else:
        files = digest_files(name)
        directory = GOLDEN / f"{name}-digest"
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
