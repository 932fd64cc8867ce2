"""`digest bounces`: read a bounce mailbox and mark the subscribers its reports name."""

from __future__ import annotations

from pathlib import Path

import click

import digest.cli as root
from digest.app import wording
from digest.cli.group import _settings, catalogue_option, state_option


@click.command()
@catalogue_option
@state_option
@click.argument("source")
@click.option(
    "-n",
    "--dry-run",
    is_flag=True,
    help="Print what each message is and what would change; record nothing, move nothing.",
)
def bounces(catalogue_path: Path, state_path: Path | None, source: str, dry_run: bool) -> None:
    """Read bounces and complaints from SOURCE and mark the subscribers they name.

    SOURCE is imap://user@host/FOLDER (STARTTLS), imaps://user@host/FOLDER, maildir:PATH or
    mbox:PATH; the IMAP password comes from DIGEST_BOUNCE_PASSWORD. A hard bounce or a complaint
    ends the subscription at once, soft bounces after newsletter.bounces.soft_limit within
    soft_days. Bounces, complaints and auto-replies are moved to digest-processed; every other
    message is left exactly where it was, unread. Running it again changes nothing.

    \b
    Example:
        DIGEST_BOUNCE_PASSWORD=... digest bounces imaps://bounces@mail.example.edu/INBOX -n
    """
    from digest.app import bounces as service

    settings = _settings(catalogue_path, state_path)
    with service.open_source(settings, source) as opened:
        run = service.read_bounces(settings, opened, dry_run, root._now())
    for one in run.handled:
        click.echo(wording.bounce_line(one, dry_run))
    click.echo(wording.bounce_summary(run))
