"""Bounces and complaints: the VERP return path of a send, and reading a bounce mailbox.

`return_path` is what `send_month` gives each message as its envelope sender when
`newsletter.bounces` is set. `read_bounces` is the one use case `digest bounces`, the scheduler
and the console all run: it classifies each message of a bounce source, ties it to a subscriber
(and a month, when it can), records it with the store's bounce rules, and marks processed only
what it recognised.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from digest.app.publishing import load
from digest.app.settings import Settings
from digest.mail.bounces import Kind, Report, classify
from digest.months import Month

if TYPE_CHECKING:
    from digest.publish.catalogue import Catalogue, Publication
    from digest.send.ledger import Ledger
    from digest.send.mailbox import BounceSource as BounceSourceFile
    from digest.send.store import Bounce, BounceRules, Change, Store
    from digest.send.verp import Verp


def verp(settings: Settings, catalogue: Catalogue) -> Verp | None:
    """Return the installation's VERP return paths, or None when newsletter.bounces is not set."""
    from digest.send.verp import Verp

    news = catalogue.newsletter
    if news is None or news.bounces is None:
        return None
    return Verp(settings.secret("newsletter.bounces is set, and"), news.bounces.address)


def return_path(
    settings: Settings, catalogue: Catalogue, month: Month
) -> Callable[[str], str] | None:
    """Return each recipient's envelope sender for `month` (a VERP address), or None: without
    newsletter.bounces every message's envelope sender is the From address, as before."""
    paths = verp(settings, catalogue)
    if paths is None:
        return None
    key = str(month)
    return lambda recipient: paths.sender(key, recipient)


# -- reading a bounce mailbox ---------------------------------------------------------------------


class Incoming(Protocol):
    """One message of a bounce source (send/mailbox.py's `Incoming`)."""

    @property
    def key(self) -> str: ...

    @property
    def raw(self) -> bytes: ...


class BounceSource(Protocol):
    """A bounce mailbox (send/mailbox.py's `open_source`): read, and mark what was handled."""

    def messages(self) -> Iterator[Incoming]: ...

    def processed(self, key: str) -> None: ...


# What the rules act on; an auto-reply is recognised (moved out of the way) but records nothing.
_RECORDED = {Kind.HARD: "hard", Kind.SOFT: "soft", Kind.COMPLAINT: "complaint"}
# The digest's own Message-ID: <digest.YYYY-MM.HASH[.rN]@host> (mail/message.py's message_id).
_OWN_ID = re.compile(r"digest\.(\d{4}-\d{2})\.([0-9a-f]{24})(?:\.r\d+)?@.+")


@dataclass(frozen=True, slots=True)
class Handled:
    """What `read_bounces` made of one message of the source."""

    key: str  # the message's key in the source
    kind: Kind
    address: str | None = None  # the subscriber it was tied to; None: nobody
    month: str | None = None  # the month's digest it bounced; None: not tied to a month
    matched: str = ""  # "verp", "recipient" or "message-id"; "" when nobody
    status: str = ""
    detail: str = ""
    new: bool = False  # recorded now (or, in a dry run, would be); False: recorded before
    changes: tuple[Change, ...] = ()  # the subscriber's change (bounced, complained)
    processed: bool = False  # moved to digest-processed (in a dry run: would be)


@dataclass(frozen=True, slots=True)
class BounceRun:
    """What one `digest bounces` did (or, dry, would do), message by message."""

    handled: tuple[Handled, ...]
    dry_run: bool

    def count(self, kind: Kind) -> int:
        """Return how many messages were of `kind`."""
        return sum(1 for one in self.handled if one.kind is kind)

    @property
    def recorded(self) -> int:
        """Return how many new bounces and complaints were (or would be) recorded."""
        return sum(1 for one in self.handled if one.new)

    @property
    def ended(self) -> int:
        """Return how many subscriptions were (or would be) ended."""
        return sum(len(one.changes) for one in self.handled)

    @property
    def left(self) -> int:
        """Return how many messages were left where they were (not recognised, or nobody's)."""
        return sum(1 for one in self.handled if not one.processed)


def read_bounces(
    settings: Settings, source: BounceSource, dry_run: bool, now: datetime
) -> BounceRun:
    """Read every message of `source`: classify it, tie it to a subscriber, record it.

    A bounce or complaint is tied to its subscriber by the VERP token it came back to, else by
    the addresses the report names (a known subscriber, or a recipient in the ledger), else by the
    digest's Message-ID it quotes; the month is the token's or the Message-ID's (none: it counts
    for the subscriber and for no month's rates). Each is recorded with the store's bounce rules,
    then marked processed, as is an auto-reply; everything else (not recognised, or naming
    nobody) is left exactly where it was. `dry_run`: nothing is recorded and nothing moved.
    """
    from digest.send.store import BounceRules, Store

    catalogue = load(settings)
    news = catalogue.newsletter
    given = news.bounces if news is not None else None
    rules = BounceRules(given.soft_limit, given.soft_days) if given else BounceRules()
    paths = verp(settings, catalogue) if given else None
    handled: list[Handled] = []
    with _ledger(settings, dry_run) as ledger:
        kept = Store(ledger)
        matcher = _Matcher(ledger, kept, paths, catalogue.publication)
        pending: list[Bounce] = []
        for message in source.messages():
            handled.append(_handle(message, matcher, kept, rules, now, dry_run, pending))
    # Moved once everything is read and recorded: the source is never changed mid-listing, and a
    # run stopped before this moves them the next time (a report recorded before changes nothing).
    if not dry_run:
        for one in handled:
            if one.processed:
                source.processed(one.key)
    return BounceRun(tuple(handled), dry_run)


