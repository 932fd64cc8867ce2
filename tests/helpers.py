"""Catalogue builders for tests: a small valid catalogue with parts to change."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

from digest.publish import catalogue, site

HEADER = """\
publication:
  title: Campus News
  site_url: https://news.example.edu/
  feeds_url: https://news.example.edu/feeds/
  author: {name: News Office, email: news@example.edu}
  language: en
  timezone: Asia/Hong_Kong
  feed_limit: 50
  categories:
    - {slug: research, name: Research}
    - {slug: people, name: People}
  sections:
    - {slug: features, name: Features}
items:
"""

# A moment after every dated item in these tests and before the far-future "scheduled" ones.
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def item(
    id: str = "first",
    title: str = "First item",
    date: str = "2025-11-19",
    category: str = "research",
    summary: str = "A summary.",
    **extra: str,
) -> str:
    """Return one item as YAML text, with any extra keys given as raw YAML values."""
    lines = [
        f"  - id: {id}",
        f"    title: {title}",
        f"    date: {date}",
        f"    category: {category}",
        f"    summary: {summary}",
    ]
    lines += [f"    {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def yaml_catalogue(*items: str, header: str = HEADER) -> str:
    """Return a whole catalogue with the given items (default: one plain item)."""
    return header + "".join(items or (item(),))


def load_text(text: str, tmp_path: Path) -> catalogue.Catalogue:
    """Validate catalogue text written to tmp_path/items.yaml."""
    path = tmp_path / "items.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return catalogue.load(path, "items.yaml")


def build_text(text: str, tmp_path: Path, now: datetime = NOW) -> dict[str, bytes]:
    """Return every file `digest build` would write for catalogue text."""
    return site.render(load_text(text, tmp_path), now)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Return every file below `directory` with its bytes and mtime, to prove nothing changed."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
