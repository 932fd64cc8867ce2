"""The use cases of sending: preview, send a month, test copies, the scheduler's run, status.

The one place a send is composed: `send_month` is what `digest send`, `digest schedule` and the
console run. See `digest.app.publishing` for the conventions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digest.app import bounces, signing, signup, subscribing, wording
from digest.app.publishing import Warn, load, trigger
from digest.app.settings import Settings
from digest.errors import CatalogueError, DeliveryError, DigestError, Problem, SendBusyError
from digest.months import Month

if TYPE_CHECKING:
    from digest.mail.helper import Helper
    from digest.mail.newsletter import Issue
    from digest.publish.catalogue import Catalogue
    from digest.send.delivery import Halted, MonthResult, Send
    from digest.send.ledger import Ledger, MonthStatus, Run
    from digest.send.schedule import Outcome as ScheduleOutcome
    from digest.send.subscribers import Subscriber, SubscriberList
    from digest.send.transport import Transport


# -- the subscriber list, as a send reads it ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipients:
    """The list a send goes to, and the rows it was told to leave out."""

    listed: SubscriberList
    where: Path
    skipped: tuple[Problem, ...] = ()
    skipped_lines: tuple[int, ...] = ()


def recipients(
    catalogue: Catalogue, *, skip_invalid: bool, warn: Warn, fix: str,
    store: tuple[Settings, datetime, bool] | None = None,
) -> Recipients:  # fmt: skip
    """Load the list a send goes to: each duplicate row warned of, invalid rows refused.

    With `skip_invalid` the invalid rows are left out (the front end says so); otherwise every
    one is reported with its line, followed by how many there are and `fix`. With `store`
    (settings, now, write), the list is imported as the directory (`write` False: as it would
    be) and the recipients are who the subscriber store says receives the digest now.
    """
    from digest.send import subscribers

    listed, where = subscribers.of_catalogue(catalogue, strict=False)
    for problem in listed.duplicates:
        warn(f"warning: {problem}")
    if listed.invalid and not skip_invalid:
        count = len(listed.invalid)
        rows = "an invalid row" if count == 1 else f"{count} invalid rows"
        them = "it" if count == 1 else "them"
        refusal = f"{rows}, so nothing was sent: correct {them}, or {fix}"
        raise CatalogueError([*listed.invalid, Problem(str(where), None, "", refusal)])
    skipped, lines = tuple(listed.invalid), tuple(listed.invalid_lines)
    if store is not None:
        settings, now, write = store
        listed = subscribing.directory(settings, catalogue, listed, now, write=write, warn=warn)
    return Recipients(listed, where, skipped, lines)


# -- planning and sending a month ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preview:
    """What a send of a month would do, before anything is written: for dry runs and pages."""

    month: Month
    issue: Issue
    subject: str
    readers: tuple[Subscriber, ...]
    without: int
    transport: str
    outbox: bool
    recipients: Recipients | None = None


def preview(
    settings: Settings,
    month: Month | None,
    now: datetime,
    *,
    skip_invalid: bool = False,
    warn: Warn = lambda line: None,
    fix: str = "",
) -> Preview:
    """Return what sending `month` would do: the subject, the readers, the transport."""
    from digest.mail import newsletter
    from digest.send import delivery

    catalogue = load(settings)
    catalogue.mailing()
    signing.signer(settings, catalogue)  # as the send will: a dry run finds a key's problem too
    found = recipients(
        catalogue, skip_invalid=skip_invalid, warn=warn, fix=fix, store=(settings, now, False)
    )
    month = month or Month.previous(now, catalogue.publication.tz)
    chosen = newsletter.issue(catalogue, month, now)
    transport = settings_transport(settings, month)
    if not chosen.items:
        return Preview(month, chosen, "", (), 0, transport.describe(), settings.uses_outbox, found)
    readers, without = delivery.audience(chosen, found.listed)
    subject = newsletter.Renderer(catalogue).render(chosen).subject
    return Preview(
        month,
        chosen,
        subject,
        tuple(readers),
        len(without),
        transport.describe(),
        settings.uses_outbox,
        found,
    )


@dataclass(frozen=True, slots=True)
class Planned:
    """What a send of a month would do now, nothing written: the plan a person confirms."""

    plan: Send | None  # None: the month has no items
    suppressed: int  # addresses off the list for good (unsubscribed, bounced, complained), left out
    transport: str
    outbox: bool


def plan(settings: Settings, month: Month, now: datetime) -> Planned:
    """Return the plan of sending `month` now, as the send itself would make it, writing nothing.

    A rehearsal (no mail server) is planned as it is sent, against a throwaway ledger: everyone
    gets a file, whatever was sent before.
    """
    from digest.send import delivery, subscribers
    from digest.send.ledger import Ledger

    catalogue = load(settings)
    listed, _ = subscribers.of_catalogue(catalogue)
    listed = subscribing.directory(settings, catalogue, listed, now, write=False, warn=_quiet)
    via = settings_transport(settings, month).describe()
    links = signup.preferences_links(settings, now)
    with settings.ledger() as ledger:
        gone = ledger.suppressed()
        if not settings.uses_outbox:
            made = delivery.prepare(
                catalogue, listed, month, ledger, now, write=False, preferences=links
            )
            return Planned(made, len(gone), via, False)
    with Ledger.scratch() as scratch:
        listed = delivery.without_suppressed(listed, gone)
        made = delivery.prepare(
            catalogue, listed, month, scratch, now, write=False, preferences=links
        )
    return Planned(made, len(gone), via, True)


@dataclass(frozen=True, slots=True)
class Briefing:
    """What a person confirms before a send: the digest, who gets it, and through what."""

    month: Month
    subject: str
    items: int
    categories: int
    to_send: int
    already: int
    in_flight: int
    changed: bool
    frozen_at: str
    transport: str
    outbox: bool
    tz: tzinfo
    recipients: Recipients
    room: int | None = None  # how many the daily limit lets go now, when it is set
    resuming: bool = False  # going on with a resend that did not reach everyone


@dataclass(slots=True)
class SendOptions:
    """How one send runs, beyond the settings: what a front end lets a person choose."""

    holder: str
    resend: bool = False
    skip_invalid: bool = False
    confirm: Callable[[Briefing], bool] | None = None
    progress: Callable[[Any], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    warn: Warn = lambda line: None
    fix: str = ""
    on_busy: Callable[[str, float], None] | None = None
    # connections, rate, daily_limit (None: the catalogue's newsletter.delivery), policy
    execute: dict[str, Any] = field(default_factory=dict)
    # A one-shot command (`digest send`) moves what it loads out of the cyclic collector's sight;
    # the scheduler and the console, which load again and again, never do.
    freeze: bool = False


@dataclass(frozen=True, slots=True)
class Sent:
    """How a send ended, with what the front ends word it from."""

    month: Month
    result: MonthResult
    transport: str
    outbox: Path | None
    recipients: Recipients | None = None
    without: int = 0
    already_sent: int = 0
    already_failed: int = 0
    last_sent_at: str | None = None
    halted: Halted | None = None
    tz: tzinfo = UTC


def send_month(
    settings: Settings,
    month: Month | None,
    now: datetime,
    clock: Callable[[], datetime],
    options: SendOptions,
) -> Sent:
    """Send `month` to the list exactly once: what `digest send`, the scheduler and the console run.

    Raises `SendBusyError` when another send of the month is running. A ledger that stays locked
    ends the send part-way: the result carries `halted`, with the summary so far.
    """
    from digest.mail.helper import Helper

    # Started first: premailer is imported in the helper while this process loads and enrols.
    with Helper.start() as helper:
        return _send_month(settings, month, now, clock, options, helper)


def _send_month(
    settings: Settings,
    month: Month | None,
    now: datetime,
    clock: Callable[[], datetime],
    options: SendOptions,
    helper: Helper,
) -> Sent:
    from digest.mail import newsletter
    from digest.send import delivery

    catalogue = load(settings, freeze=options.freeze)
    catalogue.mailing()
    signer = signing.signer(settings, catalogue)  # a key that cannot sign stops it here
    tz = catalogue.publication.tz
    month = month or Month.previous(now, tz)
    transport = settings_transport(settings, month)
    outbox = settings.outbox if settings.uses_outbox else None
    found = recipients(
        catalogue, skip_invalid=options.skip_invalid, warn=options.warn, fix=options.fix
    )
    chosen = newsletter.issue(catalogue, month, now)
    if not chosen.items:
        return Sent(month, delivery.MonthResult("no items"), transport.describe(), outbox, found)
    # The helper styles the pages while the list goes into the store.
    linked = settings.public_url is not None  # as signup.preferences_links decides
    begun = delivery.prerender(
        catalogue, found.listed, month, now, helper=helper.submit, linked=linked
    )
    found = _from_store(settings, catalogue, found, month, now, options)

    def confirm(plan: Send) -> bool:
        if options.confirm is None:
            return True
        # A resend goes to everyone again: "already" then counts who has a copy so far.
        have = len(ledger.deliveries(str(month), ("sent",))) if options.resend else plan.already
        briefing = Briefing(
            month, plan.subject, plan.items, len(chosen.categories), len(plan.todo), have,
            plan.in_flight, plan.changed, plan.frozen_at, transport.describe(),
            settings.uses_outbox, tz, found, plan.room, plan.resuming,
        )  # fmt: skip
        return options.confirm(briefing)

    execute = dict(options.execute, stop=options.stop, unsubscribe=settings.one_click())
    execute["preferences"] = signup.preferences_links(settings, now)
    execute["signer"] = signer
    execute["return_path"] = bounces.return_path(settings, catalogue, month)
    if options.progress is not None:
        execute["progress"] = options.progress
    _, without = delivery.audience(chosen, found.listed)
    ledger = settings.ledger(busy_timeout=settings.ledger_wait, on_busy=options.on_busy)
    try:
        try:
            result = delivery.send_month(
                catalogue,
                found.listed,
                month,
                ledger,
                transport,
                now=now,
                clock=clock,
                holder=options.holder,
                confirm=confirm,
                resend=options.resend,
                begun=begun,
                **execute,
            )
        except delivery.Halted as halted:
            result = delivery.MonthResult("sent", None, halted.summary)
            return Sent(
                month, result, transport.describe(), outbox, found, len(without), halted=halted,
                tz=tz,
            )  # fmt: skip
        if result.kind != "already sent":
            return Sent(month, result, transport.describe(), outbox, found, len(without), tz=tz)
        via = transport.describe()
        return _already_sent(ledger, month, result, via, outbox, found, len(without), tz)
    finally:
        ledger.close()


# -- several senders: a worker joins the sends in progress ---------------------------------------


@dataclass(slots=True)
class WorkerOptions:
    """How `digest worker` takes part: once or for ever, and its claims' lease and polling."""

    holder: str
    forever: bool = False
    connections: int | None = None  # None: the catalogue's newsletter.delivery.connections
    poll: float = 2.0  # seconds between looks for a send, or at rows other senders hold
    lease: float = 60.0  # seconds a claim holds without renewal
    batch: int = 100  # rows claimed at a time
    stop: threading.Event = field(default_factory=threading.Event)
    # How to wait `poll` seconds: by default the stop event's wait (a stop ends it at once).
    pause: Callable[[float], object] | None = None
    progress: Callable[[Any], None] | None = None
    on_month: Callable[[Joined], None] | None = None  # told as each month's share ends


