"""`digest worker`: take part in the sends in progress on the shared state database."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

import digest.cli as root
from digest.app import wording
from digest.cli.group import _settings, catalogue_option, state_option

if TYPE_CHECKING:
    from digest.app.sending import Joined


@click.command()
@catalogue_option
@state_option
@click.option(
    "--once/--forever",
    default=True,
    show_default=True,
    help="Exit when no send in progress has anything left to do, or wait for the next send.",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 8),
    default=None,
    show_default=False,
    help="SMTP connections this worker uses at once.  "
    "[default: newsletter.delivery.connections, else 1]",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="How often to look for a send, and at recipients other workers hold.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a claim on recipients holds unrenewed: a killed worker's go to the others "
    "after this.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="How many recipients to claim at a time.",
)
def worker(
    catalogue_path: Path,
    state_path: Path | None,
    once: bool,
    connections: int | None,
    poll: float,
    lease: float,
    batch: int,
) -> None:
    """Help send whatever month is being sent, from this host.

    `digest send` (or the scheduler) freezes the month and enrols its readers; any number of
    workers, on any host sharing the state database (DIGEST_DATABASE_URL) and the catalogue,
    then share its recipients with it: each claims them in batches, and no one is sent the
    digest twice. The rate and daily limit of newsletter.delivery hold for the whole send.

    \b
    Example:
        DIGEST_DATABASE_URL=postgresql://digest@db/digest digest worker --forever
    """
    from digest.app import sending as services
    from digest.cli.sending import _stop_on_signal, _user

    stop = threading.Event()
    options = services.WorkerOptions(
        holder=f"digest worker by {_user()}",
        forever=not once,
        connections=connections,
        poll=poll,
        lease=lease,
        batch=batch,
        stop=stop,
        on_month=_report,
    )
    with _stop_on_signal(stop):
        joined = services.work(_settings(catalogue_path, state_path), root._now, options)
    if not joined:
        click.echo("No send in progress: nothing to do.")


def _report(joined: Joined) -> None:
    """Print this worker's share of one month's send, as `digest send` words a send."""
    summary = joined.summary
    for outcome in summary.outcomes:
        if outcome.status != "sent":
            code = f"{outcome.code} " if outcome.code else ""
            root._warn(f"{outcome.status}: {outcome.address}: {code}{outcome.reply}")
    click.echo(wording.result_line(joined.month.label, summary, joined.transport))
