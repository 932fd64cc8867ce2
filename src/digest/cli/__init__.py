"""The `digest` command line: the only package that prints, prompts or exits.

Each command reads its options and the environment into `Settings`, makes one call to the
service layer (`digest.app.publishing`, `digest.app.sending`) and words what comes back
(`digest.app.wording`). `group` holds the click group and the options the commands share; the
commands live beside it: `publishing` (check, build, render), `sending` (send), `worker` (worker:
joins the sends in progress), `running` (schedule, status, serve), `doctor` (doctor),
`subscribers` (the subscriber store), `bounces` (bounces), `database` (db: the schema, a copy).

`main` first lets `quick` answer a `digest build` that has nothing to do, which it does without
importing click or any command; everything else runs the click group. So importing this package
imports neither: `cli` and the shared options are loaded from `group` when first asked for.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads it the same
if TYPE_CHECKING:
    from digest.cli.group import _settings as _settings
    from digest.cli.group import _warn as _warn
    from digest.cli.group import catalogue_option as catalogue_option
    from digest.cli.group import cli as cli
    from digest.cli.group import month_option as month_option
    from digest.cli.group import output_option as output_option
    from digest.cli.group import state_option as state_option

# What `from digest.cli import ...` finds in `group`.
_GROUP = frozenset(
    (
        "_settings",
        "_warn",
        "catalogue_option",
        "cli",
        "month_option",
        "output_option",
        "state_option",
    )
)


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    """Run the command line."""
    import os

    from digest.cli import quick

    status = quick.build(sys.argv[1:], os.environ)
    if status is not None:
        sys.exit(status)  # as click's group ends, whatever the status
    from digest.cli.group import cli

    cli(prog_name="digest")


def __getattr__(name: str) -> object:
    """Return one of `group`'s names, importing click and the commands the first time."""
    if name in _GROUP:
        from digest.cli import group

        return getattr(group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
