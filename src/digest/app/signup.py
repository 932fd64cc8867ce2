"""The use cases of the public pages: sign up, confirm, and a person's own preferences.

`sign_up` answers alike whether or not the address is known (the caller shows one page either
way) and mails a confirmation link through the same transport as every digest; `confirm` makes
the person's subscription active and records their consent; `preferences` and `change` read and
apply what the person chooses from their own link. See `digest.send.tokens` for the links and
`digest.send.store` for the rules.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from digest.app.publishing import load
from digest.app.settings import Settings
from digest.app.subscribing import open_store
from digest.errors import DigestError

if TYPE_CHECKING:
    from digest.send.store import Subscription
    from digest.send.tokens import Tokens

DAY = timedelta(days=1)
MAILS_PER_ADDRESS = 3  # confirmation mails one address is sent in a day, at most
SIGNUPS_PER_CLIENT = 10  # sign-ups one client address may post in an hour
MONTH = timedelta(days=30)  # a pause of N months lasts N * 30 days


class Outcome(StrEnum):
    """What became of a sign-up; the page a person sees is the same for the first two."""

    MAILED = "mailed"
    IGNORED = "ignored"  # the honeypot was filled in: a bot, sent nothing
    TOO_MANY = "too many"  # a rate limit: answered 429


@dataclass
class Limiter:
    """Counts sign-ups per client and confirmation mails per address, in a sliding window.

    Kept in the memory of the process that serves the pages: a restart starts the counts again.
    """

    per_client: int = SIGNUPS_PER_CLIENT
    client_window: timedelta = timedelta(hours=1)
    per_address: int = MAILS_PER_ADDRESS
    address_window: timedelta = DAY
    _seen: dict[str, deque[datetime]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, key: str, now: datetime, most: int, window: timedelta) -> bool:
        """Count one more for `key` if fewer than `most` fell in the last `window`."""
        with self._lock:
            times = self._seen.setdefault(key, deque())
            while times and times[0] <= now - window:
                times.popleft()
            if len(times) >= most:
                return False
            times.append(now)
            return True


def tokens(settings: Settings) -> Tokens:
    """Return the token maker of the installation (DIGEST_SECRET_KEY)."""
    from digest.send.tokens import Tokens

    return Tokens(settings.secret("The public pages need a secret key:"))


def categories(settings: Settings) -> list[tuple[str, str]]:
    """Return the declared categories as (slug, name), for the forms' checkboxes."""
    return [(c.slug, c.name) for c in load(settings).publication.categories]


def _chosen(settings: Settings, given: Collection[str]) -> frozenset[str] | None:
    declared = {slug for slug, _ in categories(settings)}
    chosen = frozenset(given) & declared
    return chosen or None  # nothing ticked: every category


def sign_up(
    settings: Settings,
    form: dict[str, Any],
    client: str,
    now: datetime,
    limiter: Limiter,
) -> Outcome:
    """Take a sign-up: a new address is pending; a confirmation link is mailed either way.

    `form`: email, name, categories (slugs), honeypot. Raises ValueError naming a bad field.
    """
    from digest.send import store
    from digest.send.subscribers import address

    email = address(str(form.get("email", "")).strip())
    name = " ".join(str(form.get("name", "")).split())[:200] or None
    chosen = _chosen(settings, form.get("categories", ()))
    if form.get("honeypot"):
        return Outcome.IGNORED
    if not limiter.allow(f"client {client}", now, limiter.per_client, limiter.client_window):
        return Outcome.TOO_MANY
    if not limiter.allow(email.lower(), now, limiter.per_address, limiter.address_window):
        return Outcome.TOO_MANY
    with open_store(settings) as kept:
        via = f"sign-up form, from {client}"
        kept.change(lambda rows: store.sign_up(rows, email, name, chosen, now, via), now)
    payload = {"e": email, "n": name, "c": sorted(chosen) if chosen else None}
    link = f"{_public(settings)}/confirm/{tokens(settings).make('confirm', payload, now)}"
    _mail(settings, email, link, now)
    return Outcome.MAILED


def _public(settings: Settings) -> str:
    if settings.public_url is None:
        raise DigestError("DIGEST_PUBLIC_URL is not set: the public pages have no address")
    return settings.public_url.rstrip("/")


