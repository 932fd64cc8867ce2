"""The `digest` command line: the only module that prints, prompts or exits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from digest import __version__
from digest.errors import CatalogueError, DigestError, Problem, SendBusyError
from digest.months import Month

if TYPE_CHECKING:
    from digest.mail.newsletter import Issue
    from digest.publish.catalogue import Catalogue
    from digest.send.delivery import MonthResult, Send, Summary
    from digest.send.ledger import Ledger
    from digest.send.schedule import Outcome as ScheduleOutcome
    from digest.send.subscribers import SubscriberList
    from digest.send.transport import Transport

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


def state_option(command: F) -> F:
    """Add --state: the delivery ledger."""
    return click.option(
        "--state",
        "state_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=Path(".digest/state.sqlite3"),
        envvar="DIGEST_STATE",
        show_envvar=True,
        help="The delivery ledger (SQLite): what was sent to whom.",
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


def _load(path: Path, raw: bytes | None = None) -> Catalogue:
    import gc

    from digest.publish import catalogue

    loaded = catalogue.load(path) if raw is None else catalogue.parse(raw, path, str(path))
    # The catalogue lives as long as the command and holds no cycles: moved out of the cyclic
    # collector's sight, it is no longer traversed by every full collection while rendering.
    gc.freeze()
    return loaded


@cli.command()
@catalogue_option
def check(catalogue_path: Path) -> None:
    """Validate the catalogue and print a one-line summary.

    Every mistake is reported at once, one per line, as FILE:LINE: PATH: MESSAGE.

    \b
    Example:
        digest check -c items.yaml
    """
    from digest.mail import newsletter

    catalogue = _load(catalogue_path)
    now = _now()
    if catalogue.newsletter is not None:
        _trigger(catalogue)
        newsletter.check(catalogue, now)
    counts = catalogue.counts(now)
    line = (
        f"{catalogue_path} is valid: {_plural(counts['items'], 'item')} "
        f"({counts['published']} published, {_plural(counts['drafts'], 'draft')}, "
        f"{counts['scheduled']} scheduled) in {_plural(counts['categories'], 'category')}"
    )
    if catalogue.newsletter is not None:
        # A duplicate row is harmless (it is sent once) but worth knowing of; a bad row is not.
        listed, where = _subscribers(catalogue, strict=False)
        _warn_duplicates(listed, _warn)
        if listed.invalid:
            raise CatalogueError(listed.invalid)
        line += f"; {where}: {_plural(len(listed.subscribers), 'subscriber')}"
        if listed.duplicates:
            line += f" ({_plural(len(listed.duplicates), 'duplicate')} sent once)"
    click.echo(line + ".")


@cli.command()
@catalogue_option
@output_option("feeds", "the feeds, the feed page and the archive")
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 if the directory is out of date or holds temporary files that an "
    "interrupted build left.",
)
def build(catalogue_path: Path, output_dir: Path, check_only: bool) -> None:
    """Write every feed, the feed page and each month's web digest into the output directory.

    Files whose content is unchanged are left alone; if anything fails, no file is changed.
    Temporary files that an interrupted build left are removed; two builds of one directory
    never run at once (the second stops with a message).

    \b
    Example:
        digest build -o feeds/
    """
    from digest.publish import buildcache

    where = f"{output_dir}/"
    if check_only:
        from digest.publish import output, site

        catalogue = _load(catalogue_path)
        files = site.render(catalogue, _now())
        with output.locked(output_dir, shared=True):
            stale = output.stale(output_dir, files)
            strays = output.strays(output_dir, files)
        for name in stale:
            click.echo(f"{output_dir / name} is out of date", err=True)
        for name in strays:
            click.echo(f"{output_dir / name} is a leftover temporary file", err=True)
        leftovers = f"{_plural(len(strays), 'leftover temporary file')} of an interrupted build"
        if stale and strays:
            raise DigestError(
                f"{where}: {_plural(len(stale), 'file')} out of date and {leftovers}; run "
                "`digest build` to update them and remove the leftovers"
            )
        if stale:
            count = _plural(len(stale), "file")
            raise DigestError(f"{where}: {count} out of date; run `digest build` to update them")
        if strays:
            raise DigestError(f"{where}: {leftovers}; run `digest build` to remove them")
        click.echo(f"{where} is up to date ({_plural(len(files), 'file')}).")
        return
    now = _now()
    try:
        raw = catalogue_path.read_bytes()
    except OSError:
        raw = None  # the catalogue module reports it
    # The build cache: nothing to do when every input is as the last build found it.
    environment = buildcache.environment(catalogue_path)
    manifest_path = buildcache.location(output_dir)
    manifest = buildcache.read(manifest_path)
    inputs = buildcache.inputs(raw or b"", environment)
    if raw is not None and manifest is not None and manifest.fresh(output_dir, inputs, now):
        from digest import files as staging

        removed: tuple[str, ...] = ()
        if staging.strays(output_dir, manifest.files):  # rare: what a killed build left
            from digest.publish import output

            removed = output.tidy(output_dir, manifest.files)
        total = len(manifest.files)
        click.echo(
            f"Built {where}: {_plural(total, 'file')} (0 written, {total} unchanged) "
            f"from {_plural(manifest.published, 'published item')}{_removed(removed)}."
        )
        return
    from digest.publish import output, site  # not before: a build with nothing to do needs neither

    catalogue = _load(catalogue_path, raw)
    current = manifest.current(output_dir) if manifest is not None else set()
    reusable = {name: manifest.keys[name] for name in current if manifest and name in manifest.keys}
    result = site.build(catalogue, now, environment, reusable)
    report = output.write(output_dir, result.files)
    published = catalogue.counts(now)["published"]
    buildcache.record(
        manifest_path, output_dir, inputs, catalogue.next_change(now), published, result.keys
    )
    unchanged = len(report.unchanged) + len(result.reused)
    click.echo(
        f"Built {where}: {_plural(len(result.keys), 'file')} ({len(report.written)} written, "
        f"{unchanged} unchanged) from {_plural(published, 'published item')}"
        f"{_removed(report.removed)}."
    )


def _removed(names: tuple[str, ...]) -> str:
    if not names:
        return ""
    return f"; removed {_plural(len(names), 'leftover temporary file')} of an interrupted build"


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
    from digest.mail import message, newsletter
    from digest.publish import output

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


def _trigger(catalogue: Catalogue) -> None:
    """Check that newsletter.schedule is a cron line the scheduler can follow."""
    from digest.send import schedule as scheduling

    assert catalogue.newsletter is not None  # noqa: S101 -- callers check
    try:
        scheduling.trigger(catalogue.newsletter.schedule, catalogue.publication.tz)
    except DigestError as exc:
        raise DigestError(f"{catalogue.path}: {exc}") from exc


def _subscribers(catalogue: Catalogue, *, strict: bool = True) -> tuple[SubscriberList, Path]:
    """Load the subscriber list the catalogue names, relative to the catalogue."""
    from digest.send import subscribers

    return subscribers.of_catalogue(catalogue, strict=strict)


def _warn(line: str) -> None:
    click.echo(line, err=True)


def _warn_duplicates(listed: SubscriberList, warn: Callable[[str], None]) -> None:
    for problem in listed.duplicates:
        warn(f"warning: {problem}")


def _recipients(
    catalogue: Catalogue, skip_invalid: bool, warn: Callable[[str], None], fix: str
) -> tuple[SubscriberList, Path]:
    """Load the list a send goes to: each duplicate row warned of, invalid rows refused.

    With `skip_invalid` the invalid rows are left out (the caller says so); otherwise every one
    is reported with its line, followed by how many there are and `fix`, and nothing is sent.
    """
    listed, where = _subscribers(catalogue, strict=False)
    _warn_duplicates(listed, warn)
    if listed.invalid and not skip_invalid:
        count = len(listed.invalid)
        rows = "an invalid row" if count == 1 else f"{count} invalid rows"
        them = "it" if count == 1 else "them"
        refusal = f"{rows}, so nothing was sent: correct {them}, or {fix}"
        raise CatalogueError([*listed.invalid, Problem(str(where), None, "", refusal)])
    return listed, where


def _lines(numbers: list[int]) -> str:
    """Return line numbers as people read them: line 7, lines 7 and 9, lines 3, 7 and 9."""
    shown = [str(number) for number in numbers]
    if len(shown) == 1:
        return f"line {shown[0]}"
    return f"lines {', '.join(shown[:-1])} and {shown[-1]}"


def _transport(month: Month, *, test: bool = False) -> Transport:
    """Return the transport DIGEST_SMTP_URL names, or the outbox when it is unset."""
    import os

    from digest.send import transport

    url, password = os.environ.get("DIGEST_SMTP_URL"), os.environ.get("DIGEST_SMTP_PASSWORD")
    return transport.choose(url, password, str(month), test=test)


def _one_click() -> Callable[[str], str] | None:
    """Return the one-click unsubscribe URL maker when DIGEST_PUBLIC_URL is set, else None."""
    import os

    from digest.send import unsubscribe

    public = os.environ.get("DIGEST_PUBLIC_URL", "").strip()
    if not public:
        return None
    if not public.startswith("https://") or "?" in public or "#" in public:
        raise DigestError(
            f"DIGEST_PUBLIC_URL {public!r} must be the https:// address where `digest serve` is "
            "reached from outside, like https://digest.example.edu/ (RFC 8058 requires https)"
        )
    return unsubscribe.Links(_secret_key("DIGEST_PUBLIC_URL is set, and"), public).url


def _secret_key(context: str) -> str:
    """Return DIGEST_SECRET_KEY, or say why it is needed and how to make one."""
    import os

    secret = os.environ.get("DIGEST_SECRET_KEY", "")
    if len(secret) < 32:
        state = "not set" if not secret else "shorter than 32 characters"
        raise DigestError(
            f"{context} DIGEST_SECRET_KEY is {state}: it signs the console's sessions and every "
            "one-click unsubscribe link in sent email, so it must be long and stay the same "
            "across restarts (the same for `digest serve`, `send` and `schedule`); make one "
            "with\n  python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return secret


MAX_TRUSTED_PROXIES = 5


def _trusted_proxies() -> int:
    """Return DIGEST_TRUSTED_PROXIES: how many reverse proxies append to X-Forwarded-For."""
    import os

    raw = os.environ.get("DIGEST_TRUSTED_PROXIES", "").strip() or "0"
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_TRUSTED_PROXIES:
        raise DigestError(
            f"DIGEST_TRUSTED_PROXIES {raw!r} is not a number of proxies: set it to how many "
            "reverse proxies stand between the staff and `digest serve` and append to "
            f"X-Forwarded-For (1 for one nginx or Caddy in front, at most {MAX_TRUSTED_PROXIES}), "
            "or 0 (the default) to ignore X-Forwarded-For"
        )
    return int(raw)


def _validate_address(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    from email_validator import EmailNotValidError, validate_email

    checked: dict[str, str] = {}
    for value in values:
        try:
            address = validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise click.BadParameter(f"{value!r} is not an email address: {exc}") from exc
        # One copy per person: addresses compare case-insensitively, as the subscriber list's do.
        checked.setdefault(address.lower(), address)
    return tuple(checked.values())


@cli.command()
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
    callback=_validate_address,
    help="Send a [TEST] copy to ADDR only, outside the ledger (repeatable).",
)
@click.option(
    "--resend", is_flag=True, help="Send the month again to everyone, even those who have it."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Send at most this many messages a second.",
)
@click.option(
    "--connections", type=click.IntRange(1, 8), default=1, help="SMTP connections to use at once."
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
    state_path: Path,
    yes: bool,
    dry_run: bool,
    test_addresses: tuple[str, ...],
    resend: bool,
    rate: float | None,
    connections: int,
    skip_invalid: bool,
    ledger_wait: float,
) -> None:
    """Send a month's digest to every subscriber, once.

    Messages go to the SMTP server in DIGEST_SMTP_URL (smtp://user@host:587, smtps://...; the
    password may come from DIGEST_SMTP_PASSWORD), or, when it is unset, into outbox/ as .eml files.
    Every delivery is recorded in the ledger: running it again sends only what is missing.

    A subscriber list with an invalid row is refused, every bad row named by its line, unless
    --skip-invalid is given; rows that repeat an address are sent once, with a warning.

    \b
    Example:
        digest send --month 2025-11 --dry-run
    """
    from digest.mail import newsletter
    from digest.send import delivery
    from digest.send.ledger import Ledger

    catalogue = _load(catalogue_path)
    delivery.settings_of(catalogue)
    fix = "run the same command with --skip-invalid to send to the valid rows only"
    listed, where = _recipients(catalogue, skip_invalid, _warn, fix)
    for problem in listed.invalid:
        click.echo(f"skipped: {problem}", err=True)
    if listed.invalid:
        them = "it" if len(listed.invalid) == 1 else "them"
        click.echo(
            f"Skipping {_plural(len(listed.invalid), 'invalid row')} of {where} "
            f"({_lines(listed.invalid_lines)}); correct {them} and run the same command again "
            f"to send to {them} too."
        )
    now = _now()
    month = month or Month.previous(now, catalogue.publication.tz)
    chosen = newsletter.issue(catalogue, month, now)
    if not chosen.items:
        click.echo(f"No items in {month.label}: nothing to send.")
        return
    transport = _transport(month, test=bool(test_addresses))
    if test_addresses:
        if dry_run:
            click.echo(
                f"Dry run: nothing is sent. A [TEST] copy of {month.label} would go to "
                f"{', '.join(test_addresses)} via {transport.describe()}."
            )
            return
        _send_tests(catalogue, chosen, test_addresses, transport)
        return
    one_click = _one_click()
    if state_path.exists():
        ledger = Ledger(state_path)
        try:
            listed = delivery.without_suppressed(listed, ledger.suppressed())
        finally:
            ledger.close()
    readers, without = delivery.audience(chosen, listed)
    if dry_run:
        subject = newsletter.Renderer(catalogue).render(chosen).subject
        click.echo("Dry run: nothing is sent or recorded.")
        _describe_plan(subject, chosen, len(readers), None, transport)
        for reader in readers:
            picked = (
                "all categories"
                if reader.categories is None
                else ", ".join(sorted(reader.categories))
            )
            click.echo(f"  {reader.email}  {reader.name or ''}  ({picked})")
        if without:
            skipped = _plural(len(without), "subscriber")
            click.echo(f"Not sent: {skipped} whose categories have no items this month.")
        return
    ledger = Ledger(state_path, busy_timeout=ledger_wait, on_busy=_ledger_busy)
    try:
        if resend and not yes:
            # Asked before anything is forgotten: declining leaves the ledger as it was.
            have = len(ledger.deliveries(str(month), ("sent",)))
            click.confirm(
                f"Send {month.label} again to all {_plural(len(readers), 'subscriber')}, "
                f"{have} of whom already have it?",
                abort=True,
            )

        def confirm(plan: Send) -> bool:
            _describe_plan(plan.subject, chosen, len(plan.todo), plan.already, transport)
            if plan.in_flight:
                pronoun = "it is" if plan.in_flight == 1 else "they are"
                click.echo(
                    f"{_plural(plan.in_flight, 'message')} may have gone out when the last run "
                    f"stopped; {pronoun} sent again with the same Message-ID, so mail clients "
                    "show each once."
                )
            if plan.changed:
                click.echo(
                    f"The catalogue changed since sending began on {_when(plan.frozen_at)}; the "
                    "rest get the version frozen then, so that everyone reads the same digest."
                )
            if not yes and not resend:
                click.confirm(
                    f"Send {month.label} to {_plural(len(plan.todo), 'subscriber')}?", abort=True
                )
            # From here on, Ctrl-C (or SIGTERM) lets the message in flight finish and be recorded.
            graceful.enter_context(_stop_on_signal(stop))
            return True

        stop = threading.Event()
        try:
            with ExitStack() as graceful, _progress(len(readers)) as progress:
                result = delivery.send_month(
                    catalogue,
                    listed,
                    month,
                    ledger,
                    transport,
                    now=now,
                    clock=_now,
                    holder=f"digest send by {_user()}",
                    confirm=confirm,
                    resend=resend,
                    connections=connections,
                    rate=rate,
                    stop=stop,
                    unsubscribe=one_click,
                    **progress,
                )
        except KeyboardInterrupt:
            raise DigestError(
                "Interrupted. Run the same command again to send the rest; a message that was in "
                "flight is sent again with the same Message-ID."
            ) from None
        except delivery.Halted as halted:
            _summarise(halted.summary, month, transport)
            raise
        _report(result, month, ledger, transport, len(without))
        plan, summary = result.plan, result.summary
        if stop.is_set() and plan is not None and summary is not None and _left(plan, summary):
            left = _left(plan, summary)
            raise DigestError(
                f"Stopped: {_plural(left, 'subscriber')} not sent yet. Run the same command again "
                "to send the rest."
            )
    finally:
        ledger.close()


def _ledger_busy(path: Path, seconds: float) -> None:
    """Say why a send has paused: the ledger is locked by another program."""
    click.echo(
        f"The delivery ledger {path} is locked by another program (an sqlite3 shell with a "
        f"transaction open, say); waiting up to {seconds:g} second{'' if seconds == 1 else 's'} "
        "for it.",
        err=True,
    )


def _left(plan: Send, summary: Summary) -> int:
    """Return how many of a plan's recipients a stopped run did not get to."""
    return len(plan.todo) - summary.sent - summary.deferred - summary.failed


