"""Send a month's digest to every subscriber exactly once, whatever the server or a crash does.

`prepare` freezes the issue and enrols the subscribers in the ledger; `Send.execute` works through
every row not yet sent. A row is marked `sending` (committed) before its DATA goes out and `sent`
only once the server accepted it; rows left `sending` by a crash are sent again, with the same
Message-ID, by the next run, which says so. 4xx replies and lost connections are retried with
backoff and jitter, reconnecting, then left `deferred` for the next run; a 5xx marks that recipient
`failed` and the rest go on.
"""

from __future__ import annotations

import hashlib
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from digest import message, newsletter
from digest.catalogue import Catalogue, Mailbox, Newsletter
from digest.errors import DeliveryError
from digest.ledger import (
    Delivery,
    Frozen,
    Ledger,
    Render,
    SendLock,
    parse_selection,
    selection_key,
    stamp,
)
from digest.months import Month
from digest.subscribers import Subscriber, SubscriberList
from digest.transport import Connection, Fatal, Permanent, Temporary, Transport


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a message is retried within one run."""

    attempts: int = 4
    base_delay: float = 2.0
    max_delay: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Return the pause before retry number `attempt`: exponential, with jitter."""
        ceiling: float = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + rng.random() * ceiling / 2


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one recipient in this run."""

    address: str
    status: str  # sent, failed, deferred
    code: int | None = None
    reply: str | None = None
    again: bool = False  # sent before a crash, perhaps: resent with the same Message-ID


@dataclass(slots=True)
class Summary:
    """The counts a run ends with."""

    sent: int = 0
    already: int = 0
    deferred: int = 0
    failed: int = 0
    resent: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return whether everyone has the digest (nothing failed or deferred)."""
        return self.failed == 0 and self.deferred == 0


def content_hash(rendered: newsletter.Rendered) -> str:
    """Return a fingerprint of a rendered issue."""
    data = "\0".join((rendered.subject, rendered.html, rendered.text)).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def settings_of(catalogue: Catalogue) -> Newsletter:
    """Return the newsletter settings, or say how to add them."""
    if catalogue.newsletter is None:
        raise DeliveryError(
            f"{catalogue.path.name}: there is no `newsletter` block; add one (from, subject, "
            "schedule, unsubscribe) to send the digest, see README"
        )
    return catalogue.newsletter


def audience(
    issue: newsletter.Issue, subscribers: SubscriberList
) -> tuple[list[Subscriber], list[Subscriber]]:
    """Split subscribers into those with something to read this month and those without."""
    present = {s.category.slug for s in issue.sections}
    some: list[Subscriber] = []
    none: list[Subscriber] = []
    for subscriber in subscribers.subscribers:
        chosen = present if subscriber.categories is None else present & subscriber.categories
        (some if chosen else none).append(subscriber)
    return some, none


def without_suppressed(subscribers: SubscriberList, suppressed: set[str]) -> SubscriberList:
    """Return the list without the addresses that unsubscribed with one click."""
    if not suppressed:
        return subscribers
    kept = tuple(s for s in subscribers.subscribers if s.key not in suppressed)
    return SubscriberList(kept, subscribers.duplicates)


def test_copy(
    catalogue: Catalogue,
    issue: newsletter.Issue,
    address: str,
    date: datetime,
    unsubscribe: Callable[[str], str] | None,
) -> tuple[EmailMessage, str]:
    """Return a [TEST] copy of the issue for `address`, outside the ledger, and its sender."""
    settings = settings_of(catalogue)
    rendered = newsletter.Renderer(catalogue).render(issue)
    one_click = unsubscribe(address) if unsubscribe else None
    html, text = rendered.personalise(None, one_click or settings.unsubscribe)
    envelope = _envelope(settings, Mailbox(None, address), f"[TEST] {rendered.subject}", one_click)
    built = message.build(catalogue.publication, issue.month, envelope, html, text, date)
    # A test copy must never share the real Message-ID, or a tester on the list would see the real
    # digest as a duplicate of the test and never be shown it.
    del built["Message-ID"]
    built["Message-ID"] = make_msgid("digest-test", domain=catalogue.publication.host)
    return built, settings.sender.address