def _mail(settings: Settings, email: str, link: str, now: datetime) -> None:
    """Send the confirmation link through the digest's own transport."""
    from digest.mail.message import address, header_safe
    from digest.send.transport import SendError, choose

    catalogue = load(settings)
    newsletter = catalogue.mailing()
    sender = address(newsletter.sender, "sender")
    title = catalogue.publication.title
    message = EmailMessage()
    message["From"] = sender
    message["To"] = header_safe(email, "the address")
    message["Subject"] = header_safe(f"Confirm your subscription to {title}", "the subject")
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("confirm", domain=newsletter.sender.address.split("@")[-1])
    message.set_content(
        f"Someone, probably you, asked to receive {title} by email at this address.\n\n"
        f"To confirm, open this link and press the button (it works for 48 hours):\n\n"
        f"{link}\n\nIf it was not you, ignore this message: nothing will be sent.\n"
    )
    transport = choose(settings.smtp_url, settings.smtp_password, "confirm", outbox=settings.outbox)
    connection = transport.open()
    try:
        connection.send(message, newsletter.sender.address, email)
    except SendError as exc:
        raise DigestError(f"the confirmation mail to {email} could not be sent: {exc}") from exc
    finally:
        connection.close()


@dataclass(frozen=True, slots=True)
class Pending:
    """What a confirmation link asks for."""

    email: str
    name: str | None
    categories: frozenset[str] | None


def pending(settings: Settings, token: str, now: datetime) -> Pending | None:
    """Return what a confirmation link asks for; None for a link forged, mangled or expired."""
    from digest.send.tokens import CONFIRM, CONFIRM_FOR

    payload = tokens(settings).read(CONFIRM, token, now, CONFIRM_FOR)
    if payload is None or not isinstance(payload.get("e"), str):
        return None
    chosen = payload.get("c")
    return Pending(payload["e"], payload.get("n"), frozenset(chosen) if chosen else None)


def confirm(settings: Settings, token: str, client: str, now: datetime) -> str | None:
    """Confirm the sign-up a link names; return the person's preferences token, or None if the
    link is not genuine (nothing recorded then)."""
    from digest.send import store

    asked = pending(settings, token, now)
    if asked is None:
        return None
    via = f"confirmation link, from {client}"
    with open_store(settings) as kept:
        kept.change(
            lambda rows: store.confirm(rows, asked.email, asked.name, asked.categories, now, via),
            now,
        )
    return preferences_token(settings, asked.email, now)


def preferences_token(settings: Settings, email: str, now: datetime) -> str:
    """Return the token of a person's preferences link (it does not expire)."""
    from digest.send.tokens import PREFERENCES

    return tokens(settings).make(PREFERENCES, {"a": email.lower()}, now)


def preferences_links(settings: Settings, now: datetime) -> Callable[[str], str] | None:
    """Return the maker of each reader's preferences URL, for the digest's footer; None without
    DIGEST_PUBLIC_URL. Each URL carries a `preferences_token` made at `now`."""
    if settings.public_url is None:
        return None
    base = _public(settings)
    tokens(settings)  # a missing or short secret key stops the send before anything goes

    def link(email: str) -> str:
        return f"{base}/preferences/{preferences_token(settings, email, now)}"

    return link


def preferences(settings: Settings, token: str, now: datetime) -> Subscription | None:
    """Return the row a preferences link names; None for a link that is not genuine."""
    from digest.send.tokens import PREFERENCES

    payload = tokens(settings).read(PREFERENCES, token, now)
    if payload is None or not isinstance(payload.get("a"), str):
        return None
    with open_store(settings) as kept:
        return kept.get(payload["a"])


def change(
    settings: Settings, token: str, form: dict[str, Any], now: datetime
) -> Subscription | None:
    """Apply a person's choice from their preferences page; None for a link not genuine.

    `form`: action ("categories", "pause", "resume", "unsubscribe", "resubscribe"), categories,
    months. Raises ValueError naming a bad field.
    """
    from digest.send import store

    row = preferences(settings, token, now)
    if row is None:
        return None
    action = form.get("action")
    actor = "subscriber"

    def decide(rows: dict[str, Subscription]) -> list[store.Change]:
        if action == "unsubscribe":
            return store.unsubscribe(rows, row.key, actor)
        if action == "resubscribe":
            if row.status in store.BOUNCE_ENDED:  # only staff, with a reason (store.resubscribe)
                raise ValueError(
                    f"action: mail to this address {row.status}; ask the digest's staff to put "
                    "it back on the list"
                )
            return store.resubscribe(rows, row.key, actor)
        if action == "resume":
            return store.choose(rows, row.key, actor, resume=True)
        if action == "pause":
            months = int(form["months"]) if str(form.get("months", "")).isdigit() else 0
            if not 1 <= months <= 12:
                raise ValueError("months: choose a pause of 1 to 12 months")
            return store.choose(rows, row.key, actor, paused_until=now + months * MONTH)
        if action == "categories":
            chosen = _chosen(settings, form.get("categories", ()))
            return store.choose(rows, row.key, actor, categories=chosen, every=chosen is None)
        raise ValueError("action: choose what to change")

    with open_store(settings) as kept:
        kept.change(decide, now)
        return kept.get(row.key)
