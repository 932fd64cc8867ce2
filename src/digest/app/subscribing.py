"""The use cases of the subscriber store: import the directory, list, add, remove, export.

`directory` is what every send, plan and dry run calls first: the catalogue's `subscribers.csv`
imported as the directory (or, for a look that writes nothing, as it would be), and the readers
taken from the store. See `digest.app.publishing` for the conventions, `digest.send.store` for the
rules.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from digest.app import wording
from digest.app.publishing import Warn, load
from digest.app.settings import Settings
from digest.errors import DigestError

if TYPE_CHECKING:
    from digest.publish.catalogue import Catalogue
    from digest.send.ledger import Ledger
    from digest.send.store import Bounce, Change, Event, ImportPlan, Store, Subscription
    from digest.send.subscribers import SubscriberList

OnBusy = Callable[[str, float], None]

# What `list --format csv` writes, and the first columns of `export`.
LIST_COLUMNS = ("email", "name", "status", "categories", "source", "directory")
EXPORT_COLUMNS = (
    *LIST_COLUMNS,
    "paused_until",
    "subscribed_at",
    "subscribed_via",
    "confirmed_at",
    "confirmed_via",
    "updated_at",
)


# -- the directory import ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Imported:
    """What an import did (or, in a dry run, would do)."""

    plan: ImportPlan
    applied: bool


def import_file(settings: Settings, path: Path, now: datetime, *, dry_run: bool) -> Imported:
    """Import the directory CSV at `path`: every row checked first, nothing half-applied."""
    from digest.send import subscribers

    catalogue = load(settings)
    listed = subscribers.load(path, _declared(catalogue), str(path))
    plan = _import(settings, listed, path.name, now, write=not dry_run)
    return Imported(plan, not dry_run)


def _import(
    settings: Settings, listed: SubscriberList, file: str, now: datetime, *, write: bool,
    on_busy: OnBusy | None = None,
) -> ImportPlan:  # fmt: skip
    from digest.send import store

    if not write:
        rows = _peek(settings)
        return store.import_directory(rows, listed, file, now)
    planned: list[ImportPlan] = []

    def decide(rows: dict[str, Subscription]) -> list[Change]:
        planned.append(store.import_directory(rows, listed, file, now))
        return list(planned[-1].changes)

    with open_store(settings, on_busy) as kept:
        kept.change(decide, now)
    return planned[-1]


def directory(
    settings: Settings, catalogue: Catalogue, listed: SubscriberList, now: datetime, *,
    write: bool, warn: Warn, on_busy: OnBusy | None = None,
) -> SubscriberList:  # fmt: skip
    """Import the catalogue's list as the directory; return who a send enrolled now reaches.

    `write` False changes nothing (a dry run, a plan to confirm): the import is worked out,
    silently, and the readers are those it would leave. What a written import changed is told to
    `warn`, beside the list's other notices, so what a send prints on stdout stays as it was.
    """
    from digest.send import store
    from digest.send.subscribers import SubscriberList

    name = Path(catalogue.newsletter.subscribers).name if catalogue.newsletter else "list"
    plan = _import(settings, listed, name, now, write=write, on_busy=on_busy)
    if write and not plan.nothing:
        warn(import_summary(plan, applied=True))
    first = [person.key for person in listed.subscribers]
    chosen = store.readers(plan.after, now, first)
    return SubscriberList(tuple(chosen), listed.duplicates, listed.invalid)


def import_summary(plan: ImportPlan, *, applied: bool) -> str:
    """Return the one line that sums an import up."""
    kept = f"; {len(plan.kept)} kept as they chose (unsubscribed, bounced or complained)"
    kept = kept if plan.kept else ""
    if plan.nothing:
        same = wording.plural(plan.unchanged, "address")
        return f"{plan.file}: nothing to change ({same} already as the file says){kept}."
    verb = "imported" if applied else "would import (nothing imported: a dry run)"
    added, updated, ended = (len(plan.of(kind)) for kind in ("added", "updated", "ended"))
    return (
        f"{plan.file}: {verb}: {added} added, {updated} updated, {ended} ended (no longer in "
        f"the directory){kept}."
    )


# -- the list ------------------------------------------------------------------------------------


def subscriptions(settings: Settings, status: str | None = None) -> list[Subscription]:
    """Return every row of the store (or those with `status`), by address."""
    rows = _peek(settings)
    return [row for row in rows.values() if status is None or row.status == status]


def history(settings: Settings, address: str) -> list[Event]:
    """Return the history of one address, oldest first."""
    with open_store(settings) as kept:
        return kept.history(address)


def add(
    settings: Settings,
    email: str,
    name: str | None,
    categories: Collection[str] | None,
    staff: str,
    now: datetime,
) -> Subscription | None:
    """Add an address, active, as staff; return its row, or None if it was on the list already.

    An address its owner took off the list is refused: only they can come back.
    """
    from digest.send import store
    from digest.send.subscribers import address as check_address

    checked = _address(email, check_address)
    chosen = _chosen(settings, categories)
    with open_store(settings) as kept:
        done = kept.change(lambda rows: store.add(rows, checked, name, chosen, staff, now), now)
        return kept.get(checked) if done else None


def remove(settings: Settings, email: str, staff: str, now: datetime) -> Subscription | None:
    """Unsubscribe an address as staff: its row and history stay, so no import brings it back.

    Return the row, or None when it was off the list already.
    """
    from digest.send import store

    with open_store(settings) as kept:
        if kept.get(email) is None:
            raise store.StoreError(
                f"{email.strip()} is not in the subscriber store; "
                "`digest subscribers list` shows who is"
            )
        done = kept.change(lambda rows: store.unsubscribe(rows, email, f"staff:{staff}"), now)
        return kept.get(email) if done else None


@dataclass(frozen=True, slots=True)
class Overview:
    """The list at a glance for staff: counts by status and category, and the rows asked for."""

    by_status: dict[str, int]
    by_category: dict[str, int]  # rows receiving each category ("" for every category)
    rows: tuple[Subscription, ...]


def overview(
    settings: Settings,
    *,
    query: str = "",
    status: str = "",
    category: str = "",
    source: str = "",
) -> Overview:
    """Return the counts and the rows matching a search (address or name) and the filters."""
    from digest.send.store import SubscriberStatus

    every = list(_peek(settings).values())
    by_status = {str(s): sum(1 for row in every if row.status == s) for s in SubscriberStatus}
    by_category: dict[str, int] = {}
    for row in every:
        for slug in sorted(row.categories) if row.categories is not None else [""]:
            by_category[slug] = by_category.get(slug, 0) + 1
    needle = query.strip().lower()
    chosen = tuple(
        row
        for row in every
        if (not needle or needle in row.key or needle in (row.name or "").lower())
        and (not status or row.status == status)
        and (not source or row.source == source)
        and (not category or row.categories is None or category in row.categories)
    )
    return Overview(by_status, dict(sorted(by_category.items())), chosen)


def subscriber(settings: Settings, address: str) -> tuple[Subscription, list[Event]] | None:
    """Return one address's row and its history, or None if the store does not know it."""
    rows = _peek(settings)
    row = rows.get(address.strip().lower())
    if row is None:
        return None
    with open_store(settings) as kept:
        return row, kept.history(row.key)


