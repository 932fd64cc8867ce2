"""The click group `digest` and the options its commands share.

The commands live beside it, each module imported only when one of its commands runs (or
`digest --help` lists them all), as click's documentation shows for lazily loading subcommands:
`publishing` (check, build, render), `sending` (send), `worker` (worker: joins the sends in
progress), `running` (schedule, status, serve), `doctor` (doctor), `subscribers` (the subscriber
store), `bounces` (bounces), `database` (db: the schema, a copy).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from digest import __version__

if TYPE_CHECKING:
    from digest.app.settings import Settings
    from digest.months import Month

F = TypeVar("F", bound=Callable[..., Any])

# Each command: the module that defines it, and its name there.
COMMANDS = {
    "bounces": ("digest.cli.bounces", "bounces"),
    "build": ("digest.cli.publishing", "build"),
    "check": ("digest.cli.publishing", "check"),
    "db": ("digest.cli.database", "db"),
    "doctor": ("digest.cli.doctor", "doctor"),
    "render": ("digest.cli.publishing", "render"),
    "schedule": ("digest.cli.running", "schedule"),
    "send": ("digest.cli.sending", "send"),
    "serve": ("digest.cli.running", "serve"),
    "status": ("digest.cli.running", "status"),
    "subscribers": ("digest.cli.subscribers", "subscribers"),
    "worker": ("digest.cli.worker", "worker"),
}


class _Group(click.Group):
    """Loads each command when it is needed; turns a DigestError into its message and exit 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, name = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), name)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}.{name} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # Imported here, when something failed: `digest --version` needs none of it.
            from digest.errors import DigestError

            if not isinstance(exc, DigestError) or ctx.meta.get("digest.debug"):
                raise
            click.echo(str(exc), err=True)
            ctx.exit(1)


class _MonthType(click.ParamType):  # type: ignore[type-arg] # generic only from click 8.5
    """A `YYYY-MM` option value; anything else is a usage error (exit 2)."""

    name = "YYYY-MM"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Month:
        from digest.months import Month

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
        help="The catalogue to read; default paths are relative to its folder.",
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


def state_option(command: F) -> F:
    """Add --state: the delivery ledger."""
    return click.option(
        "--state",
        "state_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        show_default=False,
        help="The state database as an SQLite file; when DIGEST_DATABASE_URL names PostgreSQL "
        "the state is there, and this file's folder keeps only this machine's send locks.  "
        "[default: DIGEST_STATE, else .digest/state.sqlite3 beside the catalogue]",
    )(command)


def output_option(default: str, what: str) -> Callable[[F], F]:
    """Add -o/--output: the directory a command writes into."""

    def decorate(command: F) -> F:
        return click.option(
            "-o",
            "--output",
            "output_dir",
            type=click.Path(path_type=Path, file_okay=False),
            default=None,
            show_default=False,
            help=f"Directory to write {what} into.  [default: {default}/ beside the catalogue]",
        )(command)

    return decorate


def _settings(catalogue_path: Path, state_path: Path | None = None) -> Settings:
    """Return the settings of this run: the options given, the environment, the defaults."""
    from digest.app import settings as configuration

    return configuration.load(catalogue_path, os.environ, state_path=state_path)


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


def _warn(line: str) -> None:
    click.echo(line, err=True)
