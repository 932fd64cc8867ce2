"""Commands that run or watch sending: schedule, status, serve."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import digest.cli as root
from digest.app import wording
from digest.app.wording import plural
from digest.cli.group import (
    _settings,
    catalogue_option,
    state_option,
)
from digest.errors import DigestError
from digest.months import Month

if TYPE_CHECKING:
    from collections.abc import Callable

    from digest.app.sending import Status
    from digest.app.settings import Settings
    from digest.publish.catalogue import Catalogue
    from digest.send import schedule as scheduling

import logging


@click.command()
@catalogue_option
@state_option
@click.option(
    "-n", "--dry-run", is_flag=True, help="Print the next five runs and what each would send."
)
@click.option(
    "--outbox",
    "rehearse",
    is_flag=True,
    help="Run without DIGEST_SMTP_URL, writing each month to outbox/ (a rehearsal).",
)
def schedule(catalogue_path: Path, state_path: Path | None, dry_run: bool, rehearse: bool) -> None:
    """Send each month's digest on the schedule in newsletter.schedule, in the foreground.

    Each run sends the previous month through the same path as `digest send --yes` (same lock,
    same ledger; a subscriber list with an invalid row stops the run, which is tried again
    later). Started after a missed run, it catches up once. SIGTERM or Ctrl-C stops it cleanly: a
    message in flight is finished and recorded first. With DIGEST_DATABASE_URL naming PostgreSQL,
    run one on each of two or more hosts: one acts, the others stand by and take over within a
    minute of it stopping. On an SQLite file, run one.

    \b
    Example:
        digest schedule --dry-run
    """
    from digest.app import publishing
    from digest.app import sending as services
    from digest.send import schedule as scheduling

    settings = _settings(catalogue_path, state_path)
    catalogue = publishing.load(settings)
    expression = catalogue.mailing().schedule
    publishing.trigger(catalogue)
    tz = catalogue.publication.tz
    if dry_run:
        now = root._now()
        click.echo(f"Schedule: {expression} in {tz} (now {now.astimezone(tz):%Y-%m-%d %H:%M %Z}).")
        for run in services.schedule_preview(settings, now):
            if run.moment is None:
                click.echo(f"On start, catching up the missed run: {run.month.label}: {run.what}")
            else:
                click.echo(f"{wording.moment(run.moment, tz)}  {run.month.label}: {run.what}")
        return
    if settings.uses_outbox and not rehearse:
        raise DigestError(
            "DIGEST_SMTP_URL is not set, so the scheduler would only write each month to "
            f"{settings.outbox}/ and nobody would receive the digest; set DIGEST_SMTP_URL to the "
            "mail server (see the IT guide), or start it with --outbox for a rehearsal"
        )
    _log_to_stderr(tz)
    warn = logging.getLogger("digest.schedule").warning

    def run_month(month: Month, stop: threading.Event) -> Any:
        return services.scheduled_send(
            settings, month, stop, root._now, lambda line: warn("%s", line)
        )

    scheduling.Scheduler(
        expression, tz, run_month, lambda month: services.settled(settings, month), root._now,
        poll=_bounce_poll(settings, catalogue), standby=_standby(settings),
    ).run()  # fmt: skip


def _standby(settings: Settings) -> scheduling.Standby | None:
    """Return the scheduler lock on PostgreSQL (one scheduler acts), or None on SQLite."""
    from digest.send import standby

    if settings.database_url is None:
        return None
    return standby.SchedulerLock(settings.database_url)


def _bounce_poll(settings: Settings, catalogue: Catalogue) -> Callable[[], str] | None:
    """Return the scheduler's read of DIGEST_BOUNCE_SOURCE, when newsletter.bounces is set."""
    from digest.app import bounces

    news = catalogue.newsletter
    if news is None or news.bounces is None or settings.bounce_source is None:
        return None
    return lambda: bounces.scheduled(settings, root._now())


class _ZoneFormatter(logging.Formatter):
    """Log lines stamped in the publication's time zone, with its offset."""

    def __init__(self, tz: tzinfo) -> None:
        super().__init__("%(asctime)s %(message)s")
        self.tz = tz

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, self.tz).isoformat(timespec="seconds")


def _log_to_stderr(tz: tzinfo) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_ZoneFormatter(tz))
    logger = logging.getLogger("digest")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # APScheduler's own chatter ("Added job", "Running job") would drown the decisions.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


@click.command()
@catalogue_option
@state_option
def status(catalogue_path: Path, state_path: Path | None) -> None:
    """Show what was sent, when, to how many, and what failed.

    \b
    Example:
        digest status --state .digest/state.sqlite3
    """
    from digest.app import sending as services

    settings = _settings(catalogue_path, state_path)
    found = services.status(settings, root._now())
    if not found.exists:
        click.echo(f"Nothing sent yet ({settings.state_path} does not exist).")
    else:
        _status_months(found)
    for sent_now, holder in found.sending:
        click.echo(f"Sending now: {sent_now}, by {holder}.")
    for run in found.rehearsals:
        click.echo(
            f"{run.month}: {plural(run.sent, 'message')} written to {run.transport} at "
            f"{_when(run.started_at, found.tz)} (a rehearsal: nothing was emailed)."
        )
    if found.ended:
        click.echo(
            f"{wording.off_the_list(dict(found.ended))}: never sent again, whatever "
            "subscribers.csv says."
        )
    if found.last_decision is not None:
        at, decided, what, detail = found.last_decision
        more = f" ({detail})" if detail else ""
        click.echo(f"Last scheduler decision: {decided} {what}{more}, at {_when(at, found.tz)}.")
    if found.next_run is not None:
        moment, month = found.next_run
        click.echo(
            f"Next scheduled run: {wording.moment(moment, found.tz)}, for {month.label} "
            "(when `digest schedule` is running)."
        )
    elif found.next_run_problem is not None:
        click.echo(f"Next scheduled run: {found.next_run_problem}.")


