"""Send a month's digest to every subscriber exactly once, whatever the server or a crash does.

`prepare` freezes the issue and enrols the subscribers in the ledger; `join` is a worker's plan of
a send so begun, taken from the ledger; `Send.execute` works through every row not yet sent. A row
is marked `sending` (committed) before its DATA goes out and `sent` only once the server accepted
it; rows left `sending` by a crash are sent again, with the same Message-ID, by the next run, which
says so. 4xx replies and lost connections are retried with backoff and jitter, reconnecting, then
left `deferred` for the next run; a 5xx marks that recipient `failed` and the rest go on. A ledger
another program keeps locked stops the run as a stop request does (`Halted`): nothing goes out that
is not recorded `sending` first.

The relay's limits (`newsletter.delivery` in the catalogue: connections, rate, daily limit) apply to
every send, whoever starts it; a run may override them. A daily limit stops the run cleanly once
that many recipients were accepted in the last 24 hours, counted across months from the ledger:
the rest stay pending, `held` until the window has room again.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import secrets
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any

from digest.errors import DeliveryError, LedgerBusyError, RenderError
from digest.mail import message, newsletter
from digest.months import Month
from digest.publish.catalogue import Catalogue, Limits, Mailbox, Newsletter
from digest.send.ledger import (
    DEFERRED_LEASE,
    Claim,
    Delivery,
    Frozen,
    Ledger,
    Mark,
    Render,
    RunKind,
    SendLock,
    Status,
    parse_selection,
    selection_key,
    stamp,
)
from digest.send.subscribers import Subscriber, SubscriberList
from digest.send.transport import (
    Connection,
    Fatal,
    Job,
    Permanent,
    Pipe,
    SmtpConnection,
    Temporary,
    Transport,
    wire_bytes,
)

if TYPE_CHECKING:
    from digest.mail.dkim import Signer

# The daily limit's window: it rolls, so a recipient counts for 24 hours from when it was accepted.
DAY = timedelta(hours=24)


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


_CLAIMERS: dict[int, str] = {}


def claimer_name() -> str:
    """Return this process's name for its claims, unique among every sender on every host.

    One name per process: a run that could not let go of its claims (the ledger was locked) is
    followed by one that takes them back at once, rather than waiting for the lease.
    """
    pid = os.getpid()
    if pid not in _CLAIMERS:
        _CLAIMERS[pid] = f"{_place()}:{pid}:{secrets.token_hex(4)}"
    return _CLAIMERS[pid]


def _place() -> str:
    """Return where this process's number means this process: the host and its PID namespace.

    Two containers (or cloned machines) may share a host name; only a claimer of the same
    namespace can be looked up by its process number (`_gone`).
    """
    try:
        namespace = "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


@dataclass(frozen=True, slots=True)
class Sharing:
    """How a send shares its month with other senders: claims, their lease, and waiting.

    Rows are claimed `batch` at a time under a lease of `lease` seconds, renewed a third of the way
    through; once nothing is left to claim but rows other senders hold, the send looks again
    every `poll` seconds (through `pause`, default the stop event's wait) until they are done, or
    their lease runs out and they are claimed here.
    """

    claimer: str = field(default_factory=claimer_name)
    lease: float = 60.0
    poll: float = 2.0
    batch: int = 100
    pause: Callable[[float], object] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one recipient in this run."""

    address: str
    status: Status  # sent, failed, deferred
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
    # Left pending because the daily limit was reached; they can go from `held_until` (in the
    # publication's time zone), when the rolling 24 hours leave room for them.
    held: int = 0
    held_until: datetime | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    # Sent meanwhile by the other senders sharing the month (`digest worker`): with them, this
    # run's `sent` is only its own part, and the result line says how many more went.
    others: int = 0

    @property
    def ok(self) -> bool:
        """Return whether nothing failed or was deferred; held recipients wait by design."""
        return self.failed == 0 and self.deferred == 0


class Halted(DeliveryError):
    """A send stopped part-way because the ledger stayed locked; `summary` is what it recorded.

    `unrecorded`: messages the server took whose `sent` could not be written; they are still
    `sending` in the ledger, so the next run sends them again with the same Message-ID.
    """

    def __init__(self, cause: LedgerBusyError, summary: Summary, left: int, unrecorded: int):
        self.cause = cause
        self.summary = summary
        self.left = left
        self.unrecorded = unrecorded
        locked, fix = cause.locked, cause.fix
        if left:
            text = (
                f"Stopped: {_count(left, 'subscriber')} not sent yet, because {locked}. "
                f"{fix.capitalize()}, then run the same command again to send the rest."
            )
        else:
            text = f"The send ended, but {locked}, so its end is not recorded there: {fix}."
        if unrecorded:
            were = "was" if unrecorded == 1 else "were"
            text += (
                f" {_count(unrecorded, 'message')} the server accepted meanwhile {were} not "
                "recorded, and will be sent again with the same Message-ID, so mail clients "
                "show each once."
            )
        super().__init__(text)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def content_hash(rendered: newsletter.Rendered) -> str:
    """Return a fingerprint of a rendered issue."""
    data = "\0".join((rendered.subject, rendered.html, rendered.text)).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def limits_of(
    catalogue: Catalogue,
    *,
    connections: int | None = None,
    rate: float | None = None,
    daily_limit: int | None = None,
) -> Limits:
    """Return the relay's limits for one run: the catalogue's, each overridden when given."""
    base = catalogue.mailing().limits
    return Limits(
        connections=base.connections if connections is None else connections,
        rate=base.rate if rate is None else rate,
        daily_limit=base.daily_limit if daily_limit is None else daily_limit,
    )


def room(ledger: Ledger, daily_limit: int | None, now: datetime) -> int | None:
    """Return how many more recipients the daily limit lets go at `now`; None: no limit."""
    if daily_limit is None:
        return None
    return max(0, daily_limit - ledger.accepted_since(now - DAY))


def free_at(ledger: Ledger, daily_limit: int, now: datetime, wanted: int) -> datetime:
    """Return when the rolling 24 hours leave room for `wanted` more recipients (or the limit).

    That is 24 hours after the last of the accepted messages that must age out first (when they
    went out in one burst, the oldest), rounded up to the minute, the precision people read.
    """
    since = now - DAY
    position = ledger.accepted_since(since) - daily_limit + min(wanted, daily_limit)
    oldest = ledger.accepted_at(since, position) if position > 0 else None
    if oldest is None:
        return now
    moment = oldest + DAY
    if moment.second or moment.microsecond:
        moment = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return moment


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
    preferences: Callable[[str], str] | None,
) -> tuple[EmailMessage, str]:
    """Return a [TEST] copy of the issue for `address`, outside the ledger, and its sender.

    `preferences(address)`, when given, is the address's preferences URL, linked in the footer.
    """
    settings = catalogue.mailing()
    rendered = newsletter.Renderer(catalogue).render(issue, preferences=preferences is not None)
    one_click = unsubscribe(address) if unsubscribe else None
    own = preferences(address) if preferences else None
    html, text = rendered.personalise(None, one_click or settings.unsubscribe, own)
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
    signer: Signer | None = None,
    *,
    ids: dict[str, str] | None = None,
    preferences: Callable[[str], str] | None = None,
) -> list[str]:
    """Send a [TEST] copy to each address over one connection; return what was not sent, why.

    `signer`, when given, signs each copy as it signs the real digest; `ids`, when given, gets
    each address's Message-ID (new for every test copy); `preferences`, the preferences URL
    maker, as for a send.
    """
    from digest.send.transport import SendError

    connection = transport.open()
    failures = []
    try:
        for address in addresses:
            built, sender = test_copy(catalogue, issue, address, date, unsubscribe, preferences)
            made = built if signer is None else signer.sign(wire_bytes(built))
            if ids is not None:
                ids[address] = str(built["Message-ID"])
            try:
                connection.send(made, sender, address)
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
    # How many recipients the daily limit lets go now (None: no limit); `send_month` sets it on
    # the plan it shows for confirmation.
    room: int | None = None
    # Going on with a resend of this issue that did not reach everyone, not beginning another.
    resuming: bool = False
    # Each reader's preferences URL from their address, when the public pages exist: linked in
    # the footer of every rendering that has the place for it (PREFERENCES_TOKEN).
    preferences: Callable[[str], str] | None = None

    @property
    def in_flight(self) -> int:
        """Return how many messages a crashed run may or may not have delivered."""
        return sum(1 for row in self.todo if row.status == Status.SENDING)

    def execute(
        self,
        transport: Transport,
        *,
        clock: Callable[[], datetime],
        policy: RetryPolicy | None = None,
        connections: int = 1,
        rate: float | None = None,
        daily_limit: int | None = None,
        progress: Callable[[Outcome], None] | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        unsubscribe: Callable[[str], str] | None = None,
        signer: Signer | None = None,
        return_path: Callable[[str], str] | None = None,
        sharing: Sharing | None = None,
    ) -> Summary:
        """Send every pending, in-flight and deferred message; return the counts.

        The rows are claimed in batches as the send goes (`sharing`): other senders of the month
        take the rest, and this one waits for theirs to be done or reclaims them once their lease
        ran out, so it returns when none of the plan's rows is left to do (or it was stopped, or
        the daily limit is reached).

        `unsubscribe(address)`, when given, is the recipient's one-click unsubscribe URL: it goes
        into List-Unsubscribe beside the catalogue's address, and replaces it in the body.
        `daily_limit`: at most that many recipients accepted in any 24 hours, this run's and
        those the ledger counts; the rest are left pending and counted as `held`.
        `signer`, when given, signs each message with DKIM as it goes.
        `return_path(recipient)`, when given, is each message's envelope sender (a VERP address,
        send/verp.py); without it every message's is the From address, as before.
        """
        worker = _Worker(
            self,
            transport,
            clock=clock,
            policy=policy or RetryPolicy(),
            rate=rate,
            budget=room(self.ledger, daily_limit, clock()),
            progress=progress,
            stop=stop or threading.Event(),
            sleep=sleep,
            rng=rng or random.Random(),  # noqa: S311 -- jitter, not secrets
            unsubscribe=unsubscribe,
            signer=signer,
            return_path=return_path,
            sharing=sharing or Sharing(),
            daily_limit=daily_limit,
        )
        summary = worker.run(max(1, connections))
        sent = self.ledger.sent_count(str(self.month))
        summary.others = max(0, sent - summary.already - summary.sent)
        if summary.held and daily_limit is not None:
            until = free_at(self.ledger, daily_limit, clock(), summary.held)
            summary.held_until = until.astimezone(self.catalogue.publication.tz)
        return summary


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
    settings = plan.catalogue.mailing()
    render = plan.renders[row.selection]
    one_click = unsubscribe(row.address) if unsubscribe else None
    own = plan.preferences(row.address) if plan.preferences else None
    html, text = newsletter.Rendered(render.subject, render.html, render.text, 0).personalise(
        row.name, one_click or settings.unsubscribe, own
    )
    return message.build(
        plan.catalogue.publication,
        plan.month,
        _envelope(settings, Mailbox(row.name, row.address), render.subject, one_click),
        html,
        text,
        date,
        copy=row.copy,
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

    With a `signer`, every message is its signed bytes: the DKIM-Signature, made per message,
    in front of the bytes made as above (a signature covers the whole message, so it cannot be
    cached; nothing else changes).
    """

    def __init__(
        self,
        plan: Send,
        unsubscribe: Callable[[str], str] | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.plan = plan
        self.unsubscribe = unsubscribe
        self.signer = signer
        self.settings = plan.catalogue.mailing()
        self._stencils: dict[tuple[bool, str], message.Stencil] = {}
        self._skeletons: dict[message.Envelope, bytes] = {}  # the same for every selection
        self._lock = threading.Lock()

    def __call__(self, row: Delivery, date: datetime) -> bytes | EmailMessage:
        """Return the row's message: bytes as SMTP carries them, or an EmailMessage."""
        one_click = self.unsubscribe(row.address) if self.unsubscribe else None
        preferences = self.plan.preferences
        html_values, text_values = newsletter.personal_values(
            row.name,
            one_click or self.settings.unsubscribe,
            preferences(row.address) if preferences else None,
        )
        recipient = Mailbox(row.name, row.address)
        stencil = self._stencil(row.selection, one_click is not None)
        filled = stencil.fill(recipient, one_click, date, html_values, text_values, row.copy)
        made = filled if filled is not None else compose(self.plan, row, date, self.unsubscribe)
        return made if self.signer is None else self.signer.sign(wire_bytes(made))

    def _stencil(self, selection: str, one_click: bool) -> message.Stencil:
        key = (one_click, selection)
        stencil = self._stencils.get(key)  # made once: only its making takes the lock
        if stencil is not None:
            return stencil
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
                    self._skeletons,
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
    preferences: Callable[[str], str] | None = None,
    holder: str = "digest",
    begun: Begun | None = None,
) -> Send | None:
    """Freeze the month's issue and enrol its readers; None when the month has no items.

    `resend`: a new copy for everyone, with a new Message-ID (the ledger keeps the earlier ones);
    a resend of this issue that did not reach everyone is gone on with instead, so running it
    again sends nobody a third copy (`Send.resuming`). `write=False` writes nothing: the plan a
    person confirms first. `preview`, such a plan made a moment before, lends its renders.
    `preferences`, each reader's preferences URL maker: what is rendered now links to it.
    Writing opens the month's shared send (by `holder`): workers may join; the deferred go again.
    `begun`: what `prerender` began, and its renderer for anything else.
    """
    issue = newsletter.issue(catalogue, month, now)
    if not issue.items:
        return None
    catalogue.mailing()
    # Whoever unsubscribed is neither enrolled nor sent the rest of a half-sent month.
    subscribers = without_suppressed(subscribers, ledger.suppressed())
    listed, key = {s.key for s in subscribers.subscribers}, str(month)
    made = dict(preview.made) if preview is not None else {}
    rendered = _Rendering.of(catalogue, issue, made, preferences is not None, begun)
    full = rendered(selection_key(None))  # the whole issue, as everyone with no choice gets it
    # The fingerprint is of the issue without preferences links, as before they existed: turning
    # the public pages on or off is no change of the digest, and months frozen earlier match.
    fingerprint = content_hash(rendered(selection_key(None), linked=False))
    earlier = ledger.frozen(key)
    recorded = {r.recipient: r for r in ledger.deliveries(key)}
    resuming = resend and _resend_unfinished(earlier, fingerprint, recorded.values(), listed)
    again = resend and not resuming  # a new copy for everyone
    copies = _next_copies(ledger, key, recorded.values(), again)  # for rows not enrolled yet
    fresh = Frozen(fingerprint, full.subject, len(issue.items), stamp(now))
    frozen = _freeze(catalogue, month, ledger, fresh, earlier, again=again, write=write)
    changed = frozen.content_hash != fingerprint
    readers, without = audience(issue, subscribers)
    enrolment = [(s.key, s.email, s.name, selection_key(s.categories)) for s in readers]
    if write:
        ledger.enrol(key, enrolment)
        recorded = {r.recipient: r for r in ledger.deliveries(key)}
    elif again:
        recorded = {}
    rows = _rows(key, recorded, listed, enrolment, copies, stamp(now))
    todo = [r for r in rows if r.status in _TODO]
    kept = None if again and not write else ledger.render
    renders = _renders(ledger, month, todo, rendered, frozen, changed, kept, write=write)
    _refuse_linked(month, frozen, renders.values(), rendered.linked)
    if write:  # opened once all is frozen: a refused send leaves none open for workers to join
        ledger.open_send(key, holder)
    return Send(
        catalogue=catalogue,
        month=month,
        ledger=ledger,
        subject=frozen.subject,
        items=frozen.items,
        todo=todo,
        already=sum(1 for r in rows if r.status == Status.SENT),
        without_items=len(without),
        changed=changed,
        frozen_at=frozen.frozen_at,
        renders=renders,
        made=made,
        resuming=resuming,
        preferences=preferences,
    )


