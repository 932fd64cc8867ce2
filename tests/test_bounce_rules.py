"""Bounce rules: hard bounces and complaints end a subscription at once, soft ones after a few."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.send import store
from digest.send.ledger import SCHEMA_VERSION, Ledger
from digest.send.store import Bounce, BounceKind, BounceRules, Store, StoreError, SubscriberStatus
from digest.send.subscribers import Subscriber, SubscriberList

NOW = datetime(2025, 12, 1, 9, 0, tzinfo=UTC)
RULES = BounceRules(soft_limit=3, soft_days=30)
NOV = "2025-11"


@pytest.fixture
def kept(open_ledger: Callable[..., Ledger]) -> Iterator[Store]:
    """A store in a new ledger (SQLite, then PostgreSQL) with two active subscribers from the
    directory."""
    with open_ledger() as ledger:
        kept = Store(ledger)
        listed = SubscriberList(
            (
                Subscriber("Chan@example.org", "Chan", None, 2),
                Subscriber("lee@example.org", None, None, 3),
            )
        )
        kept.change(
            lambda rows: list(store.import_directory(rows, listed, "s.csv", NOW).changes), NOW
        )
        yield kept


def report(
    kind: BounceKind, n: int = 1, address: str = "chan@example.org", month: str | None = NOV
) -> Bounce:
    """Return a bounce of `address` with report id number `n`."""
    return Bounce(
        f"report-{n}@mx.example.net",
        address,
        month,
        kind,
        "5.1.1" if kind is BounceKind.HARD else "4.2.2",
        "mailbox",
    )


def status(kept: Store, address: str = "chan@example.org") -> SubscriberStatus:
    """Return the subscriber's status."""
    row = kept.get(address)
    assert row is not None
    return row.status


def test_a_hard_bounce_ends_the_subscription_at_once_with_its_report_in_the_history(
    kept: Store,
) -> None:
    """A dead mailbox must get no further digest after its first hard bounce, and staff see why."""
    done = kept.record_bounce(report(BounceKind.HARD), RULES, NOW)
    assert done.new
    assert [c.after.status for c in done.changes] == [SubscriberStatus.BOUNCED]
    assert status(kept) is SubscriberStatus.BOUNCED
    assert "chan@example.org" in kept.suppressed()
    last = kept.history("chan@example.org")[-1]
    assert last.actor == "bounce:report-1@mx.example.net"
    assert last.action == "bounced: 5.1.1 (mailbox)"
    assert last.changes["status"] == ["active", "bounced"]
    assert status(kept, "lee@example.org") is SubscriberStatus.ACTIVE


def test_a_complaint_makes_the_subscriber_complained_at_once(kept: Store) -> None:
    """Someone who marked the digest as spam must never be mailed again."""
    kept.record_bounce(report(BounceKind.COMPLAINT), RULES, NOW)
    assert status(kept) is SubscriberStatus.COMPLAINED


def test_the_same_report_twice_changes_nothing(kept: Store) -> None:
    """Reading the same mailbox twice must not count a bounce twice nor touch the history."""
    kept.record_bounce(report(BounceKind.SOFT), RULES, NOW)
    history = kept.history("chan@example.org")
    again = kept.record_bounce(report(BounceKind.SOFT), RULES, NOW + timedelta(minutes=15))
    assert (again.new, again.changes) == (False, ())
    assert len(kept.bounces_of("Chan@Example.org")) == 1
    assert kept.history("chan@example.org") == history


def test_soft_bounces_end_it_only_at_the_limit_within_the_window(kept: Store) -> None:
    """A full mailbox must be forgiven twice, and ended on its third soft bounce within 30 days."""
    kept.record_bounce(report(BounceKind.SOFT, 1), RULES, NOW)
    kept.record_bounce(report(BounceKind.SOFT, 2), RULES, NOW + timedelta(days=10))
    assert status(kept) is SubscriberStatus.ACTIVE
    third = kept.record_bounce(report(BounceKind.SOFT, 3), RULES, NOW + timedelta(days=20))
    assert status(kept) is SubscriberStatus.BOUNCED
    assert third.changes[0].action == "bounced: 3 soft bounces in 30 days (mailbox)"


def test_soft_bounces_older_than_the_window_do_not_count(kept: Store) -> None:
    """Three soft bounces spread over three months must leave the subscriber on the list."""
    for n in range(3):
        kept.record_bounce(report(BounceKind.SOFT, n), RULES, NOW + timedelta(days=31 * n))
    assert status(kept) is SubscriberStatus.ACTIVE
    assert len(kept.bounces_of("chan@example.org")) == 3


def test_the_soft_limit_and_window_are_settings(kept: Store) -> None:
    """With soft_limit 1 a single soft bounce must end the subscription."""
    kept.record_bounce(report(BounceKind.SOFT), BounceRules(soft_limit=1, soft_days=1), NOW)
    assert status(kept) is SubscriberStatus.BOUNCED


def test_a_dry_run_plans_what_a_run_writes_and_writes_nothing(kept: Store) -> None:
    """`digest bounces --dry-run` must say what would change and leave the store as it was."""
    first = kept.plan_bounce(report(BounceKind.SOFT, 1), BounceRules(soft_limit=2), NOW)
    assert first.new
    assert first.changes == ()
    second = kept.plan_bounce(
        report(BounceKind.SOFT, 2), BounceRules(soft_limit=2), NOW, [first.bounce]
    )
    assert [c.after.status for c in second.changes] == [SubscriberStatus.BOUNCED]
    assert kept.bounces_of("chan@example.org") == []
    assert status(kept) is SubscriberStatus.ACTIVE
    kept.record_bounce(report(BounceKind.SOFT, 1), RULES, NOW)
    assert not kept.plan_bounce(report(BounceKind.SOFT, 1), RULES, NOW).new