@contextmanager
def _stop_on_signal(stop: threading.Event) -> Iterator[None]:
    """Make the first SIGINT or SIGTERM set `stop`; a second one interrupts at once."""
    import signal
    import sys

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo("Stopping after the message in flight (Ctrl-C again to stop at once).", err=True)
        sys.stderr.flush()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _describe_plan(
    subject: str, chosen: Issue, recipients: int, already: int | None, transport: Transport
) -> None:
    """Print what a send is about to do, the same way for a dry run and a real one."""
    sections = _plural(len(chosen.sections), "category")
    click.echo(f"Subject:    {subject}")
    click.echo(f"Items:      {len(chosen.items)} in {sections}")
    have = f", {already} already have it" if already else ""
    click.echo(f"Recipients: {recipients} to send{have}")
    click.echo(f"Transport:  {transport.describe()}")


@contextmanager
def _progress(total: int) -> Iterator[dict[str, Any]]:
    """Yield a progress callback drawing a bar on a terminal; nothing when output is piped."""
    import sys

    if not sys.stdout.isatty():
        yield {}
        return
    with click.progressbar(length=total, label="Sending", show_pos=True) as bar:
        yield {"progress": lambda outcome: bar.update(1)}


def _report(
    result: MonthResult, month: Month, ledger: Ledger, transport: Transport, without: int
) -> None:
    """Print how a send ended; raise DigestError (exit 1) if anyone was not reached."""
    if result.kind == "no readers":
        click.echo(
            f"No subscriber has items in {month.label}: nothing to send "
            f"({_plural(without, 'subscriber')} whose categories have no items this month)."
        )
        return
    if result.kind == "already sent":
        done = ledger.deliveries(str(month), ("sent", "failed"))
        failed = sum(1 for row in done if row.status == "failed")
        sent = len(done) - failed
        note = f"; {failed} failed, see `digest status`" if failed else ""
        last = max(row.updated_at for row in done)
        click.echo(
            f"{month.label} was already sent to {_plural(sent, 'subscriber')}, the last at "
            f"{_when(last)}{note}. Nothing to send; --resend sends it again."
        )
        return
    summary = result.summary
    if summary is None:  # declined at the question: click has already said "Aborted!"
        return
    _summarise(summary, month, transport)
    if not summary.ok:
        raise DigestError(
            "Not everyone has the digest: run the same command later to retry the deferred; "
            "`digest status` lists the failed."
        )