def _renders(
    ledger: Ledger,
    month: Month,
    todo: list[Delivery],
    rendered: _Rendering,
    frozen: Frozen,
    changed: bool,
    kept: Callable[[str, str], Render | None] | None,
    *,
    write: bool,
) -> dict[str, Render]:
    """Return each selection's frozen rendering: as `kept` has it (the ledger's), or rendered
    now and, with `write`, kept; refused when the month's issue changed since it was frozen."""
    key = str(month)
    renders: dict[str, Render] = {}
    for selection in sorted({row.selection for row in todo}):
        render = None if kept is None else kept(key, selection)
        if render is None:
            _refuse_unfrozen(month, frozen, changed)
            render = _frozen_form(rendered(selection))
            if write:
                render = ledger.keep_render(key, selection, render)
        renders[selection] = render
    return renders


def join(
    catalogue: Catalogue,
    subscribers: SubscriberList,
    month: Month,
    ledger: Ledger,
    now: datetime,
    *,
    preferences: Callable[[str], str] | None = None,
) -> Send | None:
    """Return a worker's part in `month`'s open send: the rows and renderings its sender froze.

    Writes nothing, as a dry `prepare`, and renders nothing the ledger holds: the issue is the
    frozen one, the rows are those the sender enrolled (readers it has not are not a worker's to
    send), and each row's selection has its frozen rendering, whatever the catalogue and the
    templates say now. Only a selection without one (its readers enrolled by a `prepare` that
    stopped before rendering it) is rendered, as `prepare` renders it, and refused when the
    catalogue no longer gives the frozen issue. A month never frozen is planned as a dry
    `prepare`.
    """
    key = str(month)
    frozen = ledger.frozen(key)
    if frozen is None:
        return prepare(
            catalogue, subscribers, month, ledger, now, write=False, preferences=preferences
        )
    catalogue.mailing()
    subscribers = without_suppressed(subscribers, ledger.suppressed())
    listed = {s.key for s in subscribers.subscribers}
    rows = [row for row in ledger.deliveries(key) if row.recipient in listed]
    todo = [r for r in rows if r.status in _TODO]
    linked = preferences is not None
    afresh: _Afresh | None = None
    renders: dict[str, Render] = {}
    for selection in sorted({row.selection for row in todo}):
        kept = ledger.render(key, selection)
        if kept is None:
            afresh = afresh or _Afresh.of(catalogue, month, now, frozen, linked)
            kept = afresh.render(selection)
        renders[selection] = kept
    _refuse_linked(month, frozen, renders.values(), linked)
    return Send(
        catalogue=catalogue,
        month=month,
        ledger=ledger,
        subject=frozen.subject,
        items=frozen.items,
        todo=todo,
        already=sum(1 for r in rows if r.status == Status.SENT),
        without_items=0,  # the sender left them out; a worker does not look at the issue
        # Nor whether the catalogue changed since the freeze, unless it had to render.
        changed=afresh is not None and afresh.changed,
        frozen_at=frozen.frozen_at,
        renders=renders,
        preferences=preferences,
    )


