"""`digest send`: a month to the list, a dry run, or test copies."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import digest.cli as root
from digest.app import wording
from digest.app.wording import plural
from digest.cli.group import (
    _settings,
    _warn,
    catalogue_option,
    month_option,
    state_option,
)
from digest.errors import DigestError
from digest.months import Month

if TYPE_CHECKING:
    from digest.app.sending import Briefing, Sent
    from digest.app.settings import Settings
    from digest.send.delivery import Summary


def _validate_addresses(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    from digest.app import sending as services

    try:
        return services.addresses(list(values))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@catalogue_option
@month_option
@state_option
@click.option(
    "-y", "--yes", is_flag=True, help="Send without asking (for scripts and the scheduler)."
)
@click.option(
    "-n",
    "--dry-run",
    is_flag=True,
    help="Render and list recipients; send nothing, record nothing.",
)
@click.option(
    "--to",
    "test_addresses",
    multiple=True,
    metavar="ADDR",
    callback=_validate_addresses,
    help="Send a [TEST] copy to ADDR only, outside the ledger (repeatable).",
)
@click.option(
    "--resend",
    is_flag=True,
    help="Send the month again to everyone, even those who have it, as a new copy with a new "
    "Message-ID.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.01),
    default=None,
    show_default=False,
    help="Send at most this many messages a second, for this run.  "
    "[default: newsletter.delivery.rate, else no limit]",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 8),
    default=None,
    show_default=False,
    help="SMTP connections to use at once, for this run.  "
    "[default: newsletter.delivery.connections, else 1]",
)
@click.option(
    "--daily-limit",
    type=click.IntRange(min=1),
    default=None,
    show_default=False,
    help="Send to at most this many recipients in any 24 hours, for this run; the rest wait.  "
    "[default: newsletter.delivery.daily_limit, else no limit]",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Send to the valid rows of the subscriber list and skip the invalid ones, listing them.",
)
@click.option(
    "--ledger-wait",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    envvar="DIGEST_LEDGER_WAIT",
    show_envvar=True,
    metavar="SECONDS",
    help="How long to wait for a ledger another program has locked before stopping.",
)
def send(
    catalogue_path: Path,
    month: Month | None,
    state_path: Path | None,
    yes: bool,
    dry_run: bool,
    test_addresses: tuple[str, ...],
    resend: bool,
    rate: float | None,
    connections: int | None,
    daily_limit: int | None,
    skip_invalid: bool,
    ledger_wait: float,
) -> None:
    """Send a month's digest to every subscriber, once.

    Messages go to the SMTP server in DIGEST_SMTP_URL (smtp://user@host:587, smtps://...), which
    signs in with DIGEST_SMTP_PASSWORD, or the token of DIGEST_SMTP_TOKEN_COMMAND (?auth=xoauth2).
    Without it, each goes to outbox/ as an .eml file: a rehearsal, recorded as nobody's delivery.
    Every delivery is recorded in the ledger: running it again sends only what is missing.

    A subscriber list with an invalid row is refused, every bad row named by its line, unless
    --skip-invalid is given; rows that repeat an address are sent once, with a warning.

    \b
    Example:
        digest send --month 2025-11 --dry-run
    """
    from dataclasses import replace

    settings = replace(_settings(catalogue_path, state_path), ledger_wait=ledger_wait)
    if test_addresses:
        _send_tests(settings, month, test_addresses, dry_run)
    elif dry_run:
        _dry_run(settings, month, skip_invalid)
    else:
        _send(
            settings,
            month,
            yes,
            resend,
            skip_invalid,
            {"connections": connections, "rate": rate, "daily_limit": daily_limit},
        )


_SKIP_FIX = "run the same command with --skip-invalid to send to the valid rows only"


def _send_tests(
    settings: Settings, month: Month | None, addresses: tuple[str, ...], dry_run: bool
) -> None:
    from digest.app import sending as services

    if dry_run:
        preview = services.preview(settings, month, root._now(), skip_invalid=True)
        if preview.issue.items:
            click.echo(
                f"Dry run: nothing is sent. A [TEST] copy of {preview.month.label} would go to "
                f"{', '.join(addresses)} via {preview.transport}."
            )
        else:
            click.echo(f"No items in {preview.month.label}: nothing to send.")
        return
    copies = services.send_tests(settings, month, addresses, root._now())
    if not copies.items:
        click.echo(f"No items in {copies.month.label}: nothing to send.")
        return
    click.echo(
        f"Sent {plural(len(copies.sent), 'test copy')} of {copies.month.label} ([TEST] in the "
        f"subject, not recorded) via {copies.transport}."
    )
    if copies.failures:
        raise DigestError("Not sent: " + "; ".join(copies.failures))


def _dry_run(settings: Settings, month: Month | None, skip_invalid: bool) -> None:
    from digest.app import sending as services

    preview = services.preview(
        settings, month, root._now(), skip_invalid=skip_invalid, warn=_warn, fix=_SKIP_FIX
    )
    if preview.recipients is not None:
        _skipped(preview.recipients)
    if not preview.issue.items:
        click.echo(f"No items in {preview.month.label}: nothing to send.")
        return
    click.echo("Dry run: nothing is sent or recorded.")
    chosen = preview.issue
    _describe(
        preview.subject,
        len(chosen.items),
        len(chosen.categories),
        len(preview.readers),
        None,
        preview.transport,
    )
    for reader in preview.readers:
        picked = (
            "all categories" if reader.categories is None else ", ".join(sorted(reader.categories))
        )
        click.echo(f"  {reader.email}  {reader.name or ''}  ({picked})")
    if preview.without:
        skipped = plural(preview.without, "subscriber")
        click.echo(f"Not sent: {skipped} whose categories have no items this month.")


def _skipped(found: Any) -> None:
    """Say which invalid rows a send leaves out, as --skip-invalid asked."""
    for problem in found.skipped:
        _warn(f"skipped: {problem}")
    if found.skipped:
        them = "it" if len(found.skipped) == 1 else "them"
        click.echo(
            f"Skipping {plural(len(found.skipped), 'invalid row')} of {found.where} "
            f"({wording.lines(list(found.skipped_lines))}); correct {them} and run the same "
            f"command again to send to {them} too."
        )


def _send(
    settings: Settings,
    month: Month | None,
    yes: bool,
    resend: bool,
    skip_invalid: bool,
    execute: dict[str, Any],
) -> None:
    from digest.app import sending as services

    stop = threading.Event()
    with ExitStack() as graceful:
        advance: list[Callable[[Any], None]] = []

        def confirm(briefing: Briefing) -> bool:
            _brief(briefing)
            label, count = briefing.month.label, plural(briefing.to_send, "subscriber")
            if resend and not yes:
                click.confirm(
                    f"Send {label} again to all {count}, {briefing.already} of whom already have "
                    "it?",
                    abort=True,
                )
            elif not yes:
                click.confirm(f"Send {label} to {count}?", abort=True)
            # Only now, after the question (a bar drawn before it garbles it), and counting what
            # will be sent, not who already has it.
            advance.extend(graceful.enter_context(_progress(briefing.to_send)))
            # From here on, Ctrl-C (or SIGTERM) lets the message in flight finish and be recorded.
            graceful.enter_context(_stop_on_signal(stop))
            return True

        options = services.SendOptions(
            holder=f"digest send by {_user()}",
            resend=resend,
            skip_invalid=skip_invalid,
            confirm=confirm,
            progress=lambda outcome: _each(advance, outcome),
            stop=stop,
            warn=_warn,
            fix=_SKIP_FIX,
            on_busy=_ledger_busy,
            execute=execute,
            freeze=True,
        )
        try:
            sent = services.send_month(settings, month, root._now(), root._now, options)
        except KeyboardInterrupt:
            raise DigestError(
                "Interrupted. Run the same command again to send the rest; a message that was in "
                "flight is sent again with the same Message-ID."
            ) from None
    _report(sent, stop)


def _brief(briefing: Briefing) -> None:
    """Print what a send is about to do, with whatever the person should know before saying yes."""
    _skipped(briefing.recipients)
    _describe(
        briefing.subject,
        briefing.items,
        briefing.categories,
        briefing.to_send,
        briefing.already,
        briefing.transport,
    )
    if briefing.in_flight:
        pronoun = "it is" if briefing.in_flight == 1 else "they are"
        click.echo(
            f"{plural(briefing.in_flight, 'message')} may have gone out when the last run "
            f"stopped; {pronoun} sent again with the same Message-ID, so mail clients show each "
            "once."
        )
    if briefing.resuming:
        click.echo(
            f"Going on with the resend begun on {wording.moment(briefing.frozen_at, briefing.tz)}"
            ": whoever has its copy is not sent another."
        )
    if briefing.changed:
        click.echo(
            "The catalogue changed since sending began on "
            f"{wording.moment(briefing.frozen_at, briefing.tz)}; the rest get the version frozen "
            "then, so that everyone reads the same digest."
        )
    if briefing.room is not None and briefing.room < briefing.to_send:
        click.echo(
            f"Daily limit: {briefing.room} can go now; the other "
            f"{briefing.to_send - briefing.room} wait until the last 24 hours leave room."
        )


def _each(steps: list[Callable[[Any], None]], outcome: Any) -> None:
    for step in steps:
        step(outcome)


def _report(sent: Sent, stop: threading.Event) -> None:
    """Print how a send ended; raise DigestError (exit 1) if anyone was not reached."""
    from digest.app import sending as services

    result, label = sent.result, sent.month.label
    if result.kind == "no items":
        click.echo(f"No items in {label}: nothing to send.")
        return
    if result.kind == "no readers":
        click.echo(
            f"No subscriber has items in {label}: nothing to send "
            f"({plural(sent.without, 'subscriber')} whose categories have no items this month)."
        )
        return
    if result.kind == "already sent":
        note = f"; {sent.already_failed} failed, see `digest status`" if sent.already_failed else ""
        when = wording.moment(sent.last_sent_at or "", sent.tz)
        click.echo(
            f"{label} was already sent to {plural(sent.already_sent, 'subscriber')}, the last at "
            f"{when}{note}. Nothing to send; --resend sends it again."
        )
        return
    summary = result.summary
    if summary is None:  # declined at the question: click has already said "Aborted!"
        return
    _summarise(summary, sent)
    if summary.held and summary.held_until is not None:
        limit = result.limits.daily_limit if result.limits else None
        click.echo(
            f"{plural(summary.held, 'subscriber')} held by the daily limit ({limit} recipients "
            f"in any 24 hours): they can go from {wording.moment(summary.held_until, sent.tz)}; "
            "run the same command then, or let `digest schedule` send them."
        )
    if sent.halted is not None:
        raise sent.halted
    left = services.left(result)
    if stop.is_set() and left:
        raise DigestError(
            f"Stopped: {plural(left, 'subscriber')} not sent yet. Run the same command again "
            "to send the rest."
        )
    if not summary.ok:
        raise DigestError(
            "Not everyone has the digest: run the same command later to retry the deferred; "
            "`digest status` lists the failed."
        )


def _summarise(summary: Summary, sent: Sent) -> None:
    """Print what a send did: each recipient not reached, then the one-line summary."""
    for outcome in summary.outcomes:
        if outcome.status != "sent":
            code = f"{outcome.code} " if outcome.code else ""
            _warn(f"{outcome.status}: {outcome.address}: {code}{outcome.reply}")
    rehearsal = sent.outbox is not None
    click.echo(wording.result_line(sent.month.label, summary, sent.transport, rehearsal=rehearsal))
    if sent.outbox is not None:
        click.echo(
            "DIGEST_SMTP_URL is not set, so nothing was emailed: each message was written to "
            f"{sent.outbox}/ as an .eml file. A rehearsal: nobody is recorded as sent, so a send "
            "with DIGEST_SMTP_URL set reaches everyone."
        )


def _ledger_busy(where: str, seconds: float) -> None:
    """Say why a send has paused: the ledger is locked by another program."""
    _warn(wording.ledger_busy(where, seconds))


@contextmanager
def _stop_on_signal(stop: threading.Event) -> Iterator[None]:
    """Make the first SIGINT or SIGTERM set `stop`; a second one interrupts at once."""
    import signal
    import sys

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        _warn("Stopping after the message in flight (Ctrl-C again to stop at once).")
        sys.stderr.flush()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _describe(
    subject: str, items: int, categories: int, recipients: int, already: int | None, via: str
) -> None:
    """Print what a send is about to do, the same way for a dry run and a real one."""
    click.echo(f"Subject:    {subject}")
    click.echo(f"Items:      {items} in {plural(categories, 'category')}")
    have = f", {already} already have it" if already else ""
    click.echo(f"Recipients: {recipients} to send{have}")
    click.echo(f"Transport:  {via}")


@contextmanager
def _progress(total: int) -> Iterator[list[Callable[[Any], None]]]:
    """Yield the steps of a progress bar drawn on a terminal; none when output is piped."""
    import sys

    if not sys.stdout.isatty():
        yield []
        return
    with click.progressbar(length=total, label="Sending", show_pos=True) as bar:
        yield [lambda outcome: bar.update(1)]


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown user"