def _summarise(summary: Summary, month: Month, transport: Transport) -> None:
    """Print what a send did: each recipient not reached, then the one-line summary."""
    from digest.send.transport import OutboxTransport

    for outcome in summary.outcomes:
        if outcome.status != "sent":
            code = f"{outcome.code} " if outcome.code else ""
            click.echo(f"{outcome.status}: {outcome.address}: {code}{outcome.reply}", err=True)
    click.echo(
        f"{month.label}: sent {summary.sent}, already sent {summary.already}, deferred "
        f"{summary.deferred}, failed {summary.failed} (via {transport.describe()})."
    )
    if isinstance(transport, OutboxTransport):
        click.echo(
            "DIGEST_SMTP_URL is not set, so nothing was emailed: each message was written to "
            f"{transport.directory}/ as an .eml file."
        )


def _send_tests(
    catalogue: Catalogue, chosen: Issue, addresses: tuple[str, ...], transport: Transport
) -> None:
    from digest.send import delivery

    failures = delivery.send_tests(catalogue, chosen, addresses, transport, _now(), _one_click())
    sent = len(addresses) - len(failures)
    click.echo(
        f"Sent {_plural(sent, 'test copy')} of {chosen.month.label} ([TEST] in the subject, "
        f"not recorded) via {transport.describe()}."
    )
    if failures:
        raise DigestError("Not sent: " + "; ".join(failures))