def _frozen_form(made: newsletter.Rendered) -> Render:
    """Return what the ledger keeps of a selection's rendering: subject, HTML and text."""
    return Render(made.subject, made.html, made.text)


@dataclass(frozen=True, slots=True)
class _Afresh:
    """What a worker renders of a frozen month: only while the catalogue still gives its issue."""

    rendering: _Rendering
    frozen: Frozen
    changed: bool

    @classmethod
    def of(
        cls, catalogue: Catalogue, month: Month, now: datetime, frozen: Frozen, linked: bool
    ) -> _Afresh:
        issue = newsletter.issue(catalogue, month, now)
        rendering = _Rendering(newsletter.Renderer(catalogue), issue, {}, linked)
        # As in `prepare`: the fingerprint is of the whole issue without preferences links.
        changed = not issue.items or frozen.content_hash != content_hash(
            rendering(selection_key(None), linked=False)
        )
        return cls(rendering, frozen, changed)

    def render(self, selection: str) -> Render:
        _refuse_unfrozen(self.rendering.issue.month, self.frozen, self.changed)
        return _frozen_form(self.rendering(selection))


@dataclass(frozen=True, slots=True)
class _Rendering:
    """Renders a prepare's selections, each once: `made` is kept on the Send for the next prepare.

    With `linked` (a preferences maker was given) a selection is rendered with the preferences
    link, and kept under its own key beside the plain one the fingerprint is taken from.
    """

    renderer: newsletter.Renderer
    issue: newsletter.Issue
    made: dict[str, newsletter.Rendered]
    linked: bool
    begun: dict[str, Callable[[], newsletter.Rendered]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        catalogue: Catalogue,
        issue: newsletter.Issue,
        made: dict[str, newsletter.Rendered],
        linked: bool,
        begun: Begun | None,
    ) -> _Rendering:
        if begun is None:
            return cls(newsletter.Renderer(catalogue), issue, made, linked)
        return cls(begun.renderer, issue, made, linked, dict(begun.renders))

    def __call__(self, selection: str, linked: bool | None = None) -> newsletter.Rendered:
        linked = self.linked if linked is None else linked
        key = _made_key(selection, linked)
        if key not in self.made:
            started = self.begun.pop(key, None)
            if started is not None:
                self.made[key] = started()
            else:
                chosen = parse_selection(selection)
                self.made[key] = self.renderer.render(self.issue, chosen, preferences=linked)
        return self.made[key]


