"""The subscriber store: imports never override a person's choice, and every row has its history."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.send import store
from digest.send.ledger import Ledger
from digest.send.store import Source, Store, SubscriberStatus, Subscription
from digest.send.subscribers import Subscriber, SubscriberList

NOW = datetime(2025, 12, 1, 9, 0, tzinfo=UTC)
FILE = "subscribers.csv"


@pytest.fixture
def kept(open_ledger: Callable[..., Ledger]) -> Iterator[Store]:
    """A store in a new ledger, on each engine."""
    with open_ledger() as ledger:
        yield Store(ledger)


def directory(*rows: tuple[str, str | None, frozenset[str] | None]) -> SubscriberList:
    """Return a directory list of (email, name, categories)."""
    return SubscriberList(
        tuple(Subscriber(email, name, chosen, line) for line, (email, name, chosen) in
              enumerate(rows, 2))
    )  # fmt: skip


def imported(kept: Store, listed: SubscriberList, now: datetime = NOW) -> store.ImportPlan:
    """Import `listed` into `kept`; return the plan it applied."""
    plans: list[store.ImportPlan] = []

    def decide(rows: dict[str, Subscription]) -> list[store.Change]:
        plans.append(store.import_directory(rows, listed, FILE, now))
        return list(plans[-1].changes)

    kept.change(decide, now)
    return plans[-1]


def assert_explained(kept: Store) -> None:
    """Every row must be what its history says."""
    for key, row in kept.rows().items():
        assert store.replay(key, kept.history(key)) == row, key


def test_import_adds_then_changes_nothing_the_second_time(kept: Store) -> None:
    """Importing the same directory twice must add everyone once and then report nothing."""
    listed = directory(("Chan@example.org", "Chan", None), ("lee@example.org", None, {"visit"}))

    first = imported(kept, listed)
    second = imported(kept, listed)

    assert [c.after.key for c in first.of("added")] == ["chan@example.org", "lee@example.org"]
    assert (second.nothing, second.unchanged) == (True, 2)
    rows = kept.rows()
    assert rows["chan@example.org"].email == "Chan@example.org"
    assert rows["lee@example.org"].categories == {"visit"}
    assert all(row.in_directory and row.status == "active" for row in rows.values())
    assert_explained(kept)


def test_removed_line_ends_only_the_directory_membership(kept: Store) -> None:
    """Taking a line out of the CSV must end that address's membership and change nobody else."""
    imported(kept, directory(("a@example.org", "A", None), ("b@example.org", "B", None)))
    before = kept.rows()

    plan = imported(kept, directory(("a@example.org", "A", None)))

    assert [(c.action, c.after.key) for c in plan.changes] == [("ended", "b@example.org")]
    after = kept.rows()
    assert after["a@example.org"] == before["a@example.org"]
    assert after["b@example.org"].in_directory is False
    assert after["b@example.org"].status == "active"  # only the membership ended
    assert not after["b@example.org"].receives(NOW)  # nobody else asked for it
    assert_explained(kept)


def test_unsubscribed_address_in_the_csv_stays_unsubscribed_and_is_reported(kept: Store) -> None:
    """Someone who unsubscribed must not be put back on the list by the next directory import."""
    listed = directory(("a@example.org", "A", None))
    imported(kept, listed)
    kept.change(lambda rows: store.unsubscribe(rows, "A@example.org", "one-click"), NOW)

    plan = imported(kept, listed)

    assert plan.nothing
    assert [row.key for row in plan.kept] == ["a@example.org"]
    assert kept.rows()["a@example.org"].status == "unsubscribed"
    assert [(e.actor, e.action) for e in kept.history("a@example.org")] == [
        ("import:subscribers.csv", "added"),
        ("one-click", "unsubscribed"),
    ]


def test_person_who_signed_up_keeps_the_digest_after_leaving_the_directory(kept: Store) -> None:
    """A faculty member who subscribed themselves must not lose the digest when they leave."""
    imported(kept, directory(("a@example.org", "A", None)))
    kept.change(
        lambda rows: store.confirm(rows, "a@example.org", None, {"visit"}, NOW, "form"), NOW
    )

    imported(kept, directory())

    row = kept.rows()["a@example.org"]
    assert (row.source, row.in_directory, row.categories) == (Source.SIGNUP, False, {"visit"})
    assert row.receives(NOW)
    assert row.confirmed_at == "2025-12-01T09:00:00+00:00"