def recent_bounces(settings: Settings, limit: int = 100) -> list[Bounce]:
    """Return the newest bounces and complaints `digest bounces` recorded, newest first."""
    if not settings.has_state:
        return []
    with open_store(settings) as kept:
        return kept.recent_bounces(limit)


def bounces_of(settings: Settings, address: str) -> list[Bounce]:
    """Return every bounce and complaint recorded for one address, oldest first."""
    if not settings.has_state:
        return []
    with open_store(settings) as kept:
        return kept.bounces_of(address)


def resubscribe(
    settings: Settings, email: str, staff: str, reason: str, now: datetime
) -> Subscription | None:
    """Put an address back on the list as staff, overriding the person's choice: only with a
    reason, which its history keeps. Return the row, or None if it was on the list already."""
    from digest.send import store

    why = " ".join(reason.split())
    if not why:
        raise store.StoreError(
            "a reason is needed to subscribe someone again: it overrides their own choice, and "
            "their history keeps why (say, 'asked by phone on 3 December')"
        )

    def decide(rows: dict[str, Subscription]) -> list[Change]:
        return store.resubscribe(rows, email, f"staff:{staff}", why)

    with open_store(settings) as kept:
        done = kept.change(decide, now)
        return kept.get(email) if done else None


def import_text(
    settings: Settings, text: str, name: str, now: datetime, *, dry_run: bool
) -> Imported:
    """Import directory CSV text (an upload) as `import_file` imports a file."""
    from digest.send import subscribers

    catalogue = load(settings)
    listed = subscribers.parse(text, _declared(catalogue), name)
    return Imported(_import(settings, listed, name, now, write=not dry_run), not dry_run)


def export(settings: Settings, columns: tuple[str, ...] = EXPORT_COLUMNS) -> str:
    """Return every row of the store as CSV text, with a header row."""
    return as_csv(subscriptions(settings), columns)


def as_csv(rows: list[Subscription], columns: tuple[str, ...] = LIST_COLUMNS) -> str:
    """Return rows as CSV text, header first; categories joined by ';', empty for all."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row, column) for column in columns])
    return out.getvalue()


def cell(row: Subscription, column: str) -> str:
    """Return one column of a row as a list shows it."""
    if column == "email":
        return row.email
    if column == "categories":
        return ";".join(sorted(row.categories)) if row.categories is not None else ""
    if column == "directory":
        return "yes" if row.in_directory else "no"
    value = getattr(row, column)
    return "" if value is None else str(value)


# -- helpers -----------------------------------------------------------------------------------


def _declared(catalogue: Catalogue) -> list[str]:
    return [category.slug for category in catalogue.publication.categories]


def _chosen(settings: Settings, categories: Collection[str] | None) -> frozenset[str] | None:
    if categories is None:
        return None
    declared = _declared(load(settings))
    unknown = sorted(set(categories) - set(declared))
    if unknown:
        raise DigestError(
            f"--categories: {', '.join(map(repr, unknown))} not declared in the catalogue; "
            f"declared: {', '.join(sorted(declared))}"
        )
    return frozenset(categories) or None


def _address(email: str, check: Callable[[str], str]) -> str:
    try:
        return check(email.strip())
    except ValueError as exc:
        raise DigestError(f"{exc}; give the address as name@example.org") from exc


def _peek(settings: Settings) -> dict[str, Subscription]:
    """Return the store's rows; an absent ledger is an empty store (looking creates nothing)."""
    if not settings.has_state:
        return {}
    with open_store(settings) as kept:
        return kept.rows()


class open_store:
    """Open the settings' ledger and its store for a `with` block, and close it after."""

    def __init__(self, settings: Settings, on_busy: OnBusy | None = None) -> None:
        self.ledger: Ledger = settings.ledger(busy_timeout=settings.ledger_wait, on_busy=on_busy)

    def __enter__(self) -> Store:
        from digest.send.store import Store

        return Store(self.ledger)

    def __exit__(self, *exc: object) -> None:
        self.ledger.close()