def _made_key(selection: str, linked: bool) -> str:
    """Return where `_Rendering` keeps a selection's rendering, with or without preferences."""
    return f"preferences:{selection}" if linked else selection


@dataclass(frozen=True, slots=True)
class Begun:
    """Renderings a send began ahead (`prerender`), by `_Rendering`'s keys, and the renderer
    that began them: the send renders anything else with it (its helper, templates and cache)."""

    renderer: newsletter.Renderer
    renders: Mapping[str, Callable[[], newsletter.Rendered]]


def prerender(
    catalogue: Catalogue,
    subscribers: SubscriberList,
    month: Month,
    now: datetime,
    *,
    helper: Callable[[str], Callable[[], str | None]],
    linked: bool,
) -> Begun:
    """Begin rendering what a send of `month` to `subscribers` will render: every selection
    their choices make, and the whole issue, in the keys `prepare`'s `begun` takes.

    The templates are filled in now and each page is handed to `helper`, which styles it while
    the caller does other work. A selection `prepare` then wants that was not begun is rendered
    there; so is everything when a template fails here, to say so where it always did.
    """
    renderer = newsletter.Renderer(catalogue, helper=helper)
    issue = newsletter.issue(catalogue, month, now)
    if not issue.items:
        return Begun(renderer, {})
    readers, _ = audience(issue, subscribers)
    whole = selection_key(None)
    chosen = sorted({whole, *(selection_key(reader.categories) for reader in readers)})
    # The fingerprint's (the whole issue without links), then each selection as it is sent.
    wanted = dict.fromkeys([(whole, False), *((selection, linked) for selection in chosen)])
    begun: dict[str, Callable[[], newsletter.Rendered]] = {}
    try:
        for selection, links in wanted:
            categories = parse_selection(selection)
            begun[_made_key(selection, links)] = renderer.start(
                issue, categories, preferences=links
            )
    except RenderError:
        return Begun(renderer, {})
    return Begun(renderer, begun)


def _refuse_linked(month: Month, frozen: Frozen, renders: Iterable[Render], linked: bool) -> None:
    """Refuse a send without public pages (not `linked`) of a month frozen with preferences
    links: their place would be left without a link."""
    token = newsletter.PREFERENCES_TOKEN
    if not linked and any(token in render.html or token in render.text for render in renders):
        raise DeliveryError(
            f"the {month.label} digest was frozen on {_stamp_for_people(frozen.frozen_at)} with "
            "a link to each reader's preferences page, and DIGEST_PUBLIC_URL is not set now: set "
            "DIGEST_PUBLIC_URL and DIGEST_SECRET_KEY as they were to send the rest"
        )


def _rows(
    key: str,
    recorded: dict[str, Delivery],
    listed: set[str],
    enrolment: list[tuple[str, str, str | None, str]],
    copies: dict[str, int],
    at: str,
) -> list[Delivery]:
    """Return the month's rows as a send sees them: the recorded ones, and the ones to enrol.

    Everyone already enrolled who is still subscribed keeps their place, even if an edit since
    the freeze left their categories without items: they get the frozen version.
    """
    rows = [row for row in recorded.values() if row.recipient in listed]
    rows += [
        Delivery(key, r, a, n, sel, Status.PENDING, 0, None, None, at, copies.get(r, 0))
        for r, a, n, sel in enrolment
        if r not in recorded
    ]
    return rows


def _freeze(
    catalogue: Catalogue,
    month: Month,
    ledger: Ledger,
    fresh: Frozen,
    earlier: Frozen | None,
    *,
    again: bool,
    write: bool,
) -> Frozen:
    """Return the issue a send goes out as: frozen now, frozen before, or begun anew (a resend).

    Without `write`, what a real prepare would freeze, with nothing written.
    """
    key = str(month)
    if again and write:

        def message_id(address: str, copy: int) -> str:
            return message.message_id(catalogue.publication, month, address, copy)

        return ledger.start_over(key, fresh.content_hash, fresh.subject, fresh.items, message_id)
    if again:
        resends = (earlier.resends if earlier else 0) + 1
        return Frozen(fresh.content_hash, fresh.subject, fresh.items, fresh.frozen_at, resends)
    if write:
        return ledger.freeze(key, fresh.content_hash, fresh.subject, fresh.items)
    return earlier or fresh


def _refuse_unfrozen(month: Month, frozen: Frozen, changed: bool) -> None:
    """Refuse to render a selection afresh for a half-sent month whose catalogue changed since."""
    if changed:
        raise DeliveryError(
            f"the {month.label} digest changed after sending began on "
            f"{_stamp_for_people(frozen.frozen_at)}, and some subscribers' version was not "
            "frozen then; run with --resend to send the new version to everyone, or restore the "
            "catalogue"
        )


# The rows a run sends: never tried, perhaps delivered before a crash, or refused for now.
_TODO = (Status.PENDING, Status.SENDING, Status.DEFERRED)