def test_pause_holds_the_digest_until_it_ends(kept: Store) -> None:
    """A paused reader gets nothing until the pause is over, then the digest again."""
    imported(kept, directory(("a@example.org", "A", None)))
    until = NOW + timedelta(days=60)
    kept.change(lambda rows: store.choose(rows, "a@example.org", "subscriber",
                                          paused_until=until), NOW)  # fmt: skip

    row = kept.rows()["a@example.org"]
    assert not row.receives(NOW)
    assert row.receives(until)
    assert store.readers(kept.rows(), NOW) == []


def test_staff_add_of_an_unsubscribed_address_is_refused(kept: Store) -> None:
    """Staff must not be able to override someone's unsubscribe with a plain `add`."""
    kept.change(lambda rows: store.unsubscribe(rows, "a@example.org", "one-click"), NOW)
    with pytest.raises(store.StoreError) as raised:
        store.add(kept.rows(), "a@example.org", None, None, "ada", NOW)
    assert str(raised.value) == (
        "a@example.org is unsubscribed since 2025-12-01T09:00:00+00:00; only they can subscribe "
        "again (from a digest's preferences link, or the sign-up form)"
    )


def test_suppressions_of_an_older_ledger_become_unsubscribed_rows(tmp_path: Path) -> None:
    """Whoever unsubscribed with one click before the store existed must stay unsubscribed."""
    path = tmp_path / "state.sqlite3"
    Ledger(path).close()
    db = sqlite3.connect(path)
    with db:  # a version-2 ledger: the store's tables not made yet, one suppression
        for table in ("subscriber_events", "subscribers"):
            db.execute(f"DROP TABLE {table}")
        db.execute("CREATE TABLE suppressions (address TEXT PRIMARY KEY, at TEXT NOT NULL, "
                   "source TEXT NOT NULL)")  # fmt: skip
        db.execute("INSERT INTO suppressions VALUES ('gone@example.org', ?, 'one-click')",
                   ("2025-10-01T00:00:00+00:00",))  # fmt: skip
        db.execute("PRAGMA user_version = 2")
    db.close()

    with Ledger(path) as ledger:
        kept = Store(ledger)
        row = kept.rows()["gone@example.org"]
        assert (row.status, row.in_directory) == ("unsubscribed", False)
        assert ledger.suppressed() == {"gone@example.org"}
        assert_explained(kept)
        plan = imported(kept, directory(("Gone@example.org", "Gone", None)))
        assert [r.key for r in plan.kept] == ["gone@example.org"]
        assert kept.rows()["gone@example.org"].status == "unsubscribed"


# -- the property: no import undoes what a person chose ------------------------------------------

ADDRESSES = [f"p{n}@example.org" for n in range(5)]
CATEGORIES = st.none() | st.frozensets(st.sampled_from(["visit", "recognition", "engagement"]),
                                        min_size=1)  # fmt: skip
DIRECTORY = st.lists(
    st.tuples(st.sampled_from(ADDRESSES), st.sampled_from([None, "A", "B"]), CATEGORIES),
    unique_by=lambda row: row[0],
    max_size=5,
).map(lambda rows: directory(*rows))
STEP = st.one_of(
    st.tuples(st.just("import"), DIRECTORY),
    st.tuples(st.just("sign up"), st.sampled_from(ADDRESSES), CATEGORIES),
    st.tuples(st.just("confirm"), st.sampled_from(ADDRESSES), CATEGORIES),
    st.tuples(st.just("choose"), st.sampled_from(ADDRESSES), CATEGORIES),
    st.tuples(st.just("pause"), st.sampled_from(ADDRESSES), st.integers(1, 12)),
    st.tuples(st.just("unsubscribe"), st.sampled_from(ADDRESSES)),
    st.tuples(st.just("resubscribe"), st.sampled_from(ADDRESSES)),
)