@cli.command()
@catalogue_option
@state_option
@click.option(
    "-n",
    "--dry-run",
    is_flag=True,
    help="Print the next five runs and what each would send, then exit.",
)
def schedule(catalogue_path: Path, state_path: Path, dry_run: bool) -> None:
    """Send each month's digest on the schedule in newsletter.schedule, in the foreground.

    Each run sends the previous month through the same path as `digest send --yes` (same lock,
    same ledger; a subscriber list with an invalid row stops the run, which is tried again
    later). Started after a missed run, it catches up once. SIGTERM or Ctrl-C stops it cleanly: a
    message in flight is finished and recorded first. Run one scheduler per ledger.

    \b
    Example:
        digest schedule --dry-run
    """
    from digest.send import delivery
    from digest.send import schedule as scheduling

    catalogue = _load(catalogue_path)
    settings = delivery.settings_of(catalogue)
    _trigger(catalogue)
    tz = catalogue.publication.tz
    if dry_run:
        _preview_schedule(catalogue, settings.schedule, state_path)
        return
    _log_to_stderr(tz)

    def run_month(month: Month, stop: threading.Event) -> ScheduleOutcome:
        return _scheduled_send(catalogue_path, state_path, month, stop)

    def settled(month: Month) -> str | None:
        from digest.send.ledger import Ledger

        ledger = Ledger(state_path)
        try:
            return ledger.settled(str(month))
        finally:
            ledger.close()

    scheduling.Scheduler(settings.schedule, tz, run_month, settled, _now).run()