def send_tests(
    catalogue: Catalogue,
    issue: newsletter.Issue,
    addresses: tuple[str, ...],
    transport: Transport,
    date: datetime,
    unsubscribe: Callable[[str], str] | None = None,
) -> list[str]:
    """Send a [TEST] copy to each address over one connection; return what was not sent, why."""
    from digest.transport import SendError

    connection = transport.open()
    failures = []
    try:
        for address in addresses:
            built, sender = test_copy(catalogue, issue, address, date, unsubscribe)
            try:
                connection.send(built, sender, address)
            except SendError as exc:
                failures.append(f"{address}: {exc}")
    finally:
        connection.close()
    return failures


@dataclass
class Send:
    """One month's delivery, prepared: the issue frozen, the subscribers enrolled."""

    catalogue: Catalogue
    month: Month
    ledger: Ledger
    subject: str
    items: int
    todo: list[Delivery]  # pending, in flight (`sending`) or deferred
    already: int
    without_items: int
    changed: bool
    frozen_at: str
    renders: dict[str, Render]
    # What this prepare rendered, by selection ("*" the whole issue): a second prepare of the same
    # issue (the real one after the preview) reuses it rather than inlining every selection again.
    made: dict[str, newsletter.Rendered] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        """Return how many messages a crashed run may or may not have delivered."""
        return sum(1 for row in self.todo if row.status == "sending")

    def execute(
        self,
        transport: Transport,
        *,
        clock: Callable[[], datetime],
        policy: RetryPolicy | None = None,
        connections: int = 1,
        rate: float | None = None,
        progress: Callable[[Outcome], None] | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        unsubscribe: Callable[[str], str] | None = None,
    ) -> Summary:
        """Send every pending, in-flight and deferred message; return the counts.

        `unsubscribe(address)`, when given, is the recipient's one-click unsubscribe URL: it goes
        into List-Unsubscribe beside the catalogue's address, and replaces it in the body.
        """
        worker = _Worker(
            self,
            transport,
            clock=clock,
            policy=policy or RetryPolicy(),
            pace=_Pace(rate, sleep),
            progress=progress,
            stop=stop or threading.Event(),
            sleep=sleep,
            rng=rng or random.Random(),  # noqa: S311 -- jitter, not secrets
            unsubscribe=unsubscribe,
        )
        return worker.run(max(1, connections))


def compose(
    plan: Send,
    row: Delivery,
    date: datetime,
    unsubscribe: Callable[[str], str] | None = None,
) -> EmailMessage:
    """Return the message for one ledger row: its selection's frozen rendering, personalised.

    `unsubscribe`, when given, makes the row's one-click unsubscribe URL from its address. This is
    the reference a Composer's bytes are held to; a send uses a Composer.
    """
    settings = settings_of(plan.catalogue)
    render = plan.renders[row.selection]
    one_click = unsubscribe(row.address) if unsubscribe else None
    html, text = newsletter.Rendered(render.subject, render.html, render.text, 0).personalise(
        row.name, one_click or settings.unsubscribe
    )
    return message.build(
        plan.catalogue.publication,
        plan.month,
        _envelope(settings, Mailbox(row.name, row.address), render.subject, one_click),
        html,
        text,
        date,
    )


def _envelope(
    settings: Newsletter, recipient: Mailbox, subject: str, one_click: str | None
) -> message.Envelope:
    return message.Envelope(
        sender=settings.sender,
        reply_to=settings.reply_to,
        recipient=recipient,
        subject=subject,
        unsubscribe=settings.unsubscribe,
        one_click=one_click,
    )