def person(step: tuple[object, ...], rows: dict[str, Subscription]) -> list[store.Change]:
    """Return the changes of one of a person's own steps (nothing for an unknown address)."""
    kind, address, *rest = step
    assert isinstance(address, str)
    if kind == "sign up":
        return store.sign_up(rows, address, None, rest[0], NOW, "form")  # type: ignore[arg-type]
    if kind == "confirm":
        return store.confirm(rows, address, None, rest[0], NOW, "form")  # type: ignore[arg-type]
    if address not in rows:
        return []
    if kind == "choose":
        chosen = rest[0]
        return store.choose(rows, address, "subscriber", categories=chosen,  # type: ignore[arg-type]
                            every=chosen is None)  # fmt: skip
    if kind == "pause":
        until = NOW + timedelta(days=30 * rest[0])  # type: ignore[operator]
        return store.choose(rows, address, "subscriber", paused_until=until)
    if kind == "unsubscribe":
        return store.unsubscribe(rows, address, "subscriber")
    return store.resubscribe(rows, address, "subscriber")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, max_size=14))
def test_no_import_reactivates_or_overrides_a_persons_choice(
    steps: list[tuple[object, ...]],
) -> None:
    """Whatever the order of imports and people's own changes, an import must never bring back an
    unsubscribed address, change categories a person chose, or lift a pause."""
    with Ledger.scratch() as ledger:
        kept = Store(ledger)
        for step in steps:
            before = kept.rows()
            if step[0] == "import":
                listed = step[1]
                assert isinstance(listed, SubscriberList)
                imported(kept, listed)
                after = kept.rows()
                for key, was in before.items():
                    now = after[key]
                    if was.status in store.ENDED:
                        assert now.status == was.status, key
                    if was.own_categories:
                        assert (now.categories, now.own_categories) == (was.categories, True)
                    assert now.paused_until == was.paused_until
                    assert now.source == was.source
                    assert now.in_directory == any(s.key == key for s in listed.subscribers)
            else:
                kept.change(lambda rows, step=step: person(step, rows), NOW)
        assert_explained(kept)
        assert {r.key for r in kept.rows().values() if r.status in store.ENDED} == (
            ledger.suppressed()
        )


def test_status_values_are_the_databases() -> None:
    """The statuses people read in `digest subscribers list` are the ones the database holds."""
    assert [str(s) for s in SubscriberStatus] == [
        "pending", "active", "unsubscribed", "bounced", "complained",
    ]  # fmt: skip


FULL = Subscription(
    "full@example.org", "Full@example.org", "Full Name", SubscriberStatus.PENDING,
    frozenset({"visit", "recognition"}), True, Source.SIGNUP, True, "2026-01-01T00:00:00+00:00",
    "2025-11-01T08:00:00+00:00", "form", "2025-11-01T08:05:00+00:00", "link",
)  # fmt: skip
CHANGED = Subscription(
    "full@example.org", "FULL@example.org", "Other Name", SubscriberStatus.ACTIVE,
    frozenset({"engagement"}), False, Source.STAFF, False, None,
    "2025-11-02T08:00:00+00:00", "added by staff", None, None,
)  # fmt: skip


def test_every_field_of_a_row_is_written_read_back_and_in_its_history(kept: Store) -> None:
    """A row added and then changed in every field must read back exactly, and its history must
    rebuild it: otherwise a subscriber's name, status or categories would be lost or swapped."""
    later = NOW + timedelta(hours=1)

    kept.change(lambda rows: [store.Change(None, FULL, "added", "staff:ann")], NOW)
    first = kept.rows()["full@example.org"]
    kept.change(lambda rows: [store.Change(rows[FULL.key], CHANGED, "chose", "staff:ann")], later)
    second = kept.rows()["full@example.org"]

    assert first == replace(FULL, updated_at=store.stamp(NOW))
    assert second == replace(CHANGED, updated_at=store.stamp(later))
    added, chose = kept.history(FULL.key)
    assert added.changes["categories"] == [None, "recognition;visit"]
    assert chose.changes["status"] == ["pending", "active"]
    assert len(chose.changes) == 12  # every field but the key and the time
    assert_explained(kept)