def _resend_unfinished(
    earlier: Frozen | None, fingerprint: str, rows: Iterable[Delivery], listed: set[str]
) -> bool:
    """Return whether a resend of this very issue began and someone listed still waits for it."""
    if earlier is None or not earlier.resends or earlier.content_hash != fingerprint:
        return False
    mine = [row for row in rows if row.recipient in listed]
    # None enrolled yet: the resend stopped between its new issue and its readers.
    return not mine or any(row.status in _TODO for row in mine)


def _next_copies(ledger: Ledger, key: str, rows: Iterable[Delivery], again: bool) -> dict[str, int]:
    """Return the copy each reader not yet enrolled would get now: as `Ledger.enrol` numbers them,
    after `Ledger.start_over` when `again`. Only a plan that writes nothing needs this."""
    copies: dict[str, int] = {}
    for kept in ledger.copies(key):
        copies[kept.recipient] = max(copies.get(kept.recipient, 0), kept.copy + 1)
    if again:
        for row in rows:
            tried = row.attempts > 0 or row.status in (Status.SENDING, Status.SENT)
            copies[row.recipient] = row.copy + 1 if tried else row.copy
    return copies


def _stamp_for_people(at: str) -> str:
    return at.replace("T", " ")[:16] + " UTC"


class _Direct:
    """A connection that sends as it is called (the outbox), driven as a Pipe is."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.jobs: list[Job] = []
        self.alive = True
        self.expecting = False
        self.buffered = False

    @property
    def free(self) -> bool:
        return self.alive and not self.jobs

    def begin(self, job: Job) -> None:
        job.stage = "ready"  # no envelope to check first: the send does it all
        self.jobs.append(job)

    def carry(self, job: Job) -> None:
        self.jobs.remove(job)
        job.stage = "content"
        try:
            self.connection.send(job.message, job.sender, job.recipient)
        except (Temporary, Permanent) as exc:
            job.error = exc
            self.alive = not (isinstance(exc, Temporary) and exc.code is None)
        except Fatal as exc:
            job.error = exc
        job.stage = "done"

    def flush(self) -> None:
        pass

    def expire(self, now: float) -> bool:
        return False

    def close(self) -> None:
        self.connection.close()


_Lane = Pipe | _Direct


@dataclass(eq=False)
class _Task:
    """One row's delivery in this run."""

    row: Delivery
    status: Status  # what the ledger says of the row now
    tries: int = 0  # in this run, connection attempts included
    reached: bool = False  # a connection to the server opened for it in this run
    marked: bool = False  # this try's `sending` is committed
    before: Status | None = None  # the status that mark replaced
    slot: _Slot | None = None  # where it was last begun


@dataclass(eq=False)
class _Slot:
    """One of the run's connections: its lane, and the tasks to try again on it after a pause.

    A temporary failure pauses the slot that met it (as a person retrying would), not the others.
    """

    lane: _Lane | None = None
    retry: deque[_Task] = field(default_factory=deque)
    until: float = 0.0  # no new message before this moment


def _gone(claimer: str | None) -> bool:
    """Return whether `claimer` (see `claimer_name`) was a process here that has ended."""
    place, _, rest = (claimer or "").partition(":")
    pid = rest.partition(":")[0]
    if place != _place() or not place.partition("/")[2] or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


class _Claims:
    """This sender's claims on a plan's rows: taken in batches, in the plan's order, under a lease.

    The first pass goes through the plan once; after it, `rescan` reads what is still to do: rows
    other senders hold are waited for, and taken once their lease runs out.
    """

    def __init__(
        self,
        send: Send,
        sharing: Sharing,
        clock: Callable[[], datetime],
        daily_limit: int | None,
    ) -> None:
        self.ledger = send.ledger
        self.key = str(send.month)
        self.sharing = sharing
        self.clock = clock
        self.daily_limit = daily_limit
        self.todo = [row.recipient for row in send.todo]
        self.pool = list(self.todo)  # what this pass may still claim
        self.cursor = 0
        self.full = False  # the daily limit had room for no more claims

    def claim(self) -> Claim:
        """Return the claim as it stands now: this sender, and a lease from now."""
        until = self.clock() + timedelta(seconds=self.sharing.lease)
        return Claim(self.sharing.claimer, stamp(until))

    def more(self) -> list[Delivery]:
        """Claim the next batch of this pass that anyone left; [] at the end of the pass."""
        batch = max(1, self.sharing.batch)
        while self.cursor < len(self.pool) and not self.full:
            chunk = self.pool[self.cursor : self.cursor + batch]
            self.cursor += batch
            got = self.ledger.claim(self.key, chunk, self.claim(), self.clock(), self.daily_limit)
            if got:
                return got
            if self.daily_limit is not None and self.ledger.taken(self.clock()) >= self.daily_limit:
                self.full = True
        return []

    def rescan(self) -> str:
        """Read what of the plan is left: "done", "waiting" (on other senders) or "ready"."""
        now = stamp(self.clock())
        leases = self.ledger.leases(self.key)
        left = []
        for recipient in self.todo:
            status, who, until = leases.get(recipient, (Status.SENT, None, None))
            if status in _TODO and until != DEFERRED_LEASE:
                left.append((recipient, who, until))
        if not left:
            return "done"
        dead = {who for _, who, until in left if who and until and until >= now and _gone(who)}
        for who in dead:  # killed on this host: its claims are free now, not when they run out
            self.ledger.release(self.key, who)
        self.pool = [r for r, who, until in left if until is None or until < now or who in dead]
        self.cursor = 0
        return "ready" if self.pool else "waiting"

    def open_rows(self) -> int:
        """Return how many of the plan's rows are still to do and nobody holds."""
        self.rescan()
        return len(self.pool)

    def release(self, patience: float | None = None) -> None:
        """Let go of the rows claimed and not done: another sender (or the next run) takes them."""
        self.ledger.release(self.key, self.sharing.claimer, patience)