@dataclass(frozen=True, slots=True)
class Joined:
    """What one worker did in one month's shared send."""

    month: Month
    summary: Any  # delivery.Summary: what this worker sent, deferred, failed
    transport: str


def work(settings: Settings, clock: Callable[[], datetime], options: WorkerOptions) -> list[Joined]:
    """Take part in every send in progress on the state database; what `digest worker` runs.

    Once (`forever` False): join each open send until nothing of it is left to do, and return
    when no open send has anything this worker could do. For ever: then wait for the next, looking
    every `poll` seconds, until `stop`.
    """
    done: list[Joined] = []
    wait = options.pause or options.stop.wait
    while not options.stop.is_set():
        months: list[str] = []
        if settings.has_state:
            with _ledger(settings) as ledger:
                months = ledger.open_sends()
        busy = False
        for key in months:
            joined = _join(settings, Month.parse(key), clock, options)
            if joined is None:
                continue
            done.append(joined)
            if options.on_month is not None:
                options.on_month(joined)
            summary = joined.summary
            busy = busy or bool(summary.sent + summary.failed + summary.deferred)
            if options.stop.is_set():
                return done
        if not busy and not options.forever:
            return done
        if not busy:
            wait(options.poll)
    return done


def _join(
    settings: Settings, month: Month, clock: Callable[[], datetime], options: WorkerOptions
) -> Joined | None:
    """Send what this worker can of `month`'s open send; None when nothing of it is left to do."""
    from digest.send import delivery
    from digest.send.ledger import RunKind

    if settings.uses_outbox:
        raise DeliveryError(
            f"a send of {month} is in progress on {settings.database_url or settings.state_path}, "
            "and DIGEST_SMTP_URL is not set here: a worker sends only through the mail server. "
            "Set DIGEST_SMTP_URL (and its password) as on the host that started the send"
        )
    catalogue = load(settings)
    catalogue.mailing()
    signer = signing.signer(settings, catalogue)
    now = clock()
    found = recipients(catalogue, skip_invalid=True, warn=_quiet, fix="")
    listed = subscribing.directory(settings, catalogue, found.listed, now, write=False, warn=_quiet)
    transport = settings_transport(settings, month)
    limits = delivery.limits_of(catalogue, connections=options.connections)
    key = str(month)
    with _ledger(settings) as ledger:
        links = signup.preferences_links(settings, now)
        plan = delivery.join(catalogue, listed, month, ledger, now, preferences=links)
        if plan is None or not plan.todo:
            ledger.close_send(key, now)
            return None
        run = ledger.start_run(key, transport.describe(), options.holder, RunKind.SEND)
        sharing = delivery.Sharing(
            lease=options.lease, poll=options.poll, batch=options.batch, pause=options.pause
        )
        summary = plan.execute(
            transport, clock=clock, connections=limits.connections, rate=limits.rate,
            daily_limit=limits.daily_limit, stop=options.stop, progress=options.progress,
            unsubscribe=settings.one_click(), signer=signer,
            return_path=bounces.return_path(settings, catalogue, month), sharing=sharing,
        )  # fmt: skip
        ledger.finish_run(run, summary.sent, summary.failed, summary.deferred, summary.already)
    return Joined(month, summary, transport.describe())