class Composer:
    """Makes each row's message as `compose` would, from its selection's Stencil: its bytes.

    A selection is serialized by the email package once; each recipient then costs a few string
    substitutions instead of a MIME build. A recipient the stencil declines gets `compose`'s
    EmailMessage. Safe to share between connections.
    """

    def __init__(self, plan: Send, unsubscribe: Callable[[str], str] | None = None) -> None:
        self.plan = plan
        self.unsubscribe = unsubscribe
        self.settings = settings_of(plan.catalogue)
        self._stencils: dict[str, message.Stencil] = {}
        self._lock = threading.Lock()

    def __call__(self, row: Delivery, date: datetime) -> bytes | EmailMessage:
        """Return the row's message: bytes as SMTP carries them, or an EmailMessage."""
        one_click = self.unsubscribe(row.address) if self.unsubscribe else None
        html_values, text_values = newsletter.personal_values(
            row.name, one_click or self.settings.unsubscribe
        )
        recipient = Mailbox(row.name, row.address)
        stencil = self._stencil(row.selection, one_click is not None)
        filled = stencil.fill(recipient, one_click, date, html_values, text_values)
        return filled if filled is not None else compose(self.plan, row, date, self.unsubscribe)

    def _stencil(self, selection: str, one_click: bool) -> message.Stencil:
        key = f"{one_click}:{selection}"
        with self._lock:
            stencil = self._stencils.get(key)
            if stencil is None:
                render = self.plan.renders[selection]
                envelope = _envelope(
                    self.settings,
                    message.PLACEHOLDER_RECIPIENT,
                    render.subject,
                    message.PLACEHOLDER_ONE_CLICK if one_click else None,
                )
                stencil = self._stencils[key] = message.Stencil(
                    self.plan.catalogue.publication,
                    self.plan.month,
                    envelope,
                    render.html,
                    render.text,
                    newsletter.TOKENS,
                )
            return stencil


def prepare(
    catalogue: Catalogue,
    subscribers: SubscriberList,
    month: Month,
    ledger: Ledger,
    now: datetime,
    *,
    resend: bool = False,
    write: bool = True,
    preview: Send | None = None,
) -> Send | None:
    """Freeze the month's issue and enrol its readers; None when the month has no items.

    With `write=False` nothing is written: the plan is what a real prepare would give, for a
    person to confirm before anything is frozen, enrolled or (with `resend`) forgotten. `preview`,
    such a plan made a moment before from the same catalogue at the same `now`, lends its renders.
    """
    issue = newsletter.issue(catalogue, month, now)
    if not issue.items:
        return None
    settings_of(catalogue)
    # Whoever unsubscribed is neither enrolled nor sent the rest of a half-sent month.
    subscribers = without_suppressed(subscribers, ledger.suppressed())
    key = str(month)
    if resend and write:
        ledger.forget(key)
    renderer = newsletter.Renderer(catalogue)
    made = dict(preview.made) if preview is not None else {}

    def rendered(selection: str) -> newsletter.Rendered:
        if selection not in made:
            made[selection] = renderer.render(issue, parse_selection(selection))
        return made[selection]

    full = rendered(selection_key(None))  # the whole issue, as everyone with no choice gets it
    fingerprint = content_hash(full)
    earlier = None if resend else ledger.frozen(key)
    if write:
        frozen = ledger.freeze(key, fingerprint, full.subject, len(issue.items))
    else:
        frozen = earlier or Frozen(fingerprint, full.subject, len(issue.items), stamp(now))
    changed = frozen.content_hash != fingerprint
    readers, without = audience(issue, subscribers)
    enrolment = [(s.key, s.email, s.name, selection_key(s.categories)) for s in readers]
    if write:
        ledger.enrol(key, enrolment)
    recorded = {} if resend and not write else {r.recipient: r for r in ledger.deliveries(key)}
    # Everyone already enrolled who is still subscribed keeps their place, even if an edit since
    # the freeze left their categories without items: they get the frozen version.
    listed = {s.key for s in subscribers.subscribers}
    rows = [row for row in recorded.values() if row.recipient in listed]
    rows += [
        Delivery(key, r, a, n, sel, "pending", 0, None, None, stamp(now))
        for r, a, n, sel in enrolment
        if r not in recorded
    ]
    todo = [r for r in rows if r.status in ("pending", "sending", "deferred")]
    renders: dict[str, Render] = {}
    for selection in sorted({row.selection for row in todo}):
        kept = None if resend and not write else ledger.render(key, selection)
        if kept is None:
            if changed:
                raise DeliveryError(
                    f"the {month.label} digest changed after sending began on "
                    f"{_stamp_for_people(frozen.frozen_at)}, and some subscribers' version was not "
                    "frozen then; run with --resend to send the new version to everyone, or "
                    "restore the catalogue"
                )
            fresh = rendered(selection)
            kept = Render(fresh.subject, fresh.html, fresh.text)
            if write:
                kept = ledger.keep_render(key, selection, kept)
        renders[selection] = kept
    return Send(
        catalogue=catalogue,
        month=month,
        ledger=ledger,
        subject=frozen.subject,
        items=frozen.items,
        todo=todo,
        already=sum(1 for r in rows if r.status == "sent"),
        without_items=len(without),
        changed=changed,
        frozen_at=frozen.frozen_at,
        renders=renders,
        made=made,
    )