def test_an_unknown_address_gets_a_bounced_row_no_import_undoes(kept: Store) -> None:
    """A bounce for an address not in the store must keep a later import from adding it."""
    kept.record_bounce(report(BounceKind.HARD, address="gone@example.org"), RULES, NOW)
    assert status(kept, "gone@example.org") is SubscriberStatus.BOUNCED
    listed = SubscriberList((Subscriber("gone@example.org", "Gone", None, 2),))
    kept.change(lambda rows: list(store.import_directory(rows, listed, "s.csv", NOW).changes), NOW)
    assert status(kept, "gone@example.org") is SubscriberStatus.BOUNCED


@pytest.mark.parametrize("kind", [BounceKind.HARD, BounceKind.COMPLAINT])
def test_the_directory_import_never_undoes_a_bounce_or_complaint(
    kept: Store, kind: BounceKind
) -> None:
    """Re-importing the directory that lists a bounced or complained address must keep it off."""
    kept.record_bounce(report(kind), RULES, NOW)
    ended = status(kept)
    listed = SubscriberList(
        (Subscriber("chan@example.org", "Chan Tai Man", frozenset({"visit"}), 2),)
    )
    plan = kept.change(
        lambda rows: list(store.import_directory(rows, listed, "s.csv", NOW).changes), NOW
    )
    assert status(kept) is ended
    assert all(
        change.after.status is ended for change in plan if change.after.key == "chan@example.org"
    )
    assert "chan@example.org" in kept.suppressed()


def test_a_bounced_row_comes_back_only_with_a_reason_kept_in_its_history(kept: Store) -> None:
    """Staff must give a reason to resubscribe a bounced address, and the history must keep it."""
    kept.record_bounce(report(BounceKind.HARD), RULES, NOW)
    with pytest.raises(StoreError, match="only staff can put it back on the list, with a reason"):
        kept.change(lambda rows: store.resubscribe(rows, "chan@example.org", "staff:ada"), NOW)
    with pytest.raises(StoreError, match="with a reason"):
        kept.change(
            lambda rows: store.resubscribe(rows, "chan@example.org", "staff:ada", "  "), NOW
        )
    assert status(kept) is SubscriberStatus.BOUNCED
    kept.change(
        lambda rows: store.resubscribe(rows, "chan@example.org", "staff:ada", "new mailbox"), NOW
    )
    assert status(kept) is SubscriberStatus.ACTIVE
    assert kept.history("chan@example.org")[-1].action == "resubscribed by staff: new mailbox"


def test_soft_bounces_before_a_resubscribe_are_forgiven(kept: Store) -> None:
    """A subscriber put back on the list must not be ended again by bounces from before."""
    rules = BounceRules(soft_limit=2, soft_days=30)
    kept.record_bounce(report(BounceKind.SOFT, 1), rules, NOW)
    kept.record_bounce(report(BounceKind.SOFT, 2), rules, NOW + timedelta(days=1))
    assert status(kept) is SubscriberStatus.BOUNCED
    later = NOW + timedelta(days=2)
    kept.change(
        lambda rows: store.resubscribe(rows, "chan@example.org", "staff:ada", "fixed"), later
    )
    kept.record_bounce(report(BounceKind.SOFT, 3), rules, later + timedelta(hours=1))
    assert status(kept) is SubscriberStatus.ACTIVE


def test_bounces_are_listed_newest_first_and_counted_per_month(kept: Store) -> None:
    """The console and `digest status` must see every bounce; a month counts each address once."""
    kept.record_bounce(report(BounceKind.SOFT, 1), RULES, NOW)
    kept.record_bounce(report(BounceKind.SOFT, 2), RULES, NOW + timedelta(hours=1))
    kept.record_bounce(report(BounceKind.COMPLAINT, 3, "lee@example.org"), RULES, NOW)
    kept.record_bounce(report(BounceKind.HARD, 4, "lee@example.org", month=None), RULES, NOW)
    assert [b.report_id for b in kept.recent_bounces(limit=3)] == [
        "report-4@mx.example.net",
        "report-3@mx.example.net",
        "report-2@mx.example.net",
    ]
    assert [b.kind for b in kept.bounces_of("lee@example.org")] == [
        BounceKind.COMPLAINT,
        BounceKind.HARD,
    ]
    assert kept.bounce_counts() == {
        NOV: {BounceKind.HARD: 0, BounceKind.SOFT: 1, BounceKind.COMPLAINT: 1}
    }


def test_every_store_row_still_matches_its_history_after_bounces(kept: Store) -> None:
    """The history must explain each status a bounce rule set."""
    kept.record_bounce(report(BounceKind.HARD), RULES, NOW)
    kept.record_bounce(report(BounceKind.HARD, 2, "new@example.org"), RULES, NOW)
    for key, row in kept.rows().items():
        assert store.replay(key, kept.history(key)) == row, key


def test_a_schema_4_ledger_gains_the_bounces_table(tmp_path: Path) -> None:
    """Opening a ledger from before bounces keeps its rows and starts an empty bounce record."""
    path = tmp_path / "state.sqlite3"
    with Ledger(path) as ledger:
        ledger.freeze(NOV, "hash", "Subject", 3)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE bounces")
    db.execute("PRAGMA user_version=4")
    db.commit()
    db.close()
    with Ledger(path) as ledger:
        assert ledger.frozen(NOV) is not None
        kept = Store(ledger)
        assert kept.recent_bounces() == []
        kept.record_bounce(report(BounceKind.HARD, address="x@example.org"), RULES, NOW)
        assert len(kept.bounces_of("x@example.org")) == 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    db.close()
