"""The `digest` command line: the only module that prints, prompts or exits."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from digest import __version__
from digest.errors import DigestError

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


def catalogue_option(command: F) -> F:
    """Add the -c/--catalogue option every command takes."""
    return click.option(
        "-c",
        "--catalogue",
        "catalogue_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=Path("items.yaml"),
        show_default=True,
        help="The catalogue to read.",
    )(command)


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


def _load(path: Path) -> Any:
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
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("feeds"),
    help="Directory to write the feeds and the feed page into.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 if the directory is out of date.",
)
def build(catalogue_path: Path, output_dir: Path, check_only: bool) -> None:
    """Write every feed and the feed page into the output directory.

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


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count} {plural}"


def main() -> None:
    """Run the command line."""
    cli(prog_name="digest")