def _stamp_for_people(at: str) -> str:
    return at.replace("T", " ")[:16] + " UTC"


class _Pace:
    """Spaces messages out to at most `rate` per second, across every connection."""

    def __init__(self, rate: float | None, sleep: Callable[[float], None]) -> None:
        self.interval = 1 / rate if rate else 0.0
        self.sleep = sleep
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        if start > now:
            self.sleep(start - now)


class _Worker:
    """Sends the rows of a prepared Send over one or more connections."""

    def __init__(
        self,
        send: Send,
        transport: Transport,
        *,
        clock: Callable[[], datetime],
        policy: RetryPolicy,
        pace: _Pace,
        progress: Callable[[Outcome], None] | None,
        stop: threading.Event,
        sleep: Callable[[float], None],
        rng: random.Random,
        unsubscribe: Callable[[str], str] | None = None,
    ) -> None:
        self.send = send
        self.transport = transport
        self.clock = clock
        self.policy = policy
        self.pace = pace
        self.progress = progress
        self.stop = stop
        self.sleep = sleep
        self.rng = rng
        self.compose = Composer(send, unsubscribe)
        self.summary = Summary(already=send.already)
        self.lock = threading.Lock()
        self.fatal: BaseException | None = None
        # Set when one connection fails: stops the others without touching the caller's `stop`,
        # which belongs to the caller (the scheduler's, say) and outlives this run.
        self.halt = threading.Event()
        settings = settings_of(send.catalogue)
        self.settings = settings

    def run(self, connections: int) -> Summary:
        rows: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        for row in self.send.todo:
            rows.put(row)
        if connections == 1:
            # In the calling thread, so that Ctrl-C stops the send at once.
            self._drain(rows)
        else:
            threads = [
                threading.Thread(target=self._drain, args=(rows,), daemon=True)
                for _ in range(min(connections, len(self.send.todo)) or 1)
            ]
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    while thread.is_alive():
                        thread.join(0.2)
            except BaseException:
                self.stop.set()
                for thread in threads:
                    thread.join()
                raise
        if self.fatal is not None:
            raise self.fatal
        return self.summary

    def _drain(self, rows: queue.SimpleQueue[Delivery]) -> None:
        connection: Connection | None = None
        try:
            while not self.stop.is_set() and not self.halt.is_set():
                try:
                    row = rows.get_nowait()
                except queue.Empty:
                    break
                connection = self._deliver(row, connection)
        except BaseException as exc:  # kept, and raised by run() in the calling thread
            # Whatever stops one connection stops them all, and reaches the caller: with several
            # threads an error must not vanish behind a summary that looks complete.
            with self.lock:
                if self.fatal is None:
                    self.fatal = exc
            self.halt.set()
        finally:
            if connection is not None:
                connection.close()

    def _deliver(self, row: Delivery, connection: Connection | None) -> Connection | None:
        recipient, address = row.recipient, row.address
        key = str(self.send.month)
        again = row.status == "sending"
        ledger = self.send.ledger
        last: Temporary | None = None
        unreachable = True  # until a connection to the server has opened
        for attempt in range(1, self.policy.attempts + 1):
            if attempt > 1:
                self.sleep(self.policy.delay(attempt - 1, self.rng))
                if self.stop.is_set() or self.halt.is_set():
                    break
            self.pace.wait()
            try:
                if connection is None:
                    connection = self.transport.open()
                unreachable = False
                built = self.compose(row, self.clock())
                ledger.mark_sending(key, recipient)
                connection.send(built, self.settings.sender.address, address)
            except Temporary as exc:
                last = exc
                if exc.code is None:  # the connection is gone or unusable: start a fresh one
                    if connection is not None:
                        connection.close()
                    connection = None
                continue
            except Permanent as exc:
                ledger.mark(key, recipient, "failed", exc.code, exc.reply)
                self._record(Outcome(address, "failed", exc.code, exc.reply, again), "failed")
                return connection
            except Fatal:
                # Nothing was accepted for this recipient now: it waits for the next run as it
                # was, so one that was in flight before this run is still announced as such.
                ledger.mark(key, recipient, row.status)
                raise
            ledger.mark(key, recipient, "sent", 250, "accepted")
            self._record(Outcome(address, "sent", again=again), "sent")
            return connection
        code = last.code if last else None
        reply = last.reply if last else "stopped before a retry"
        ledger.mark(key, recipient, "deferred", code, reply)
        self._record(Outcome(address, "deferred", code, reply, again), "deferred")
        if unreachable and last is not None:
            # No point trying every other recipient against a server that does not answer.
            raise Fatal(f"{reply}; gave up after {self.policy.attempts} attempts, the rest wait")
        return connection

    def _record(self, outcome: Outcome, kind: str) -> None:
        with self.lock:
            setattr(self.summary, kind, getattr(self.summary, kind) + 1)
            if outcome.again and kind == "sent":
                self.summary.resent += 1
            self.summary.outcomes.append(outcome)
            if self.progress is not None:
                self.progress(outcome)