def _scheduled_send(
    catalogue_path: Path, state_path: Path, month: Month, stop: threading.Event
) -> ScheduleOutcome:
    """Send `month` as `digest send --yes` would, and record the scheduler's decision."""
    from digest.send import delivery
    from digest.send import schedule as scheduling
    from digest.send.ledger import Ledger

    try:
        catalogue = _load(catalogue_path)  # read afresh each run: the office edits it meanwhile
        # As `digest send --yes` without --skip-invalid: an invalid row stops the run, which is
        # retried later, reading the list again; nobody is sent the digest of a partial list
        # unless a person chose it.
        fix = (
            "send to the valid rows with `digest send --skip-invalid` (the scheduler tries "
            "again on its own, reading the list afresh)"
        )
        warn = logging.getLogger("digest.schedule").warning
        listed, _ = _recipients(catalogue, False, lambda line: warn("%s: %s", month, line), fix)
        one_click = _one_click()
        ledger = Ledger(state_path)
    except DigestError as exc:
        return scheduling.Outcome(month, "failed", str(exc).replace("\n", "; "), retry=True)
    try:
        try:
            result = delivery.send_month(
                catalogue,
                listed,
                month,
                ledger,
                _transport(month),
                now=_now(),
                clock=_now,
                holder="digest schedule",
                stop=stop,
                unsubscribe=one_click,
            )
        except SendBusyError as exc:
            # A staff member's `digest send` got there first: the retry finds the month done.
            outcome = scheduling.Outcome(month, "skipped: another send is running", str(exc), True)
        except DigestError as exc:
            outcome = scheduling.Outcome(month, "failed", str(exc), retry=True)
        else:
            outcome = _decision(month, result, stop)
        ledger.record_decision(
            _now().isoformat(timespec="seconds"), str(month), outcome.decision, outcome.detail
        )
        return outcome
    finally:
        ledger.close()