def open_source(settings: Settings, url: str, *, beside: bool = False) -> BounceSourceFile:
    """Open the bounce source `url` (imap://, imaps://, maildir:, mbox:) with
    DIGEST_BOUNCE_PASSWORD; a source that cannot be named or opened is a MailboxError.

    `beside`: a relative maildir: or mbox: path is the catalogue's folder's, as every path the
    environment names is (DIGEST_BOUNCE_SOURCE); else the current folder's (a command's argument).
    """
    from digest.send import mailbox

    return mailbox.open_source(
        url, settings.bounce_password, base=settings.home if beside else None
    )


def scheduled(settings: Settings, now: datetime) -> str:
    """Read DIGEST_BOUNCE_SOURCE once, as `digest bounces` does; return the line to log."""
    from digest.app import wording

    if settings.bounce_source is None:  # pragma: no cover - the scheduler polls only with one
        return "no bounce source (DIGEST_BOUNCE_SOURCE is not set)"
    with open_source(settings, settings.bounce_source, beside=True) as source:
        return wording.bounce_summary(read_bounces(settings, source, dry_run=False, now=now))


@contextmanager
def _ledger(settings: Settings, dry_run: bool) -> Iterator[Ledger]:
    """Yield the state's ledger; a dry run without one reads an empty one and creates nothing."""
    from digest.send.ledger import Ledger

    if dry_run and not settings.has_state:
        with Ledger.scratch() as scratch:
            yield scratch
        return
    with settings.ledger(busy_timeout=settings.ledger_wait) as ledger:
        yield ledger


def _handle(
    message: Incoming,
    matcher: _Matcher,
    kept: Store,
    rules: BounceRules,
    now: datetime,
    dry_run: bool,
    pending: list[Bounce],
) -> Handled:
    """Return what one message is and what recording it does (or, dry, would do)."""
    from digest.send.store import Bounce, BounceKind

    report = classify(message.raw)
    if report.kind is Kind.AUTOREPLY:
        return Handled(message.key, report.kind, processed=True)
    if report.kind not in _RECORDED:
        return Handled(message.key, report.kind)
    found = matcher.match(report)
    if not found:
        return Handled(message.key, report.kind, status=report.status, detail=report.detail)
    results = []
    for address, month, how in found:
        bounce = Bounce(
            report.report_id, address, month, BounceKind(_RECORDED[report.kind]),
            report.status, report.detail, matched=how,
        )  # fmt: skip
        if dry_run:
            done = kept.plan_bounce(bounce, rules, now, pending)
            pending.append(done.bounce)
        else:
            done = kept.record_bounce(bounce, rules, now)
        results.append((address, month, how, done))
    address, month, how, _ = results[0]
    return Handled(
        message.key, report.kind, address, month, how, report.status, report.detail,
        any(done.new for *_, done in results),
        tuple(change for *_, done in results for change in done.changes), processed=True,
    )  # fmt: skip


class _Matcher:
    """Ties a report to subscribers: the VERP token, the addresses named, the Message-ID."""

    def __init__(
        self, ledger: Ledger, kept: Store, paths: Verp | None, publication: Publication
    ) -> None:
        self.ledger = ledger
        self.kept = kept
        self.paths = paths
        self.publication = publication
        self._months: dict[str, list[str]] = {}
        self._codes: dict[str, dict[str, str]] = {}  # by month: recipient by VERP code

    def recipients(self, month: str) -> list[str]:
        """Return the recipients the ledger has for `month` (read once a run)."""
        if month not in self._months:
            self._months[month] = [row.recipient for row in self.ledger.deliveries(month)]
        return self._months[month]

    def match(self, report: Report) -> list[tuple[str, str | None, str]]:
        """Return (address, month or None, how) for each subscriber the report is about."""
        by_token = self._by_token([*report.envelope_to, report.original_sender or ""])
        if by_token is not None:
            return [by_token]
        by_id = self._by_message_id(report.message_id)
        named = [a for a in _unique(report.recipients) if self._known(a)]
        if named:
            return [(a, by_id[1] if by_id and by_id[0] == a else None, "recipient") for a in named]
        if by_id is not None:
            return [(by_id[0], by_id[1], "message-id")]
        return []

    def _by_token(self, addresses: Iterable[str]) -> tuple[str, str, str] | None:
        if self.paths is None:
            return None
        for address in addresses:
            token = self.paths.read(address) if address else None
            if token is None:
                continue
            if token.month not in self._codes:
                self._codes[token.month] = self.paths.codes(
                    token.month, self.recipients(token.month)
                )
            recipient = self._codes[token.month].get(token.code)
            if recipient is not None:
                return recipient, token.month, "verp"
        return None

    def _by_message_id(self, message_id: str | None) -> tuple[str, str] | None:
        from digest.mail.message import message_id as own_id

        found = _OWN_ID.fullmatch((message_id or "").strip().strip("<>").lower())
        if found is None:
            return None
        month = found.group(1)
        try:
            parsed = Month.parse(month)
        except ValueError:
            return None
        for recipient in self.recipients(month):
            if own_id(self.publication, parsed, recipient).startswith(
                f"<digest.{month}.{found.group(2)}"
            ):
                return recipient, month
        return None

    def _known(self, address: str) -> bool:
        """Return whether `address` is a subscriber, or a recipient the ledger has."""
        return self.kept.get(address) is not None or self.ledger.has_recipient(address)


def _unique(addresses: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(a.strip().lower() for a in addresses if a.strip()))