def _already_sent(
    ledger: Ledger, month: Month, result: MonthResult, via: str, outbox: Path | None,
    found: Recipients, without: int, tz: tzinfo,
) -> Sent:  # fmt: skip
    """Return what a send of a month everyone already has says: how many have it, and since when."""
    done = ledger.deliveries(str(month), ("sent", "failed"))
    failed = sum(1 for row in done if row.status == "failed")
    last = max(row.updated_at for row in done)
    return Sent(month, result, via, outbox, found, without, len(done) - failed, failed, last, tz=tz)


def _from_store(
    settings: Settings, catalogue: Catalogue, found: Recipients, month: Month, now: datetime,
    options: SendOptions,
) -> Recipients:  # fmt: skip
    """Return `found` with the readers the store gives once the list is imported as the directory.

    A rehearsal records nothing but its run: the list is read as the import would leave it. So
    is a send about to be refused because another send of the month is running (which imported
    the list already).
    """
    from digest.send.ledger import SendLock

    busy = SendLock.holder(settings.state_path, str(month)) is not None
    listed = subscribing.directory(
        settings, catalogue, found.listed, now, write=not (settings.uses_outbox or busy),
        warn=options.warn, on_busy=options.on_busy,
    )  # fmt: skip
    return replace(found, listed=listed)