def _decision(month: Month, result: MonthResult, stop: threading.Event) -> ScheduleOutcome:
    from digest.send import schedule as scheduling

    if result.kind in ("no items", "no readers", "already sent"):
        return scheduling.Outcome(month, f"skipped: {result.kind}")
    summary = result.summary
    assert summary is not None  # noqa: S101 -- "sent" carries a summary
    detail = (
        f"{summary.sent} sent, {summary.already} already had it, {summary.deferred} deferred, "
        f"{summary.failed} failed"
    )
    if stop.is_set() and result.plan is not None:
        left = _left(result.plan, summary)
        if left > 0:
            return scheduling.Outcome(month, "stopped", f"{detail}, {left} left for the next start")
    return scheduling.Outcome(month, "sent", detail, retry=summary.deferred > 0)


def _preview_schedule(catalogue: Catalogue, expression: str, state_path: Path) -> None:
    """Print the next five runs of the schedule and what each would send."""
    from digest.mail import newsletter
    from digest.send import delivery
    from digest.send import schedule as scheduling
    from digest.send.ledger import Ledger

    tz = catalogue.publication.tz
    listed, _ = _subscribers(catalogue)
    ledger = Ledger(state_path) if state_path.exists() else None
    now = _now()
    try:
        click.echo(f"Schedule: {expression} in {tz} (now {now.astimezone(tz):%Y-%m-%d %H:%M %Z}).")

        def settled(month: Month) -> str | None:
            return None if ledger is None else ledger.settled(str(month))

        def done(month: Month) -> bool:
            return settled(month) is not None

        def what(month: Month, moment: datetime, so_far: str = " so far") -> str:
            why = settled(month)
            if why is not None:
                return f"nothing: {why}"
            chosen = newsletter.issue(catalogue, month, moment)
            if not chosen.items:
                return f"no items{so_far}: skip"
            readers, _ = delivery.audience(chosen, listed)
            return (
                f"{_plural(len(chosen.items), 'item')} to {_plural(len(readers), 'subscriber')}, "
                "as the catalogue stands today"
            )

        missed = scheduling.catch_up(expression, tz, now, done)
        if missed is not None:
            click.echo(
                f"On start, catching up the missed run: {missed.label}: {what(missed, now, '')}"
            )
        for moment in scheduling.next_runs(expression, tz, now, 5):
            month = scheduling.month_of_run(moment, tz)
            click.echo(f"{_local(moment)}  {month.label}: {what(month, moment)}")
    finally:
        if ledger is not None:
            ledger.close()


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