class _Worker:
    """Sends the rows of a prepared Send over one or more connections, in the calling thread.

    One loop drives every connection: it starts messages on free connections, waits for whichever
    server answers, and records what the answers mean. Each round's ledger writes share one
    commit: the `sending` of every message about to go (committed before its first byte is
    written), with the `sent`, `failed` and `deferred` the replies just decided. A commit the
    ledger refuses for a lock held too long stops the run (`halted`): the messages it would have
    let go stay unsent, and what the replies still due decide is held for one last try.
    """

    def __init__(
        self,
        send: Send,
        transport: Transport,
        *,
        clock: Callable[[], datetime],
        policy: RetryPolicy,
        rate: float | None,
        budget: int | None,
        progress: Callable[[Outcome], None] | None,
        stop: threading.Event,
        sleep: Callable[[float], None],
        rng: random.Random,
        unsubscribe: Callable[[str], str] | None = None,
        signer: Signer | None = None,
        return_path: Callable[[str], str] | None = None,
        sharing: Sharing | None = None,
        daily_limit: int | None = None,
    ) -> None:
        self.send = send
        self.return_path = return_path
        self.sharing = sharing or Sharing()
        self.claims = _Claims(send, self.sharing, clock, daily_limit)
        self.lost: set[str] = set()  # rows another sender took: this one's lease ran out
        self.renew_at = 0.0  # when to renew the lease next (monotonic)
        self.slots: deque[float] = deque()  # starts the shared rate reserved for this sender
        self.epoch = time.time() - time.monotonic()  # the shared rate's moments are wall time
        self.transport = transport
        self.clock = clock
        self.policy = policy
        self.interval = 1 / rate if rate else 0.0
        self.budget = budget  # how many may be accepted in this run (the daily limit's room)
        self.progress = progress
        self.stop = stop
        self.sleep = sleep
        self.rng = rng
        self.compose = Composer(send, unsubscribe, signer)
        self.summary = Summary(already=send.already)
        self.sender = send.catalogue.mailing().sender.address
        self.key = str(send.month)
        self.marks: list[Mark] = []  # to commit at the end of the round
        self.outcomes: list[tuple[Outcome, str]] = []  # to report once committed
        self.jobs: list[Job] = []  # begun, not yet done
        self.selector = selectors.DefaultSelector()
        self.skew = 0.0  # what `sleep` skipped: a test's sleep returns at once
        self.next_start = 0.0  # with a rate, the earliest moment for the next message
        self.halted: LedgerBusyError | None = None  # the ledger stayed locked: stop

    def now(self) -> float:
        return time.monotonic() + self.skew

    @property
    def stopping(self) -> bool:
        """Whether to begin nothing more: the caller asked, or the ledger cannot be written."""
        return self.halted is not None or self.stop.is_set() or bool(self.lost)

    @property
    def exhausted(self) -> bool:
        """Whether the daily limit lets nothing more begin: accepted and in flight fill it."""
        if self.budget is None:
            return False
        accepted = self.summary.sent + sum(1 for _, kind in self.outcomes if kind == "sent")
        return accepted + len(self.jobs) >= self.budget

    def run(self, connections: int) -> Summary:
        queue: deque[_Task] = deque()
        slots = [_Slot() for _ in range(max(1, min(connections, len(self.send.todo))))]
        ready: list[Job] = []
        try:
            while True:
                self._keep(queue, len(slots))
                if not self.stopping:
                    for slot in slots:
                        self._start(slot, queue)
                elif not any(job.stage == "content" for job in self.jobs):
                    break  # stopped, and no message is half way: the rest wait
                for slot in slots:
                    if slot.lane is not None:
                        slot.lane.flush()
                if not self.jobs and not queue and not any(slot.retry for slot in slots):
                    if self._more(queue):
                        continue
                    break
                if not self.jobs and self.exhausted:
                    break  # the daily limit is reached: the rest are held
                self._wait(slots, queue)
                ready = self._decide(slots)
                self._commit()
                if self.stopping:
                    self._unmark(ready)  # not one byte of these went out
                    continue
                for job in ready:
                    # Written with the next message's envelope, once the top of the loop begun it.
                    _lane(job).carry(job)
                ready = []
        finally:
            self._decide(slots, final=True)
            self._commit()
            self._unmark([job for job in ready if job.stage == "ready"])
            for slot in slots:
                if slot.lane is not None:
                    slot.lane.close()
            self.selector.close()
            self._release()
        return self._end()

    def _end(self) -> Summary:
        """Count what the daily limit holds back; raise Halted if the ledger stayed locked."""
        if (self.exhausted or self.claims.full) and not self.stop.is_set():
            try:
                self.summary.held = self.claims.open_rows()
            except LedgerBusyError as exc:
                self.halted = self.halted or exc
        if self.halted is not None:
            self._commit(patience=0.0)  # one last try: the lock may have gone meanwhile
            left = len(self.send.todo) - self.summary.sent
            left -= self.summary.deferred + self.summary.failed
            unrecorded = sum(1 for _, kind in self.outcomes if kind == "sent")
            raise Halted(self.halted, self.summary, left, unrecorded)
        return self.summary

    # -- claims -----------------------------------------------------------------------------------

    def _keep(self, queue: deque[_Task], slots: int) -> None:
        """Renew the lease when due; claim the next batch when the queue runs low."""
        if self.stopping:
            return
        if self.now() >= self.renew_at:
            self.renew_at = self.now() + self.sharing.lease / 3
            try:
                self.send.ledger.renew(self.key, self.claims.claim())
            except LedgerBusyError:  # one try: the next round's marks renew too, and so on
                self.renew_at = self.now() + 1.0
        try:
            if len(queue) < 2 * slots and not self.exhausted:
                queue.extend(_Task(row, row.status) for row in self.claims.more())
        except LedgerBusyError as exc:
            self.halted = self.halted or exc

    def _more(self, queue: deque[_Task]) -> bool:
        """With nothing in hand: claim more, or wait for other senders' rows; False: done."""
        if self.stopping or self.exhausted:
            return False
        try:
            claimed = self.claims.more()
            if claimed:
                queue.extend(_Task(row, row.status) for row in claimed)
                return True
            if self.claims.full:
                return False
            state = self.claims.rescan()
            if state == "done":
                self.send.ledger.close_send(self.key, self.clock())
                return False
        except LedgerBusyError as exc:
            self.halted = self.halted or exc
            return False
        if state == "waiting":
            (self.sharing.pause or self.stop.wait)(self.sharing.poll)
        return not self.stopping

    def _release(self) -> None:
        try:  # once halted, one try: the lock was held long enough already
            self.claims.release(0.0 if self.halted is not None else None)
        except LedgerBusyError as exc:  # the lease runs out on its own
            self.halted = self.halted or exc

    def _rate_allows(self, now: float, queue: deque[_Task]) -> bool:
        """Take the next start the rate allows, if it has come: the send's shared pace, or,
        outside a shared send, this process's own."""
        if not self.slots:
            count = max(1, min(len(queue) + 1, round(0.5 / self.interval)))
            try:
                first = self.send.ledger.take_slots(
                    self.key, count, self.interval, now + self.epoch
                )
            except LedgerBusyError as exc:
                self.halted = self.halted or exc
                return False
            if first is None:
                if self.next_start > now:
                    return False
                self.next_start = max(now, self.next_start) + self.interval
                return True
            self.slots.extend(first - self.epoch + i * self.interval for i in range(count))
        if self.slots[0] > now:
            return False
        self.slots.popleft()
        return True

    # -- starting messages ------------------------------------------------------------------------

    def _start(self, slot: _Slot, queue: deque[_Task]) -> None:
        """Begin the slot's next message, if it is free for one."""
        now = self.now()
        if slot.until > now or not (slot.retry or queue) or self.exhausted:
            return
        if slot.lane is not None and not slot.lane.free:
            if slot.lane.alive:
                return
            self._drop(slot)
        if self.interval and not self._rate_allows(now, queue):
            return
        task = slot.retry.popleft() if slot.retry else queue.popleft()
        task.tries += 1
        if slot.lane is None:
            try:
                connection = self.transport.open()
            except Temporary as exc:
                self._temporary(slot, task, exc, attempt=False)
                return
            slot.lane = (
                connection.pipe if isinstance(connection, SmtpConnection) else _Direct(connection)
            )
            if isinstance(slot.lane, Pipe):
                self.selector.register(slot.lane, selectors.EVENT_READ, slot)
        task.reached = True
        task.slot = slot
        sender = self.return_path(task.row.recipient) if self.return_path else self.sender
        job = Job(self.compose(task.row, self.clock()), sender, task.row.address, task)
        self.jobs.append(job)
        slot.lane.begin(job)

    def _drop(self, slot: _Slot) -> None:
        """Forget the slot's lane: closed, or the server hung up."""
        lane, slot.lane = slot.lane, None
        if isinstance(lane, Pipe):
            self.selector.unregister(lane)
        if lane is not None:
            lane.close()

    # -- waiting and deciding ---------------------------------------------------------------------

    def _wait(self, slots: list[_Slot], queue: deque[_Task]) -> None:
        """Wait for a reply, or for the next paused slot, or for the rate's next slot.

        Once stopped, only for a reply: nothing new begins, so a server waiting for a message gets
        none (it is hung up on at the end), and a paused slot or the rate has nothing to wake for.
        """
        lanes = [slot.lane for slot in slots if slot.lane is not None]
        starting = not self.stopping
        if any(job.stage == "done" or (starting and job.stage == "ready") for job in self.jobs):
            return  # the outbox's, at once
        now = self.now()
        wakes: list[float] = []
        if starting and not self.exhausted:  # exhausted: only replies can change anything
            wakes += [slot.until for slot in slots if slot.retry or (queue and slot.until > now)]
            if self.interval and queue:
                wakes.append(self.slots[0] if self.slots else self.next_start)
        timeout = max(0.0, min(wakes) - now) if wakes else None
        if not any(lane.expecting for lane in lanes):
            if timeout:
                self.sleep(timeout)
                self.skew += max(0.0, timeout - (self.now() - now))
            return
        if any(lane.buffered for lane in lanes):
            timeout = 0.0
        # Wake at least twice a second: for `stop`, and for a server that stopped answering.
        events = self.selector.select(min(timeout, 0.5) if timeout is not None else 0.5)
        readable = {id(key.data) for key, _ in events}
        for slot in slots:
            lane = slot.lane
            if isinstance(lane, Pipe) and (id(slot) in readable or lane.buffered):
                lane.receive()
            if lane is not None:
                lane.expire(time.monotonic())

    def _decide(self, slots: list[_Slot], *, final: bool = False) -> list[Job]:
        """Act on every job the replies moved on; return those whose server waits for them."""
        ready: list[Job] = []
        fatal: Exception | None = None
        for job in list(self.jobs):
            task = _task(job)
            if job.stage == "ready":
                if not final and not self.stopping:
                    self._mark(task, Status.SENDING, attempt=True)
                    ready.append(job)
                continue
            if job.stage != "done":
                continue
            self.jobs.remove(job)
            error = job.error
            if error is None:
                self._mark(task, Status.SENT, 250, "accepted", attempt=not task.marked)
                again = self._again(task)
                self._outcome(Outcome(task.row.address, Status.SENT, again=again), "sent")
            elif isinstance(error, Permanent):
                self._mark(task, Status.FAILED, error.code, error.reply, attempt=not task.marked)
                outcome = Outcome(
                    task.row.address, Status.FAILED, error.code, error.reply, self._again(task)
                )
                self._outcome(outcome, "failed")
            elif isinstance(error, Temporary):
                assert task.slot is not None  # noqa: S101 -- set when it was begun
                self._temporary(task.slot, task, error, attempt=not task.marked, final=final)
            else:
                fatal = fatal or error
            task.marked = False
        if fatal is not None and not final:
            self._commit()
            raise fatal
        return ready

    def _temporary(
        self,
        slot: _Slot,
        task: _Task,
        error: Temporary,
        *,
        attempt: bool,
        final: bool = False,
    ) -> None:
        """Pause the slot and try again later, or leave the task for the next run.

        `attempt`: the server saw this try, and the ledger has not counted it yet.
        """
        if slot.lane is not None and not slot.lane.alive:
            self._drop(slot)
        if task.tries < self.policy.attempts and not final and not self.stopping:
            if attempt:
                self._mark(task, task.status, attempt=True)
            slot.retry.append(task)
            slot.until = max(slot.until, self.now() + self.policy.delay(task.tries, self.rng))
            return
        self._mark(task, Status.DEFERRED, error.code, error.reply, attempt=attempt)
        self._outcome(
            Outcome(task.row.address, Status.DEFERRED, error.code, error.reply, self._again(task)),
            "deferred",
        )
        if not task.reached and not final:
            # No point trying every other recipient against a server that does not answer.
            self._commit()
            raise Fatal(
                f"{error.reply}; gave up after {self.policy.attempts} attempts, the rest wait"
            )

    # -- the ledger -------------------------------------------------------------------------------

    def _mark(
        self,
        task: _Task,
        status: Status,
        code: int | None = None,
        reply: str | None = None,
        *,
        attempt: bool = False,
    ) -> None:
        if status == Status.SENDING:
            task.marked = True
            task.before = task.status
        task.status = status
        self.marks.append(Mark(task.row.recipient, status, attempt, code, reply))

    def _commit(self, patience: float | None = None) -> None:
        """Write the marks, then count and report their outcomes; a lock held too long halts.

        Once halted, marks wait for the last try, which is given `patience` (seconds).
        """
        if self.halted is not None and patience is None:
            return
        try:
            lost = self.send.ledger.record(
                self.key, self.marks, patience=patience, at=self.clock(), claim=self.claims.claim()
            )
        except LedgerBusyError as exc:
            self.halted = self.halted or exc  # nothing was written: the marks are kept
            return
        self.marks = []
        self.lost |= lost
        outcomes, self.outcomes = self.outcomes, []
        for outcome, kind in outcomes:
            self._record(outcome, kind)

    def _unmark(self, jobs: list[Job]) -> None:
        """Put back the status of rows marked `sending` whose message never went out."""
        for job in jobs:
            task = _task(job)
            if task.marked:
                task.marked = False
                self._restore(task)
        self._commit()

    def _restore(self, task: _Task) -> None:
        if task.status == Status.SENDING and task.before:
            task.status = task.before
            unwritten = Mark(task.row.recipient, Status.SENDING, True)
            if unwritten in self.marks:  # the ledger was locked: the row never said `sending`
                self.marks.remove(unwritten)
            else:
                self.marks.append(Mark(task.row.recipient, task.before))

    def _again(self, task: _Task) -> bool:
        return task.row.status == Status.SENDING

    def _outcome(self, outcome: Outcome, kind: str) -> None:
        self.outcomes.append((outcome, kind))

    def _record(self, outcome: Outcome, kind: str) -> None:
        setattr(self.summary, kind, getattr(self.summary, kind) + 1)
        if outcome.again and kind == "sent":
            self.summary.resent += 1
        self.summary.outcomes.append(outcome)
        if self.progress is not None:
            self.progress(outcome)