def _status_months(found: Status) -> None:
    """Print the ledger's months, newest first, and every recipient not delivered."""
    if not found.months:
        click.echo("Nothing sent yet.")
        return
    header = f"{'month':<8} {'sent':>6} {'failed':>6} {'deferred':>8} {'pending':>7}"
    click.echo(f"{header}  last activity")
    for entry in found.months:
        counts = entry.counts
        waiting = counts["pending"] + counts["sending"]
        click.echo(
            f"{entry.month:<8} {counts['sent']:>6} {counts['failed']:>6} "
            f"{counts['deferred']:>8} {waiting:>7}  {_when(entry.last, found.tz)}"
        )
    if found.not_delivered:
        click.echo("Not delivered:")
        for problem in found.not_delivered:
            click.echo(f"  {problem}")
    for month, held, until in found.held:
        click.echo(
            f"Held by the daily limit: {month}: {plural(held, 'subscriber')}, "
            f"until {_when(until, found.tz)}."
        )
    _status_bounces(found)


def _status_bounces(found: Status) -> None:
    """Print each month's bounces and complaints with their rates, and warn of high ones."""
    if not found.bounces:
        return
    header = f"{'month':<8} {'sent':>6} {'failed':>6} {'bounced':>7} {'rate':>7} "
    click.echo(f"{header}{'complained':>10} {'rate':>7}")
    for entry in found.bounces:
        click.echo(
            f"{entry.month:<8} {entry.sent:>6} {entry.failed:>6} {entry.bounced:>7} "
            f"{wording.rate(entry.bounced, entry.sent):>7} {entry.complained:>10} "
            f"{wording.rate(entry.complained, entry.sent):>7}"
        )
    for entry in found.bounces:
        for warning in entry.warnings:
            click.echo(f"Warning: {warning}.", err=True)


def _when(stamp: str, tz: tzinfo | None) -> str:
    """Return a ledger time stamp in the publication's zone (UTC when the catalogue is broken)."""
    return wording.moment(stamp, tz or UTC)


@click.command()
@catalogue_option
@state_option
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, help="Port to listen on.")
@click.option(
    "--feeds",
    "feeds_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    show_default=False,
    help="The built feeds to show under /feeds/.  [default: feeds/ beside the catalogue]",
)
def serve(
    catalogue_path: Path, state_path: Path | None, host: str, port: int, feeds_dir: Path | None
) -> None:
    """Run the staff console: preview, test and send the digest from a browser.

    Needs DIGEST_CONSOLE_PASSWORD (the staff password). DIGEST_SECRET_KEY signs sessions and
    unsubscribe links; without it, sessions last until the console stops. With DIGEST_PUBLIC_URL
    set (and then DIGEST_SECRET_KEY too), sends carry one-click unsubscribe links to it, and the
    console's cookies are sent over https only when it is https. Behind a reverse proxy, set
    DIGEST_TRUSTED_PROXIES to how many proxies append to X-Forwarded-For (default 0: ignored).
    Sends go through DIGEST_SMTP_URL as `digest send` does. Never runs the scheduler.

    \b
    Example:
        DIGEST_CONSOLE_PASSWORD=... digest serve --port 8000
    """
    import signal

    from werkzeug.serving import make_server

    from digest import console

    settings = _settings(catalogue_path, state_path)
    config = console.Config.of(settings, feeds_dir or settings.default("feeds"), root._now)
    app = console.create_app(config)
    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as exc:
        raise DigestError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    logging.getLogger("digest").addHandler(logging.StreamHandler())
    logging.getLogger("digest").setLevel(logging.INFO)
    unsubscribing = (
        f"one-click unsubscribe links point to {settings.public_url}"
        if settings.public_url
        else "no one-click unsubscribe links (DIGEST_PUBLIC_URL is not set)"
    )
    click.echo(
        f"Staff console on http://{host}:{server.server_port}/ for {catalogue_path}; "
        f"{unsubscribing}. Ctrl-C stops it."
    )
    if not settings.secret_key:
        click.echo(
            "DIGEST_SECRET_KEY is not set: logins are signed with a key made for this run, so "
            "staff log in again after a restart."
        )
    if settings.trusted_proxies:
        proxies = settings.trusted_proxies
        click.echo(
            f"Client addresses come from the last {proxies} X-Forwarded-For "
            f"{'entry' if proxies == 1 else 'entries'} (DIGEST_TRUSTED_PROXIES={proxies})."
        )

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops it as Ctrl-C does: sends finish their message

    signal.signal(signal.SIGTERM, interrupt)
    try:
        server.serve_forever()  # Werkzeug's returns on Ctrl-C (KeyboardInterrupt)
    finally:
        server.server_close()
        stopped = console.console_of(app).shutdown()
    for month in stopped:
        click.echo(
            f"The send of {month.label} was stopped after its message in flight; "
            "start it again (console or `digest send`) to send the rest."
        )
    click.echo("Staff console stopped.")