def left(result: MonthResult) -> int:
    """Return how many of a plan's recipients a stopped run did not get to."""
    plan, summary = result.plan, result.summary
    if plan is None or summary is None:
        return 0
    return len(plan.todo) - summary.sent - summary.deferred - summary.failed


def settings_transport(settings: Settings, month: Month, *, test: bool = False) -> Transport:
    """Return where `month`'s messages go: the SMTP server, or outbox/ beside the catalogue."""
    from digest.send import transport

    return transport.choose(
        settings.smtp_url,
        settings.smtp_password,
        str(month),
        test=test,
        outbox=settings.outbox,
        token_command=settings.smtp_token_command,
        workdir=settings.home,
    )


# -- test copies ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TestCopies:
    """Where test copies of a month went, and the addresses they could not reach."""

    month: Month
    sent: tuple[str, ...]
    failures: tuple[str, ...]
    transport: str
    items: int
    # The Message-ID each address's copy was sent with (a test copy's is new every time).
    message_ids: dict[str, str] = field(default_factory=dict)


def send_tests(
    settings: Settings, month: Month | None, addresses: tuple[str, ...], now: datetime
) -> TestCopies:
    """Send a [TEST] copy of `month` to each address, outside the ledger."""
    from digest.mail import newsletter
    from digest.send import delivery

    catalogue = load(settings)
    catalogue.mailing()
    signer = signing.signer(settings, catalogue)
    month = month or Month.previous(now, catalogue.publication.tz)
    chosen = newsletter.issue(catalogue, month, now)
    via = settings_transport(settings, month, test=True)
    if not chosen.items:
        return TestCopies(month, (), (), via.describe(), 0)
    ids: dict[str, str] = {}
    failures = delivery.send_tests(
        catalogue, chosen, addresses, via, now, settings.one_click(), signer, ids=ids,
        preferences=signup.preferences_links(settings, now),
    )  # fmt: skip
    failed = {failure.split(":", 1)[0] for failure in failures}
    sent = tuple(a for a in addresses if a not in failed)
    return TestCopies(month, sent, tuple(failures), via.describe(), len(chosen.items), ids)