@cli.command()
@catalogue_option
@state_option
def status(catalogue_path: Path, state_path: Path) -> None:
    """Show what was sent, when, to how many, and what failed.

    \b
    Example:
        digest status --state .digest/state.sqlite3
    """
    from digest.send.ledger import Ledger

    if not state_path.exists():
        click.echo(f"Nothing sent yet ({state_path} does not exist).")
        _status_schedule(catalogue_path, None)
        return
    ledger = Ledger(state_path)
    try:
        _status_months(ledger)
        suppressed = len(ledger.suppressed())
        if suppressed:
            click.echo(
                f"Unsubscribed with one click: {suppressed} "
                f"{'address' if suppressed == 1 else 'addresses'} "
                "(never sent again, whatever subscribers.csv says)."
            )
        _status_schedule(catalogue_path, ledger.last_decision())
    finally:
        ledger.close()


@cli.command()
@catalogue_option
@state_option
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, help="Port to listen on.")
@click.option(
    "--feeds",
    "feeds_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("feeds"),
    help="The built feeds to show under /feeds/.",
)
def serve(catalogue_path: Path, state_path: Path, host: str, port: int, feeds_dir: Path) -> None:
    """Run the staff console: preview, test and send the digest from a browser.

    Needs DIGEST_CONSOLE_PASSWORD (the staff password, at least 12 characters). DIGEST_SECRET_KEY
    signs sessions and unsubscribe links; without it, sessions last until the console stops. With
    DIGEST_PUBLIC_URL set (and then DIGEST_SECRET_KEY too), sends carry one-click unsubscribe links
    to it, and the console's cookies are sent over https only when it is https. Behind a reverse
    proxy, set DIGEST_TRUSTED_PROXIES to how many proxies append to X-Forwarded-For (default 0:
    ignored). Sends go through DIGEST_SMTP_URL as `digest send` does. Never runs the scheduler.

    \b
    Example:
        DIGEST_CONSOLE_PASSWORD=... digest serve --port 8000
    """
    import os

    from digest import console

    password = console.check_password(os.environ.get("DIGEST_CONSOLE_PASSWORD", ""))
    temporary = (
        not os.environ.get("DIGEST_SECRET_KEY")
        and not os.environ.get("DIGEST_PUBLIC_URL", "").strip()
    )
    if temporary:
        # Nothing signed with it outlives this process (no unsubscribe links go out without
        # DIGEST_PUBLIC_URL), so a key made now is safe; only logins end with a restart.
        import secrets

        secret = secrets.token_urlsafe(32)
    else:
        secret = _secret_key("The console needs a secret key:")
    one_click = _one_click()  # checks DIGEST_PUBLIC_URL
    proxies = _trusted_proxies()
    from werkzeug.serving import make_server

    config = console.Config(
        catalogue_path=catalogue_path,
        state_path=state_path,
        feeds_dir=feeds_dir,
        password=password,
        secret_key=secret,
        clock=_now,
        public_url=os.environ.get("DIGEST_PUBLIC_URL", "").strip() or None,
        smtp_url=os.environ.get("DIGEST_SMTP_URL"),
        smtp_password=os.environ.get("DIGEST_SMTP_PASSWORD"),
        trusted_proxies=proxies,
    )
    app = console.create_app(config)
    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as exc:
        raise DigestError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    logging.getLogger("digest").addHandler(logging.StreamHandler())
    logging.getLogger("digest").setLevel(logging.INFO)
    unsubscribing = (
        f"one-click unsubscribe links point to {config.public_url}"
        if one_click
        else "no one-click unsubscribe links (DIGEST_PUBLIC_URL is not set)"
    )
    click.echo(
        f"Staff console on http://{host}:{server.server_port}/ for {catalogue_path}; "
        f"{unsubscribing}. Ctrl-C stops it."
    )
    if temporary:
        click.echo(
            "DIGEST_SECRET_KEY is not set: logins are signed with a key made for this run, so "
            "staff log in again after a restart."
        )
    if proxies:
        click.echo(
            f"Client addresses come from the last {proxies} X-Forwarded-For "
            f"{'entry' if proxies == 1 else 'entries'} (DIGEST_TRUSTED_PROXIES={proxies})."
        )
    import signal

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


