"""Commands on the catalogue and what it publishes: check, build, render."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

import digest.cli as root
from digest.app import wording
from digest.app.wording import plural
from digest.cli.group import (
    _settings,
    _warn,
    catalogue_option,
    month_option,
    output_option,
)
from digest.errors import DigestError
from digest.months import Month

if TYPE_CHECKING:
    pass


@click.command()
@catalogue_option
def check(catalogue_path: Path) -> None:
    """Validate the catalogue and print a one-line summary.

    Every mistake is reported at once, one per line, as FILE:LINE: PATH: MESSAGE.

    \b
    Example:
        digest check -c items.yaml
    """
    from digest.app import publishing as services

    report = services.check(_settings(catalogue_path), root._now(), _warn)
    counts = report.counts
    line = (
        f"{catalogue_path} is valid: {plural(counts['items'], 'item')} "
        f"({counts['published']} published, {plural(counts['drafts'], 'draft')}, "
        f"{counts['scheduled']} scheduled) in {plural(counts['categories'], 'category')}"
    )
    if report.list_name is not None:
        line += f"; {report.list_name}: {plural(report.subscribers, 'subscriber')}"
        if report.duplicates:
            line += f" ({plural(len(report.duplicates), 'duplicate')} sent once)"
    click.echo(line + ".")


@click.command()
@catalogue_option
@output_option("feeds", "the feeds, the feed page and the archive")
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 if the directory is out of date or holds temporary files that an "
    "interrupted build left.",
)
def build(catalogue_path: Path, output_dir: Path | None, check_only: bool) -> None:
    """Write every feed, the feed page and each month's web digest into the output directory.

    Files whose content is unchanged are left alone; if anything fails, no file is changed.
    Temporary files that an interrupted build left are removed; two builds of one directory
    never run at once (the second stops with a message).

    \b
    Example:
        digest build -o feeds/
    """
    from digest.app import publishing as services

    settings = _settings(catalogue_path)
    output_dir = output_dir or settings.default("feeds")
    where = f"{output_dir}/"
    if check_only:
        found = services.build_check(settings, output_dir, root._now())
        for name in found.stale:
            _warn(f"{output_dir / name} is out of date")
        for name in found.strays:
            _warn(f"{output_dir / name} is a leftover temporary file")
        stale, strays = len(found.stale), len(found.strays)
        leftovers = f"{plural(strays, 'leftover temporary file')} of an interrupted build"
        if stale and strays:
            raise DigestError(
                f"{where}: {plural(stale, 'file')} out of date and {leftovers}; run "
                "`digest build` to update them and remove the leftovers"
            )
        if stale:
            raise DigestError(
                f"{where}: {plural(stale, 'file')} out of date; run `digest build` to update them"
            )
        if strays:
            raise DigestError(f"{where}: {leftovers}; run `digest build` to remove them")
        click.echo(f"{where} is up to date ({plural(found.files, 'file')}).")
        return
    report = services.build(settings, output_dir, root._now())
    click.echo(
        wording.built(
            where,
            report.total,
            report.written,
            report.unchanged,
            report.published,
            len(report.removed),
        )
    )


@click.command()
@catalogue_option
@month_option
@output_option("out", "the digest files")
def render(catalogue_path: Path, month: Month | None, output_dir: Path | None) -> None:
    """Render a month's digest as HTML, plain text and the .eml a subscriber receives.

    Writes digest-YYYY-MM.html (CSS inlined), .txt and .eml, the last addressed to a placeholder
    subscriber. A month with no items writes nothing.

    \b
    Example:
        digest render --month 2025-11 -o out/
    """
    from digest.app import publishing as services
    from digest.mail.newsletter import GMAIL_CLIP_BYTES

    settings = _settings(catalogue_path)
    output_dir = output_dir or settings.default("out")
    report = services.render_month(settings, month, output_dir, root._now())
    if not report.paths:
        click.echo(f"No items in {report.month.label}: nothing to render, no files written.")
        return
    html_path, text_path, eml_path = report.paths
    size = wording.kilobytes(report.html_size)
    click.echo(
        f"Rendered {report.month.label}: {plural(report.items, 'item')} in "
        f"{plural(report.categories, 'category')}: {html_path} ({size}), {text_path}, {eml_path}."
    )
    if report.clipped:
        _warn(
            f"warning: {html_path} is {size}; Gmail clips messages over "
            f'{wording.kilobytes(GMAIL_CLIP_BYTES)} and hides the rest behind "[Message clipped]"'
        )