def addresses(values: list[str]) -> tuple[str, ...]:
    """Return each address checked, one per person (addresses compare case-insensitively)."""
    from digest.send.subscribers import address

    checked: dict[str, str] = {}
    for value in values:
        found = address(value)
        checked.setdefault(found.lower(), found)
    return tuple(checked.values())


# -- the scheduler -------------------------------------------------------------------------------


def scheduled_send(
    settings: Settings,
    month: Month,
    stop: threading.Event,
    clock: Callable[[], datetime],
    warn: Warn,
) -> ScheduleOutcome:
    """Send `month` as `digest send --yes` would, and record the scheduler's decision."""
    from digest.send import schedule as scheduling
    from digest.send.ledger import Decision

    # As `digest send --yes` without --skip-invalid: an invalid row stops the run, which is
    # retried later, reading the list again; nobody is sent the digest of a partial list unless
    # a person chose it.
    options = SendOptions(
        holder="digest schedule",
        stop=stop,
        warn=lambda line: warn(f"{month}: {line}"),
        fix="send to the valid rows with `digest send --skip-invalid` (the scheduler tries again "
        "on its own, reading the list afresh)",
    )
    try:
        sent = send_month(settings, month, clock(), clock, options)
    except SendBusyError as exc:
        # A staff member's `digest send` got there first: the retry finds the month done.
        outcome = scheduling.Outcome(month, "skipped: another send is running", str(exc), True)
    except DigestError as exc:
        outcome = scheduling.Outcome(month, "failed", str(exc).replace("\n", "; "), retry=True)
    else:
        outcome = decision(month, sent.result, stop)
    try:
        with _ledger(settings) as ledger:
            ledger.record_decision(
                clock().isoformat(timespec="seconds"),
                str(month),
                Decision(outcome.decision),
                outcome.detail,
            )
    except DigestError as exc:  # a ledger locked elsewhere: the decision is logged all the same
        warn(f"{month}: the decision could not be recorded: {exc}")
    return outcome


