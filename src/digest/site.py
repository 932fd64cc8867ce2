"""Assemble everything `digest build` publishes: feeds and pages, by relative file name."""

from __future__ import annotations

from datetime import datetime

from digest import feeds, newsletter, pages
from digest.catalogue import Catalogue


def render(catalogue: Catalogue, now: datetime) -> dict[str, bytes]:
    """Return every published file of the catalogue at `now`, by path relative to the output."""
    files = feeds.render(catalogue, now)
    archive = []
    renderer = newsletter.Renderer(catalogue)
    for issue in newsletter.issues(catalogue, now):
        month = issue.month
        page = renderer.render(issue, web=True)
        files[newsletter.archive_path(month)] = page.html.encode("utf-8")
        archive.append(
            pages.ArchiveLink(month.label, newsletter.archive_path(month), page.item_count)
        )
    files["index.html"] = pages.render_index(catalogue, now, archive)
    return files