def _status_months(ledger: Ledger) -> None:
    """Print the ledger's months, newest first, and every recipient not delivered."""
    months = ledger.months()
    if not months:
        click.echo("Nothing sent yet.")
        return
    header = f"{'month':<8} {'sent':>6} {'failed':>6} {'deferred':>8} {'pending':>7}"
    click.echo(f"{header}  last activity")
    problems = []
    for entry in months:
        counts = entry.counts
        waiting = counts["pending"] + counts["sending"]
        click.echo(
            f"{entry.month:<8} {counts['sent']:>6} {counts['failed']:>6} "
            f"{counts['deferred']:>8} {waiting:>7}  "
            f"{_when(entry.last)}"
        )
        for row in ledger.deliveries(entry.month, ("failed", "deferred")):
            code = f"{row.last_code} " if row.last_code else ""
            reply = row.last_reply or ""
            problems.append(f"  {entry.month} {row.status}: {row.address}: {code}{reply}")
    if problems:
        click.echo("Not delivered:")
        for problem in problems:
            click.echo(problem)


def _status_schedule(catalogue_path: Path, decision: tuple[str, str, str, str] | None) -> None:
    """Print the scheduler's last decision and when the schedule runs next."""
    if decision is not None:
        at, decided, what, detail = decision
        more = f" ({detail})" if detail else ""
        click.echo(f"Last scheduler decision: {decided} {what}{more}, at {_when(at)}.")
    try:
        catalogue = _load(catalogue_path)
    except DigestError:
        click.echo(f"Next scheduled run: unknown ({catalogue_path} does not load; `digest check`).")
        return
    if catalogue.newsletter is None:
        return
    from digest.send import schedule as scheduling

    tz = catalogue.publication.tz
    try:
        upcoming = scheduling.next_runs(catalogue.newsletter.schedule, tz, _now(), 1)
    except DigestError as exc:
        click.echo(f"Next scheduled run: none ({exc}).")
        return
    if upcoming:
        month = scheduling.month_of_run(upcoming[0], tz)
        click.echo(
            f"Next scheduled run: {_local(upcoming[0])}, for {month.label} "
            "(when `digest schedule` is running)."
        )


def _local(moment: datetime) -> str:
    """Return a time in its own zone as people read it: 2026-12-01 09:00 HKT (+08:00)."""
    offset = moment.isoformat(timespec="minutes")[-6:]
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()} ({offset})"


def _when(stamp: str) -> str:
    """Return a ledger time stamp as people read it: 2025-12-01 09:00 UTC."""
    return stamp.replace("T", " ")[:16] + " UTC"


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown user"


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