def decision(month: Month, result: MonthResult, stop: threading.Event) -> ScheduleOutcome:
    """Return what the scheduler logs and records for a send's result."""
    from digest.send import schedule as scheduling

    if result.kind in ("no items", "no readers", "already sent"):
        return scheduling.Outcome(month, f"skipped: {result.kind}")
    summary = result.summary
    assert summary is not None  # noqa: S101 -- "sent" carries a summary
    detail = (
        f"{summary.sent} sent, {summary.already} already had it, {summary.deferred} deferred, "
        f"{summary.failed} failed"
    )
    if result.rehearsal:
        # Nothing was emailed: the month stays due, and the next start (with DIGEST_SMTP_URL
        # set) sends it.
        return scheduling.Outcome(
            month, "rehearsed", f"{summary.sent} written to outbox/, none emailed"
        )
    if summary.held and summary.held_until is not None:
        detail += f", {summary.held} held by the daily limit"
        kind = "held" if result.kind == "held" else "sent"
        return scheduling.Outcome(
            month, kind, detail, summary.deferred > 0, held_until=summary.held_until
        )
    remaining = left(result)
    if stop.is_set() and remaining > 0:
        return scheduling.Outcome(
            month, "stopped", f"{detail}, {remaining} left for the next start"
        )
    return scheduling.Outcome(month, "sent", detail, retry=summary.deferred > 0)


def settled(settings: Settings, month: Month) -> str | None:
    """Return why `month` needs nothing more, as the ledger says, or None."""
    with _ledger(settings) as ledger:
        return ledger.settled(str(month))


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """One coming run of the schedule and what it would send, as the catalogue stands."""

    moment: datetime | None  # None: the missed run caught up on start
    month: Month
    what: str


def schedule_preview(settings: Settings, now: datetime, runs: int = 5) -> list[PlannedRun]:
    """Return the catch-up run (if one is due) and the next `runs` runs, each with what it sends."""
    from digest.mail import newsletter
    from digest.send import delivery, subscribers
    from digest.send import schedule as scheduling

    catalogue = load(settings)
    expression = catalogue.mailing().schedule
    trigger(catalogue)
    tz = catalogue.publication.tz
    listed, _ = subscribers.of_catalogue(catalogue)
    listed = subscribing.directory(settings, catalogue, listed, now, write=False, warn=_quiet)
    ledger = _open_existing(settings)
    try:

        def why(month: Month) -> str | None:
            return None if ledger is None else ledger.settled(str(month))

        def what(month: Month, moment: datetime, so_far: str = " so far") -> str:
            reason = why(month)
            if reason is not None:
                return f"nothing: {reason}"
            chosen = newsletter.issue(catalogue, month, moment)
            if not chosen.items:
                return f"no items{so_far}: skip"
            readers, _ = delivery.audience(chosen, listed)
            return (
                f"{wording.plural(len(chosen.items), 'item')} to "
                f"{wording.plural(len(readers), 'subscriber')}, as the catalogue stands today"
            )

        planned = []
        missed = scheduling.catch_up(expression, tz, now, lambda m: why(m) is not None)
        if missed is not None:
            planned.append(PlannedRun(None, missed, what(missed, now, "")))
        for moment in scheduling.next_runs(expression, tz, now, runs):
            month = scheduling.month_of_run(moment, tz)
            planned.append(PlannedRun(moment, month, what(month, moment)))
        return planned
    finally:
        if ledger is not None:
            ledger.close()


# -- status --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """What `digest status` shows: the months sent, who was not reached, the scheduler."""

    exists: bool
    months: tuple[MonthStatus, ...] = ()
    not_delivered: tuple[str, ...] = ()
    ended: tuple[tuple[str, int], ...] = ()  # off the list for good, by status: (status, count)
    runs: tuple[Run, ...] = ()
    last_decision: tuple[str, str, str, str] | None = None
    next_run: tuple[datetime, Month] | None = None
    next_run_problem: str | None = None
    tz: Any = None
    held: tuple[tuple[str, int, str], ...] = ()  # (month, how many, until) the daily limit holds
    rehearsals: tuple[Run, ...] = ()  # each month's latest run that only wrote to outbox/
    # Each month's bounces and complaints; empty until the ledger has recorded one.
    bounces: tuple[MonthBounces, ...] = ()
    # The months being sent now, with who sends them (on PostgreSQL: from any host).
    sending: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MonthBounces:
    """A month's delivery as the bounce mailbox tells it: sent, refused, bounced later."""

    month: str
    sent: int  # accepted by the relay
    failed: int  # refused during the SMTP dialogue
    bounced: int  # addresses a bounce (hard or soft) named later
    complained: int  # addresses that reported the digest as spam

    @property
    def warnings(self) -> list[str]:
        """Return the warnings of a bounce or complaint rate above what providers accept."""
        return wording.bounce_warnings(self.month, self.sent, self.bounced, self.complained)


