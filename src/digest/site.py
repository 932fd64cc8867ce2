"""Assemble everything `digest build` publishes: feeds and pages, by relative file name."""

from __future__ import annotations

from datetime import datetime

from digest import feeds, pages
from digest.catalogue import Catalogue


def render(catalogue: Catalogue, now: datetime) -> dict[str, bytes]:
    """Return every published file of the catalogue at `now`, by path relative to the output."""
    files = feeds.render(catalogue, now)
    files["index.html"] = pages.render_index(catalogue, now)
    return files
