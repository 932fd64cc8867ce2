"""The `digest` command line: the only module that prints, prompts or exits."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from digest import __version__
from digest.errors import DigestError
from digest.months import Month

if TYPE_CHECKING:
    from digest.catalogue import Catalogue

F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    """Turns a DigestError into its message on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DigestError as exc:
            if ctx.meta.get("digest.debug"):
                raise
            click.echo(str(exc), err=True)
            ctx.exit(1)


class _MonthType(click.ParamType):  # type: ignore[type-arg] # generic only from click 8.5
    """A `YYYY-MM` option value; anything else is a usage error (exit 2)."""

    name = "YYYY-MM"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Month:
        if isinstance(value, Month):
            return value
        try:
            return Month.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def catalogue_option(command: F) -> F:
    """Add the -c/--catalogue option every command takes."""
    return click.option(
        "-c",
        "--catalogue",
        "catalogue_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=Path("items.yaml"),
        help="The catalogue to read.",
    )(command)


def month_option(command: F) -> F:
    """Add the --month option of the commands that work on one month's digest."""
    return click.option(
        "--month",
        type=_MonthType(),
        default=None,
        show_default=False,
        help="The digest's month.  [default: the previous month in the publication's time zone]",
    )(command)


def output_option(default: str, what: str) -> Callable[[F], F]:
    """Add -o/--output: the directory a command writes into."""

    def decorate(command: F) -> F:
        return click.option(
            "-o",
            "--output",
            "output_dir",
            type=click.Path(path_type=Path, file_okay=False),
            default=Path(default),
            help=f"Directory to write {what} into.",
        )(command)

    return decorate


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.version_option(__version__, "--version", prog_name="digest")
@click.option("--debug", is_flag=True, help="Show the full traceback when something fails.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Publish one catalogue of announcements as feeds and a monthly email digest.

    \b
    Example:
        digest check && digest build
    """
    ctx.meta["digest.debug"] = debug


def _now() -> datetime:
    return datetime.now(UTC)


def _load(path: Path) -> Catalogue:
    from digest import catalogue

    return catalogue.load(path)


@cli.command()
@catalogue_option
def check(catalogue_path: Path) -> None:
    """Validate the catalogue and print a one-line summary.

    Every mistake is reported at once, one per line, as FILE:LINE: PATH: MESSAGE.

    \b
    Example:
        digest check -c items.yaml
    """
    counts = _load(catalogue_path).counts(_now())
    click.echo(
        f"{catalogue_path} is valid: {_plural(counts['items'], 'item')} "
        f"({counts['published']} published, {_plural(counts['drafts'], 'draft')}, "
        f"{counts['scheduled']} scheduled) in {_plural(counts['categories'], 'category')}."
    )


@cli.command()
@catalogue_option
@output_option("feeds", "the feeds, the feed page and the archive")
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 if the directory is out of date.",
)
def build(catalogue_path: Path, output_dir: Path, check_only: bool) -> None:
    """Write every feed, the feed page and each month's web digest into the output directory.

    Files whose content is unchanged are left alone; if anything fails, no file is changed.

    \b
    Example:
        digest build -o feeds/
    """
    from digest import output, site

    catalogue = _load(catalogue_path)
    files = site.render(catalogue, _now())
    where = f"{output_dir}/"
    if check_only:
        stale = output.stale(output_dir, files)
        if stale:
            for name in stale:
                click.echo(f"{output_dir / name} is out of date", err=True)
            count = _plural(len(stale), "file")
            raise DigestError(f"{where}: {count} out of date; run `digest build` to update them")
        click.echo(f"{where} is up to date ({_plural(len(files), 'file')}).")
        return
    report = output.write(output_dir, files)
    published = catalogue.counts(_now())["published"]
    click.echo(
        f"Built {where}: {_plural(len(files), 'file')} ({len(report.written)} written, "
        f"{len(report.unchanged)} unchanged) from {_plural(published, 'published item')}."
    )


@cli.command()
@catalogue_option
@month_option
@output_option("out", "the digest files")
def render(catalogue_path: Path, month: Month | None, output_dir: Path) -> None:
    """Render a month's digest as HTML, plain text and the .eml a subscriber receives.

    Writes digest-YYYY-MM.html (CSS inlined), .txt and .eml, the last addressed to a placeholder
    subscriber. A month with no items writes nothing.

    \b
    Example:
        digest render --month 2025-11 -o out/
    """
    from digest import message, newsletter, output

    catalogue = _load(catalogue_path)
    now = _now()
    month = month or Month.previous(now, catalogue.publication.tz)
    settings = catalogue.newsletter
    if settings is None:
        raise DigestError(
            f"{catalogue_path}: there is no `newsletter` block; add one (from, subject, schedule, "
            "unsubscribe) to render the digest, see README"
        )
    chosen = newsletter.issue(catalogue, month, now)
    if not chosen.items:
        click.echo(f"No items in {month.label}: nothing to render, no files written.")
        return
    rendered = newsletter.Renderer(catalogue).render(chosen)
    page, text = rendered.personalise(None, settings.unsubscribe)
    envelope = message.Envelope(
        sender=settings.sender,
        reply_to=settings.reply_to,
        recipient=message.PLACEHOLDER_RECIPIENT,
        subject=rendered.subject,
        unsubscribe=settings.unsubscribe,
    )
    email = message.build(catalogue.publication, month, envelope, page, text, now)
    html_bytes = page.encode("utf-8")
    paths = {kind: f"digest-{month}.{kind}" for kind in ("html", "txt", "eml")}
    output.write(
        output_dir,
        {paths["html"]: html_bytes, paths["txt"]: text.encode("utf-8"), paths["eml"]: bytes(email)},
    )
    html_path, text_path, eml_path = (output_dir / name for name in paths.values())
    click.echo(
        f"Rendered {month.label}: {_plural(rendered.item_count, 'item')} in "
        f"{_plural(len(chosen.sections), 'category')}: {html_path} "
        f"({_kilobytes(len(html_bytes))}), {text_path}, {eml_path}."
    )
    if len(html_bytes) > newsletter.GMAIL_CLIP_BYTES:
        click.echo(
            f"warning: {html_path} is {_kilobytes(len(html_bytes))}; Gmail clips messages over "
            f"{_kilobytes(newsletter.GMAIL_CLIP_BYTES)} and hides the rest behind "
            '"[Message clipped]"',
            err=True,
        )


def _kilobytes(size: int) -> str:
    return f"{size / 1024:.1f} KB"


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count} {plural}"


def main() -> None:
    """Run the command line."""
    cli(prog_name="digest")