def _lane(job: Job) -> _Lane:
    slot = _task(job).slot
    assert slot is not None  # noqa: S101 -- set when it was begun
    assert slot.lane is not None  # noqa: S101 -- a job's lane stays until its job is done
    return slot.lane


def _task(job: Job) -> _Task:
    task = job.tag
    assert isinstance(task, _Task)  # noqa: S101 -- every job the worker begins carries its task
    return task


@dataclass
class MonthResult:
    """How one `send_month` call ended."""

    # "no items", "no readers", "already sent", "declined", "sent", or "held": the daily limit
    # left no room, so nothing was sent and `summary.held` wait until `summary.held_until`.
    kind: str
    plan: Send | None = None
    summary: Summary | None = None
    limits: Limits | None = None  # what the run honoured: the catalogue's, or the overrides
    # Written to the outbox: nobody was emailed, and the ledger records nobody as sent.
    rehearsal: bool = False


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
    connections: int | None = None,
    rate: float | None = None,
    daily_limit: int | None = None,
    preferences: Callable[[str], str] | None = None,
    begun: Begun | None = None,
    **execute: Any,
) -> MonthResult:
    """Send `month` under the month's lock: what `digest send` and the scheduler both run.

    The relay's limits are the catalogue's (`newsletter.delivery`); `connections`, `rate` and
    `daily_limit`, when given, override them for this run. `confirm`, when given, sees the plan
    before anything is written and may decline (or raise, as Ctrl-C does). `preferences` makes
    each reader's preferences URL, and `begun` holds what `prerender` began (see `prepare`).
    Other keyword arguments go to `Send.execute` (progress, stop, policy, sleep, unsubscribe).

    A rehearsal transport (the outbox) is sent through the same path against a throwaway ledger:
    every reader's message is written, whatever was sent before, and `ledger` records the run as a
    rehearsal and nothing else, so no later real send skips anyone for it. Nothing goes to the
    relay, so its rate and daily limit do not apply.
    """
    rehearsal = transport.rehearsal
    if not newsletter.issue(catalogue, month, now).items:
        return MonthResult("no items", rehearsal=rehearsal)
    limits = limits_of(catalogue, connections=connections, rate=rate, daily_limit=daily_limit)
    if rehearsal:
        limits = Limits(connections=limits.connections)
    key = str(month)
    kind = RunKind.REHEARSAL if rehearsal else RunKind.RESEND if resend else RunKind.SEND
    with SendLock(ledger.path, key, ledger) as lock, _deliveries(ledger, rehearsal) as state:
        lock.acquire(holder)
        if rehearsal:  # as the real send would be: without those who unsubscribed
            subscribers = without_suppressed(subscribers, ledger.suppressed())
        # Nothing is written until the plan is confirmed: a declined send (to fix a typo, say)
        # leaves no frozen issue behind, and a declined --resend replaces no copy.
        again = functools.partial(prepare, catalogue, subscribers, month, state, now, begun=begun)
        preview = again(resend=resend, write=False, preferences=preferences)
        if preview is None:  # pragma: no cover - the issue was checked above
            return MonthResult("no items", limits=limits, rehearsal=rehearsal)
        if not preview.todo and not preview.already and not _any_failed(state, key, resend):
            return MonthResult("no readers", preview, limits=limits, rehearsal=rehearsal)
        if not preview.todo:
            return MonthResult("already sent", preview, limits=limits, rehearsal=rehearsal)
        preview.room = room(ledger, limits.daily_limit, clock())
        if preview.room == 0 and limits.daily_limit is not None:
            # Nobody could be sent anything: say so before asking anyone to confirm a send.
            return _held_back(catalogue, ledger, preview, limits.daily_limit, clock(), limits)
        if confirm is not None and not confirm(preview):
            return MonthResult("declined", preview, limits=limits, rehearsal=rehearsal)
        plan = again(resend=resend, preview=preview, preferences=preferences, holder=holder)
        if plan is None:  # pragma: no cover - the issue was checked above
            return MonthResult("no items", limits=limits, rehearsal=rehearsal)
        run = ledger.start_run(key, transport.describe(), holder, kind)
        summary = plan.execute(
            transport,
            clock=clock,
            connections=limits.connections,
            rate=limits.rate,
            daily_limit=limits.daily_limit,
            **execute,
        )
        try:
            ledger.finish_run(run, summary.sent, summary.failed, summary.deferred, summary.already)
            if not rehearsal:
                ledger.hold(key, summary.held, summary.held_until)
        except LedgerBusyError as exc:
            left = len(plan.todo) - summary.sent - summary.deferred - summary.failed
            raise Halted(exc, summary, left, 0) from exc
        return MonthResult("sent", plan, summary, limits, rehearsal)


@contextmanager
def _deliveries(ledger: Ledger, rehearsal: bool) -> Iterator[Ledger]:
    """Yield where a send records its deliveries: `ledger`, or a throwaway one for a rehearsal."""
    if not rehearsal:
        yield ledger
        return
    with Ledger.scratch() as scratch:
        yield scratch


def _held_back(
    catalogue: Catalogue, ledger: Ledger, plan: Send, limit: int, now: datetime, limits: Limits
) -> MonthResult:
    """Record and return a month the daily limit holds back whole: nobody can go now."""
    held = len(plan.todo)
    until = free_at(ledger, limit, now, held)
    ledger.hold(str(plan.month), held, until)
    summary = Summary(
        already=plan.already, held=held, held_until=until.astimezone(catalogue.publication.tz)
    )
    return MonthResult("held", plan, summary, limits)


def _any_failed(ledger: Ledger, key: str, resend: bool) -> bool:
    return not resend and bool(ledger.deliveries(key, (Status.FAILED,)))