@dataclass
class MonthResult:
    """How one `send_month` call ended."""

    kind: str  # "no items", "no readers", "already sent", "declined", "sent"
    plan: Send | None = None
    summary: Summary | None = None


def send_month(
    catalogue: Catalogue,
    subscribers: SubscriberList,
    month: Month,
    ledger: Ledger,
    transport: Transport,
    *,
    now: datetime,
    clock: Callable[[], datetime],
    holder: str,
    confirm: Callable[[Send], bool] | None = None,
    resend: bool = False,
    **execute: Any,
) -> MonthResult:
    """Send `month` under the month's lock: what `digest send` and the scheduler both run.

    `confirm`, when given, sees the plan before anything is written and may decline (or raise, as
    Ctrl-C does). Other keyword arguments go to `Send.execute` (connections, rate, progress, stop,
    policy, sleep).
    """
    if not newsletter.issue(catalogue, month, now).items:
        return MonthResult("no items")
    key = str(month)
    with SendLock(ledger.path, key) as lock:
        lock.acquire(holder)
        # Nothing is written until the plan is confirmed: a declined send (to fix a typo, say)
        # leaves no frozen issue behind, and a declined --resend forgets nobody.
        preview = prepare(catalogue, subscribers, month, ledger, now, resend=resend, write=False)
        if preview is None:  # pragma: no cover - the issue was checked above
            return MonthResult("no items")
        if not preview.todo and not preview.already and not _any_failed(ledger, key, resend):
            return MonthResult("no readers", preview)
        if not preview.todo:
            return MonthResult("already sent", preview)
        if confirm is not None and not confirm(preview):
            return MonthResult("declined", preview)
        plan = prepare(catalogue, subscribers, month, ledger, now, resend=resend, preview=preview)
        if plan is None:  # pragma: no cover - the issue was checked above
            return MonthResult("no items")
        run = ledger.start_run(key, transport.describe(), holder)
        summary = plan.execute(transport, clock=clock, **execute)
        ledger.finish_run(run, summary.sent, summary.failed, summary.deferred, summary.already)
        return MonthResult("sent", plan, summary)


def _any_failed(ledger: Ledger, key: str, resend: bool) -> bool:
    return not resend and bool(ledger.deliveries(key, ("failed",)))