def _bounces(ledger: Ledger, months: tuple[MonthStatus, ...]) -> tuple[MonthBounces, ...]:
    """Return each month's bounces beside what it sent; nothing if no bounce was ever recorded."""
    from digest.send.store import BounceKind, Store

    kept = Store(ledger)
    counts = kept.bounce_counts()
    bounced = kept.bounced_by_month()
    if not counts and not kept.recent_bounces(limit=1):
        return ()
    return tuple(
        MonthBounces(
            entry.month, entry.counts["sent"], entry.counts["failed"],
            bounced.get(entry.month, 0), counts.get(entry.month, {}).get(BounceKind.COMPLAINT, 0),
        )
        for entry in months
    )  # fmt: skip


def status(settings: Settings, now: datetime) -> Status:
    """Return the ledger's months, the recipients not reached, and the schedule's next run."""
    from digest.send.ledger import SendLock
    from digest.send.store import Store

    next_run, problem, tz = _next_run(settings, now)
    ledger = _open_existing(settings)
    if ledger is None:
        return Status(False, next_run=next_run, next_run_problem=problem, tz=tz)
    try:
        months = tuple(ledger.months())
        problems = []
        for entry in months:
            for row in ledger.deliveries(entry.month, ("failed", "deferred")):
                code = f"{row.last_code} " if row.last_code else ""
                problems.append(
                    f"{entry.month} {row.status}: {row.address}: {code}{row.last_reply or ''}"
                )
        unsent = {e.month for e in months if e.counts["pending"] + e.counts["deferred"]}
        held = tuple(
            (month, count, until)
            for month, (count, until) in ledger.holds().items()
            if month in unsent
        )
        latest: dict[str, Run] = {}
        for run in ledger.runs():
            if run.rehearsal:
                latest.setdefault(run.month, run)
        return Status(
            True,
            months,
            tuple(problems),
            tuple(Store(ledger).ended().items()),
            tuple(ledger.runs(limit=10)),
            ledger.last_decision(),
            next_run,
            problem,
            tz,
            held,
            tuple(latest.values()),
            _bounces(ledger, months),
            tuple(SendLock.held(settings.state_path, ledger)),
        )
    finally:
        ledger.close()


def _next_run(
    settings: Settings, now: datetime
) -> tuple[tuple[datetime, Month] | None, str | None, Any]:
    from digest.send import schedule as scheduling

    try:
        catalogue = load(settings)
    except DigestError:
        return None, f"unknown ({settings.catalogue_path} does not load; `digest check`)", None
    tz = catalogue.publication.tz
    if catalogue.newsletter is None:
        return None, None, tz
    try:
        upcoming = scheduling.next_runs(catalogue.newsletter.schedule, tz, now, 1)
    except DigestError as exc:
        return None, f"none ({exc})", tz
    if not upcoming:
        return None, None, tz
    return (upcoming[0], scheduling.month_of_run(upcoming[0], tz)), None, tz


def _quiet(line: str) -> None:
    """Say nothing: the import's counts belong to a send, not to a look at the plan."""


# -- the ledger, opened for a use case -------------------------------------------------------------


class _ledger:
    """Open the settings' ledger for a `with` block, and close it after."""

    def __init__(self, settings: Settings) -> None:
        self.ledger = settings.ledger()

    def __enter__(self) -> Ledger:
        return self.ledger

    def __exit__(self, *exc: object) -> None:
        self.ledger.close()


def _open_existing(settings: Settings) -> Ledger | None:
    """Open the ledger if it exists: looking never creates one."""
    return settings.ledger() if settings.has_state else None
