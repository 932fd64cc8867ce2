"""The delivery ledger and the send lock: what was sent to whom survives crashes and races."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from digest.errors import DeliveryError, LedgerBusyError
from digest.send.ledger import (
    SCHEMA_VERSION,
    Decided,
    Decision,
    Frozen,
    Ledger,
    Mark,
    Render,
    RunKind,
    SendLock,
    Status,
    parse_selection,
    selection_key,
)
from pgserver import PostgreSQL

NOV = "2025-11"
DEC = "2025-12"


@pytest.fixture
def ledger(open_ledger: Callable[..., Ledger]) -> Iterator[Ledger]:
    """A new ledger, on each engine (tests/conftest.py `database_url`)."""
    opened = open_ledger()
    yield opened
    opened.close()


def rows(*addresses: str) -> list[tuple[str, str, str | None, str]]:
    return [(a.lower(), a, f"Name of {a}", "*") for a in addresses]


def view(ledger: Ledger, month: str = NOV) -> list[tuple[str, str, int, int | None, str | None]]:
    return [
        (r.recipient, r.status, r.attempts, r.last_code, r.last_reply)
        for r in ledger.deliveries(month)
    ]


def test_statuses_move_as_documented(ledger: Ledger) -> None:
    """pending -> sending -> sent | failed | deferred, with attempts and the server's last word."""
    ledger.enrol(NOV, rows("a@example.org", "b@example.org", "c@example.org"))
    assert view(ledger) == [
        ("a@example.org", "pending", 0, None, None),
        ("b@example.org", "pending", 0, None, None),
        ("c@example.org", "pending", 0, None, None),
    ]

    ledger.record(NOV, [Mark("a@example.org", Status.SENDING, attempt=True)])
    assert view(ledger)[0] == ("a@example.org", "sending", 1, None, None)
    ledger.record(NOV, [Mark("a@example.org", Status.SENT, code=250, reply="accepted")])

    ledger.record(NOV, [Mark("b@example.org", Status.SENDING, attempt=True)])
    ledger.record(NOV, [Mark("b@example.org", Status.DEFERRED, code=451, reply="4.3.0 try later")])
    ledger.record(NOV, [Mark("b@example.org", Status.SENDING, attempt=True)])
    # While a retry is in flight the last reply is kept.
    assert view(ledger)[1] == ("b@example.org", "sending", 2, 451, "4.3.0 try later")
    ledger.record(NOV, [Mark("b@example.org", Status.SENT, code=250, reply="accepted")])

    ledger.record(NOV, [Mark("c@example.org", Status.SENDING, attempt=True)])
    ledger.record(NOV, [Mark("c@example.org", Status.FAILED, code=550, reply="5.1.1 no such user")])

    assert view(ledger) == [
        ("a@example.org", "sent", 1, 250, "accepted"),
        ("b@example.org", "sent", 2, 250, "accepted"),
        ("c@example.org", "failed", 1, 550, "5.1.1 no such user"),
    ]
    assert [r.recipient for r in ledger.deliveries(NOV, ("sent",))] == [
        "a@example.org",
        "b@example.org",
    ]
    assert [r.recipient for r in ledger.deliveries(NOV, ("failed", "deferred"))] == [
        "c@example.org"
    ]


def test_unknown_status_is_refused(ledger: Ledger) -> None:
    """A typo in a status can never be written: the database checks it."""
    ledger.enrol(NOV, rows("a@example.org"))
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        ledger.record(NOV, [Mark("a@example.org", "delivered")])
    assert view(ledger) == [("a@example.org", "pending", 0, None, None)]


def test_enrol_keeps_existing_rows(ledger: Ledger) -> None:
    """Enrolling again never resets someone already sent; newcomers join the end as pending."""
    ledger.enrol(NOV, rows("a@example.org", "b@example.org"))
    ledger.record(NOV, [Mark("a@example.org", Status.SENDING, attempt=True)])
    ledger.record(NOV, [Mark("a@example.org", Status.SENT, code=250, reply="accepted")])

    ledger.enrol(NOV, [("a@example.org", "a@example.org", "Renamed", "*"), *rows("c@example.org")])

    assert [(r.recipient, r.name, r.status) for r in ledger.deliveries(NOV)] == [
        ("a@example.org", "Name of a@example.org", "sent"),
        ("b@example.org", "Name of b@example.org", "pending"),
        ("c@example.org", "Name of c@example.org", "pending"),
    ]


def test_enrol_keeps_every_character_of_a_name_and_the_order(ledger: Ledger) -> None:
    """A name with a tab, a backslash or a line break reaches the ledger as written, in order."""
    names = ["Tab\there", "Back\\slash \\N", "Line\nbreak", "\\.", None, 'O\'Brien "Jo"']
    enrolled = [
        (f"p{n}@example.org", f"p{n}@example.org", name, "*") for n, name in enumerate(names)
    ]
    ledger.enrol(NOV, reversed(enrolled))
    assert [(r.recipient, r.name) for r in ledger.deliveries(NOV)] == [
        (recipient, name) for recipient, _, name, _ in reversed(enrolled)
    ]


def test_an_enrolment_goes_ahead_while_autovacuum_holds_the_table(
    postgresql: PostgreSQL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A send is not stopped by PostgreSQL analysing its ledger: the enrolment's ANALYZE waits."""
    caplog.set_level(logging.INFO, logger="digest.database")
    url = postgresql.database()
    with Ledger(tmp_path / "state.sqlite3", url=url) as ledger, psycopg.connect(url) as other:
        # The lock VACUUM and ANALYZE hold (autovacuum's too), kept until `other` closes.
        other.execute("LOCK TABLE deliveries IN SHARE UPDATE EXCLUSIVE MODE")
        ledger.enrol(NOV, rows("a@example.org", "b@example.org"))
        assert [r.recipient for r in ledger.deliveries(NOV)] == ["a@example.org", "b@example.org"]
    assert "ANALYZE deliveries skipped" in caplog.text


def test_months_are_kept_apart(ledger: Ledger) -> None:
    """November's deliveries say nothing about December's."""
    ledger.enrol(NOV, rows("a@example.org"))
    ledger.record(NOV, [Mark("a@example.org", Status.SENT, code=250, reply="accepted")])
    ledger.enrol(DEC, rows("a@example.org"))
    assert view(ledger, DEC) == [("a@example.org", "pending", 0, None, None)]


def test_freeze_and_renders_keep_the_first_version(ledger: Ledger) -> None:
    """Once sending began, the issue and its renderings are the ones every reader gets."""
    first = ledger.freeze(NOV, "hash-1", "Subject 1", 3)
    assert (first.content_hash, first.subject, first.items) == ("hash-1", "Subject 1", 3)
    later = ledger.freeze(NOV, "hash-2", "Subject 2", 4)
    assert later == first
    assert ledger.frozen(NOV) == first
    assert ledger.frozen(DEC) is None

    kept = ledger.keep_render(NOV, "*", Render("S", "<p>one</p>", "one"))
    assert ledger.keep_render(NOV, "*", Render("S", "<p>two</p>", "two")) == kept
    assert ledger.render(NOV, "*") == Render("S", "<p>one</p>", "one")
    assert ledger.render(NOV, '["research"]') is None


def fake_id(address: str, copy: int) -> str:
    return f"<{copy}.{address}>"


def copies(ledger: Ledger, month: str = NOV) -> list[tuple[str, int, str, str, int]]:
    return [(c.recipient, c.copy, c.message_id, c.status, c.attempts) for c in ledger.copies(month)]


def test_start_over_begins_a_new_copy_of_one_month_and_keeps_the_old(ledger: Ledger) -> None:
    """A resend must start a new copy of one month only and remember the old copy's Message-ID."""
    for month in (NOV, DEC):
        ledger.freeze(month, "hash", "Subject", 1)
        ledger.keep_render(month, "*", Render("S", "<p>x</p>", "x"))
        ledger.enrol(month, rows("a@example.org", "b@example.org", "c@example.org"))
        ledger.record(month, [Mark("a@example.org", Status.SENDING, attempt=True)])
        ledger.record(month, [Mark("a@example.org", Status.SENT, code=250, reply="accepted")])
        ledger.record(month, [Mark("b@example.org", Status.DEFERRED, True, 451, "later")])

    again = ledger.start_over(NOV, "hash-2", "Subject 2", 2, fake_id)

    assert (again.content_hash, again.subject, again.items, again.resends) == (
        "hash-2",
        "Subject 2",
        2,
        1,
    )
    assert ledger.frozen(NOV) == again
    assert (ledger.render(NOV, "*"), ledger.deliveries(NOV)) == (None, [])
    assert copies(ledger) == [
        ("a@example.org", 0, "<0.a@example.org>", "sent", 1),
        ("b@example.org", 0, "<0.b@example.org>", "deferred", 1),
    ]
    ledger.enrol(NOV, rows("a@example.org", "b@example.org", "c@example.org", "d@example.org"))
    assert [(r.recipient, r.status, r.copy) for r in ledger.deliveries(NOV)] == [
        ("a@example.org", "pending", 1),
        ("b@example.org", "pending", 1),
        ("c@example.org", "pending", 0),  # never tried: copy 0 reached nobody
        ("d@example.org", "pending", 0),
    ]
    # December is as it was.
    assert ledger.frozen(DEC) == Frozen("hash", "Subject", 1, ledger.frozen(DEC).frozen_at, 0)
    assert ledger.render(DEC, "*") is not None
    assert view(ledger, DEC)[0] == ("a@example.org", "sent", 1, 250, "accepted")
    assert copies(ledger, DEC) == []

    ledger.record(NOV, [Mark("a@example.org", Status.SENDING, attempt=True)])
    ledger.start_over(NOV, "hash-2", "Subject 2", 2, fake_id)
    ledger.enrol(NOV, rows("a@example.org"))
    assert [c[:3] for c in copies(ledger)] == [
        ("a@example.org", 0, "<0.a@example.org>"),
        ("a@example.org", 1, "<1.a@example.org>"),  # in flight when replaced: it may have arrived
        ("b@example.org", 0, "<0.b@example.org>"),
    ]
    assert ledger.deliveries(NOV)[0].copy == 2
    assert ledger.frozen(NOV).resends == 2


def test_start_over_of_a_month_never_sent_freezes_it(ledger: Ledger) -> None:
    """--resend of a month nobody has yet sends everyone their first copy."""
    frozen = ledger.start_over(NOV, "hash", "Subject", 3, fake_id)
    assert ledger.frozen(NOV) == frozen
    assert frozen.resends == 1
    ledger.enrol(NOV, rows("a@example.org"))
    assert (ledger.deliveries(NOV)[0].copy, ledger.copies(NOV)) == (0, [])


def test_every_status_and_decision_can_be_written_and_read_back(ledger: Ledger) -> None:
    """The database's checks and the code's states agree: no state the code uses is refused."""
    ledger.enrol(NOV, rows("a@example.org"))
    for status in Status:
        ledger.record(NOV, [Mark("a@example.org", status)])
        assert ledger.deliveries(NOV)[0].status is status
    for decision in Decision:
        ledger.record_decision("2025-12-01T01:00:00+00:00", NOV, decision, "why")
        assert ledger.last_decision() == Decided("2025-12-01T01:00:00+00:00", NOV, decision, "why")
    for kind in RunKind:
        ledger.start_run(NOV, "smtp://127.0.0.1:25", "a test", kind)
        assert ledger.runs(limit=1)[0].kind is kind


def test_rows_survive_reopening(open_ledger: Callable[..., Ledger]) -> None:
    """What a run recorded is there for the next run, in a new process."""
    first = open_ledger()
    first.enrol(NOV, rows("a@example.org"))
    first.record(NOV, [Mark("a@example.org", Status.SENDING, attempt=True)])
    first.close()
    second = open_ledger()
    try:
        assert view(second) == [("a@example.org", "sending", 1, None, None)]
    finally:
        second.close()


def test_months_counts_by_status(ledger: Ledger) -> None:
    """`digest status` shows each month, newest first, with how many are in each state."""
    ledger.enrol(NOV, rows("a@example.org", "b@example.org", "c@example.org", "d@example.org"))
    ledger.record(NOV, [Mark("a@example.org", Status.SENT, code=250, reply="accepted")])
    ledger.record(NOV, [Mark("b@example.org", Status.SENT, code=250, reply="accepted")])
    ledger.record(NOV, [Mark("c@example.org", Status.FAILED, code=550, reply="no such user")])
    ledger.enrol(DEC, rows("a@example.org"))
    ledger.enrol("2025-10", rows("a@example.org"))
    ledger.record("2025-10", [Mark("a@example.org", Status.DEFERRED, code=451, reply="later")])

    months = ledger.months()

    zero = dict.fromkeys(Status, 0)
    assert [(m.month, m.counts) for m in months] == [
        (DEC, {**zero, "pending": 1}),
        (NOV, {**zero, "pending": 1, "sent": 2, "failed": 1}),
        ("2025-10", {**zero, "deferred": 1}),
    ]
    assert all(m.first <= m.last for m in months)


def test_months_of_an_empty_ledger(ledger: Ledger) -> None:
    """A fresh ledger has nothing to report."""
    assert ledger.months() == []


def test_selection_keys_round_trip() -> None:
    """A reader's category choice is stored and read back exactly."""
    assert selection_key(None) == "*"
    assert selection_key(frozenset({"visit", "collaboration"})) == '["collaboration", "visit"]'
    for choice in (None, frozenset({"visit", "collaboration"}), frozenset({"a"})):
        assert parse_selection(selection_key(choice)) == choice


def test_ledger_from_a_newer_digest_is_refused(tmp_path: Path) -> None:
    """An older digest never writes into a state file whose format it does not know."""
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(DeliveryError) as raised:
        Ledger(path)
    assert str(raised.value) == f"{path}: written by a newer digest (schema 99); upgrade digest"


def test_file_that_is_not_a_ledger_is_refused(tmp_path: Path) -> None:
    """A --state path pointing at some other file is an error naming it, not a traceback."""
    path = tmp_path / "state.sqlite3"
    path.write_text("not a database\n" * 100)
    with pytest.raises(DeliveryError) as raised:
        Ledger(path)
    assert str(raised.value) == (f"{path}: cannot open the delivery ledger: file is not a database")


def test_ledger_whose_folder_cannot_be_made_is_refused(tmp_path: Path) -> None:
    """A --state path below a file is an error naming it, not a traceback."""
    (tmp_path / "taken").write_text("a file, not a folder")
    path = tmp_path / "taken" / "state.sqlite3"
    with pytest.raises(DeliveryError) as raised:
        Ledger(path)
    assert str(raised.value).startswith(f"{path}: cannot open the delivery ledger: ")


# -- the send lock -------------------------------------------------------------------------------


def test_second_sender_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    """Two sends of one month never interleave; the second says who holds the month."""
    state = tmp_path / "state.sqlite3"
    first = SendLock(state, NOV)
    first.acquire("digest send by alice")
    try:
        with pytest.raises(DeliveryError) as raised:
            SendLock(state, NOV).acquire("digest send by bob")
        message = str(raised.value)
        assert message.startswith("another send of 2025-11 is running (pid ")
        assert f"pid {os.getpid()} on " in message
        assert ", digest send by alice, since " in message
        assert message.endswith("); wait for it to finish, or stop it, then run this again")
        # Another month is not held.
        december = SendLock(state, DEC)
        december.acquire("digest send by bob")
        december.release()
    finally:
        first.release()

    second = SendLock(state, NOV)
    second.acquire("digest send by bob")
    second.release()


def test_lock_as_context_manager_releases(tmp_path: Path) -> None:
    """Leaving the `with` block lets the next sender in, even after an error."""
    state = tmp_path / "state.sqlite3"

    def crash() -> None:
        with SendLock(state, NOV) as lock:
            lock.acquire("first")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        crash()
    with SendLock(state, NOV) as again:
        again.acquire("second")


HOLD = """
import sys, time
from pathlib import Path
from digest.send.ledger import SendLock
SendLock(Path(sys.argv[1]), sys.argv[2]).acquire("digest send by cron")
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_of_a_killed_sender_is_free(tmp_path: Path) -> None:
    """A send killed with SIGKILL leaves no stale lock: the next run can start at once."""
    state = tmp_path / "state.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state), NOV], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(DeliveryError, match=rf"\(pid {holder.pid} on .*digest send by cron"):
            SendLock(state, NOV).acquire("digest send by alice")
    finally:
        holder.kill()  # SIGKILL: no chance to release anything
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()

    lock = SendLock(state, NOV)
    lock.acquire("digest send by alice")
    lock.release()


def test_lock_whose_folder_cannot_be_made_is_refused(tmp_path: Path) -> None:
    """A lock path below a file is an error naming it, not a traceback."""
    (tmp_path / "taken").write_text("a file, not a folder")
    lock = SendLock(tmp_path / "taken" / "state.sqlite3", NOV)
    with pytest.raises(DeliveryError) as raised:
        lock.acquire("digest send by alice")
    assert str(raised.value).startswith(f"{lock.path}: cannot take the send lock: ")


def test_suppression_is_recorded_once_whatever_the_letter_case(ledger: Ledger) -> None:
    """Unsubscribing twice, or in capitals, leaves one suppressed address."""
    assert ledger.suppress("Lee.Kawai@Example.org", "one-click") is True
    assert ledger.suppress("lee.kawai@example.org", "one-click") is False
    assert ledger.suppressed() == {"lee.kawai@example.org"}


def test_runs_are_listed_newest_first(ledger: Ledger) -> None:
    """The console's history shows the latest send on top, and only the month asked for."""
    first = ledger.start_run(NOV, "outbox/", "digest send by ada")
    ledger.finish_run(first, 10, 1, 0, 0)
    second = ledger.start_run(DEC, "outbox/", "digest serve, started by Bo")
    third = ledger.start_run(NOV, "outbox/", "digest schedule")
    assert [run.id for run in ledger.runs()] == [third, second, first]
    assert [run.id for run in ledger.runs(NOV)] == [third, first]
    (done,) = [run for run in ledger.runs(NOV) if run.id == first]
    assert (done.started_by, done.sent, done.failed, done.finished_at is not None) == (
        "digest send by ada",
        10,
        1,
        True,
    )
    assert ledger.runs(NOV, limit=1)[0].finished_at is None


def test_month_is_settled_once_everyone_still_subscribed_has_it(ledger: Ledger) -> None:
    """Someone who unsubscribed mid-month does not keep the month open or count as waiting."""
    ledger.enrol(NOV, rows("a@example.org", "b@example.org"))
    ledger.record(NOV, [Mark("a@example.org", Status.SENT, code=250, reply="accepted")])
    assert ledger.settled(NOV) is None
    assert ledger.months()[0].counts["pending"] == 1

    ledger.suppress("B@example.org", "one-click")

    assert ledger.settled(NOV) == "already sent"
    assert ledger.months()[0].counts == {**ledger.months()[0].counts, "sent": 1, "pending": 0}


def test_a_logged_out_session_is_remembered_until_it_would_have_expired(
    open_ledger: Callable[..., Ledger],
) -> None:
    """The console refuses a logged-out session while its cookie could still be valid, no longer."""
    ledger = open_ledger()
    now = datetime(2025, 12, 1, 9, 0, tzinfo=UTC)
    ledger.record_logout("early", now, now + timedelta(hours=1))
    ledger.record_logout("late", now, now + timedelta(hours=12))
    assert ledger.logouts(now) == {"early", "late"}
    assert ledger.logouts(now + timedelta(hours=2)) == {"late"}
    later = now + timedelta(hours=13)
    ledger.record_logout("next", later, later + timedelta(hours=12))  # clears the expired ones
    rows = ledger._db.execute("SELECT session FROM logouts").fetchall()
    assert {row[0] for row in rows} == {"next"}
    ledger.close()


def test_several_marks_are_recorded_together_in_order(ledger: Ledger) -> None:
    """A send records a round's statuses in one go; a row marked twice ends as the last said."""
    ledger.enrol(NOV, rows("a@example.org", "b@example.org", "c@example.org"))
    ledger.record(
        NOV,
        [Mark("a@example.org", "sending", attempt=True), Mark("b@example.org", "sending", True)],
    )
    ledger.record(
        NOV,
        [
            Mark("a@example.org", "sent", code=250, reply="accepted"),
            Mark("b@example.org", "failed", code=550, reply="5.1.1 no such user"),
            Mark("c@example.org", "pending", attempt=True, code=451, reply="later"),
        ],
    )
    assert view(ledger) == [
        ("a@example.org", "sent", 1, 250, "accepted"),
        ("b@example.org", "failed", 1, 550, "5.1.1 no such user"),
        ("c@example.org", "pending", 1, 451, "later"),
    ]
    ledger.record(
        NOV,
        [
            Mark("c@example.org", "sending", attempt=True),
            Mark("c@example.org", "deferred", code=421, reply="closing"),
        ],
    )
    assert view(ledger)[2] == ("c@example.org", "deferred", 2, 421, "closing")
    ledger.record(NOV, [])
    assert view(ledger)[2] == ("c@example.org", "deferred", 2, 421, "closing")


def test_a_ledger_locked_elsewhere_is_waited_for_then_refused_by_name(tmp_path: Path) -> None:
    """A write blocked by an sqlite3 shell says it waits, then names the file and what to do."""
    path = tmp_path / "state.sqlite3"
    told: list[tuple[Path, float]] = []
    ledger = Ledger(path, busy_timeout=1, on_busy=lambda *said: told.append(said))
    ledger.enrol(NOV, rows("a@example.org", "b@example.org"))
    shell = sqlite3.connect(path, isolation_level=None)
    shell.execute("BEGIN EXCLUSIVE")
    try:
        for write in (
            lambda: ledger.record(NOV, [Mark("a@example.org", "sent", True, 250, "accepted")]),
            lambda: ledger.record(
                NOV, [Mark("a@example.org", "sending"), Mark("a@example.org", "sent")]
            ),
            lambda: ledger.freeze(DEC, "hash", "Subject", 3),
        ):
            with pytest.raises(LedgerBusyError) as raised:
                write()
            assert str(raised.value) == (
                f"the delivery ledger {path} stayed locked by another program for 1 second: "
                f"close whatever holds the database open at {path} (an sqlite3 shell, say), "
                "then try again"
            )
        assert told == [(str(path), 1)] * 3
        # Reading goes on; so does opening it again (`digest status` while the shell is open).
        assert view(ledger)[0] == ("a@example.org", "pending", 0, None, None)
        Ledger(path, busy_timeout=0.5).close()
    finally:
        shell.execute("ROLLBACK")
        shell.close()
    ledger.record(NOV, [Mark("a@example.org", "sent", True, 250, "accepted")])
    assert view(ledger)[0] == ("a@example.org", "sent", 1, 250, "accepted")
    assert ledger.frozen(DEC) is None
    ledger.close()


# -- the daily limit's count -----------------------------------------------------------------------

NOON = datetime(2025, 12, 1, 12, 0, tzinfo=UTC)


def test_accepted_messages_are_counted_across_months_and_a_resend(ledger: Ledger) -> None:
    """The daily limit sees everything the relay took in the window, of every month, even after
    a --resend made the ledger forget a month's rows; what failed is not counted."""
    ledger.enrol(NOV, rows("a@example.org", "b@example.org", "c@example.org"))
    ledger.enrol(DEC, rows("a@example.org"))
    ledger.record(
        NOV,
        [Mark("a@example.org", "sending", True), Mark("a@example.org", "sent")],
        at=NOON - timedelta(hours=2),
    )
    ledger.record(
        NOV, [Mark("b@example.org", "sent"), Mark("c@example.org", "failed", True, 550)], at=NOON
    )
    ledger.record(DEC, [Mark("a@example.org", "sent")], at=NOON + timedelta(seconds=1))

    assert ledger.accepted_since(NOON - timedelta(hours=3)) == 3
    ledger.start_over(NOV, "new", "Subject", 3, lambda address, copy: f"<{copy}.{address}>")
    assert ledger.accepted_since(NOON - timedelta(hours=3)) == 3
    # The window is open at its start: a message accepted exactly then has left it.
    assert ledger.accepted_since(NOON - timedelta(hours=2)) == 2
    assert ledger.accepted_since(NOON + timedelta(seconds=1)) == 0
    assert ledger.accepted_at(NOON - timedelta(hours=3), 1) == NOON - timedelta(hours=2)
    assert ledger.accepted_at(NOON - timedelta(hours=3), 3) == NOON + timedelta(seconds=1)
    assert ledger.accepted_at(NOON - timedelta(hours=3), 4) is None
    # Every month and every copy counts, the one a resend replaced too.
    assert ledger.accepted_since(NOON - timedelta(days=30)) == 3


def test_a_hold_is_kept_per_month_until_cleared_or_started_over(
    open_ledger: Callable[..., Ledger],
) -> None:
    """`digest status` can say which month waits for the daily limit, after a restart too."""
    ledger = open_ledger()
    ledger.hold(NOV, 20, NOON)
    ledger.hold(DEC, 4, NOON + timedelta(minutes=1))
    ledger.close()
    ledger = open_ledger()
    try:
        assert ledger.holds() == {
            DEC: (4, "2025-12-01T12:01:00+00:00"),
            NOV: (20, "2025-12-01T12:00:00+00:00"),
        }
        ledger.hold(DEC, 0, None)
        ledger.start_over(NOV, "new", "Subject", 3, lambda address, copy: f"<{copy}.{address}>")
        assert ledger.holds() == {}
    finally:
        ledger.close()


# -- upgrading a version-1 ledger ------------------------------------------------------------------

# The schema as version 1 wrote it (digest up to the ledger's schema 2), copied here unchanged: the
# upgrade must read files that exist, whatever the code says today.
SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS issues (
    month TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    subject TEXT NOT NULL,
    items INTEGER NOT NULL,
    frozen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS renders (
    month TEXT NOT NULL,
    selection TEXT NOT NULL,
    subject TEXT NOT NULL,
    html TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (month, selection)
);
CREATE TABLE IF NOT EXISTS deliveries (
    month TEXT NOT NULL,
    recipient TEXT NOT NULL,
    address TEXT NOT NULL,
    name TEXT,
    selection TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'deferred')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_code INTEGER,
    last_reply TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (month, recipient)
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    month TEXT NOT NULL,
    decision TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    month TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    transport TEXT NOT NULL,
    started_by TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    deferred INTEGER NOT NULL DEFAULT 0,
    already INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS suppressions (
    address TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logouts (
    session TEXT PRIMARY KEY,
    until TEXT NOT NULL
);
"""
OCT = "2025-10"
AT = "2025-12-01T01:00:00+00:00"
# What version 1's scheduler recorded, in every form it had, and one a person typed in by hand.
V1_DECISIONS = [
    (NOV, "sent", "2 sent, 0 already had it, 0 deferred, 1 failed"),
    (NOV, "stopped", "1 sent, 2 left for the next start"),
    (NOV, "failed", "subscribers.csv: line 3: bad address"),
    (DEC, "skipped: no items", ""),
    (DEC, "skipped: no readers", ""),
    (NOV, "skipped: already sent", ""),
    (NOV, "skipped: another send is running", "another send of 2025-11 is running"),
    (OCT, "sent", "2 sent, 0 already had it, 0 deferred, 0 failed"),
    (NOV, "paused by hand", "see ticket 12"),
]


def version_1(path: Path) -> None:
    """Write a version-1 ledger as digest then left it: November emailed (after a look at the
    outbox), October only ever written to outbox/, and the scheduler's decisions."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA_1)
    db.execute("PRAGMA user_version=1")
    with db:
        for month in (NOV, OCT):
            db.execute("INSERT INTO issues VALUES (?, 'hash', 'Subject', 3, ?)", (month, AT))
            db.execute("INSERT INTO renders VALUES (?, '*', 'Subject', '<p>x</p>', 'x')", (month,))
        db.executemany(
            "INSERT INTO deliveries VALUES (?, ?, ?, ?, '*', ?, ?, ?, ?, ?)",
            [
                (NOV, "a@example.org", "a@example.org", "A", "sent", 1, 250, "accepted", AT),
                (NOV, "b@example.org", "B@example.org", None, "failed", 1, 550, "no such", AT),
                (NOV, "c@example.org", "c@example.org", "C", "sending", 2, 451, "later", AT),
                (OCT, "a@example.org", "a@example.org", "A", "sent", 1, 250, "accepted", AT),
                (OCT, "b@example.org", "B@example.org", None, "sent", 1, 250, "accepted", AT),
            ],
        )
        db.executemany(
            "INSERT INTO decisions (at, month, decision, detail) VALUES (?, ?, ?, ?)",
            [(AT, month, decision, detail) for month, decision, detail in V1_DECISIONS],
        )
        db.executemany(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (1, NOV, AT, AT, "outbox/", "digest send by ada", 3, 0, 0, 0),
                (2, NOV, AT, AT, "smtp://127.0.0.1:2525", "digest send by ada", 0, 0, 0, 0),
                (3, OCT, AT, AT, "outbox/", "digest schedule", 2, 0, 0, 0),
                (4, NOV, AT, None, "smtps://news@127.0.0.1:465", "digest schedule", 0, 0, 0, 0),
            ],
        )
        db.execute("INSERT INTO suppressions VALUES ('gone@example.org', ?, 'one-click')", (AT,))
        db.execute("INSERT INTO logouts VALUES ('session-1', '2099-01-01T00:00:00+00:00')")
    db.close()


def columns(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Return every table's columns (name, type, not null, default, key), by table."""
    db = sqlite3.connect(path)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            table: [row[1:] for row in db.execute(f"PRAGMA table_info({table})")]
            for table in sorted(tables)
        }
    finally:
        db.close()


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_version_1_ledger_is_upgraded_with_its_rows_kept(tmp_path: Path) -> None:
    """After upgrading digest, all the old ledger recorded must still be there, meaning the same."""
    path = tmp_path / "state.sqlite3"
    version_1(path)

    with Ledger(path) as ledger:
        assert [
            (r.recipient, r.address, r.name, r.status, r.attempts, r.last_code, r.copy)
            for r in ledger.deliveries(NOV)
        ] == [
            ("a@example.org", "a@example.org", "A", "sent", 1, 250, 0),
            ("b@example.org", "B@example.org", None, "failed", 1, 550, 0),
            ("c@example.org", "c@example.org", "C", "sending", 2, 451, 0),
        ]
        assert ledger.frozen(NOV) == Frozen("hash", "Subject", 3, AT, 0)
        assert ledger.render(NOV, "*") == Render("Subject", "<p>x</p>", "x")
        assert ledger.copies(NOV) == []
        assert ledger.suppressed() == {"gone@example.org"}
        assert ledger.logouts(datetime(2025, 12, 1, tzinfo=UTC)) == {"session-1"}
        assert [(run.id, run.kind) for run in ledger.runs()] == [
            (4, RunKind.SEND),
            (3, RunKind.REHEARSAL),
            (2, RunKind.SEND),
            (1, RunKind.REHEARSAL),
        ]
        assert ledger.last_decision() == Decided(
            AT, NOV, Decision.FAILED, "paused by hand (see ticket 12)"
        )
        assert ledger.settled(DEC) == "skipped: no readers"
        assert ledger.settled(NOV) is None  # c@ is still in flight
        ledger.record(NOV, [Mark("c@example.org", Status.SENT)])
        assert ledger.settled(NOV) == "already sent"
        ledger.enrol(NOV, rows("d@example.org"))  # the upgraded tables take new rows
        assert ledger.deliveries(NOV)[-1].copy == 0
    assert user_version(path) == SCHEMA_VERSION
    db = sqlite3.connect(path)
    try:
        decided = db.execute("SELECT month, kind, detail FROM decisions ORDER BY id").fetchall()
    finally:
        db.close()
    assert decided == [
        (NOV, "sent", "2 sent, 0 already had it, 0 deferred, 1 failed"),
        (NOV, "stopped", "1 sent, 2 left for the next start"),
        (NOV, "failed", "subscribers.csv: line 3: bad address"),
        (DEC, "no_items", ""),
        (DEC, "no_readers", ""),
        (NOV, "already_sent", ""),
        (NOV, "busy", "another send of 2025-11 is running"),
        (OCT, "rehearsed", "2 sent, 0 already had it, 0 deferred, 0 failed"),
        (NOV, "failed", "paused by hand (see ticket 12)"),
    ]


def test_upgrade_unrecords_a_month_only_ever_written_to_the_outbox(tmp_path: Path) -> None:
    """A month version 1 only wrote to outbox/ must not stay "sent": its real send reaches all."""
    path = tmp_path / "state.sqlite3"
    version_1(path)

    with Ledger(path) as ledger:
        assert (ledger.deliveries(OCT), ledger.frozen(OCT), ledger.render(OCT, "*")) == (
            [],
            None,
            None,
        )
        assert ledger.settled(OCT) is None
        assert [run.rehearsal for run in ledger.runs(OCT)] == [True]
        assert [m.month for m in ledger.months()] == [NOV]


def test_upgraded_ledger_has_the_tables_of_a_new_one(tmp_path: Path) -> None:
    """An upgraded ledger and a new one must be the same database, column for column."""
    old, new = tmp_path / "old.sqlite3", tmp_path / "new.sqlite3"
    version_1(old)
    Ledger(old).close()
    Ledger(new).close()
    assert columns(old) == columns(new)
    assert "copies" in columns(new)
    assert user_version(new) == SCHEMA_VERSION


def test_upgrade_that_fails_changes_nothing(tmp_path: Path) -> None:
    """A ledger that cannot be upgraded is refused by name and left exactly as it was."""
    path = tmp_path / "state.sqlite3"
    version_1(path)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE copies (note TEXT)")  # in the way of the upgrade's own table
    db.commit()
    db.close()
    before = columns(path)

    with pytest.raises(DeliveryError) as raised:
        Ledger(path)

    assert str(raised.value) == (
        f"{path}: cannot upgrade the delivery ledger from schema 1 to {SCHEMA_VERSION} (table "
        "copies already "
        "exists); nothing in it was changed. Remove what is in the way or move the file aside "
        "to start a new ledger"
    )
    assert columns(path) == before
    assert user_version(path) == 1


def test_upgrade_of_a_locked_ledger_waits_then_changes_nothing(tmp_path: Path) -> None:
    """An upgrade blocked by an sqlite3 shell stops with the usual notice and leaves the file."""
    path = tmp_path / "state.sqlite3"
    version_1(path)
    before = columns(path)
    shell = sqlite3.connect(path, isolation_level=None)
    shell.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LedgerBusyError):
            Ledger(path, busy_timeout=0.5)
    finally:
        shell.execute("ROLLBACK")
        shell.close()
    assert (columns(path), user_version(path)) == (before, 1)
    with Ledger(path) as ledger:
        assert len(ledger.deliveries(NOV)) == 3


def test_ledger_tables_without_a_version_are_upgraded(tmp_path: Path) -> None:
    """A version-1 ledger whose version number was never written still opens, rows and all."""
    path = tmp_path / "state.sqlite3"
    version_1(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=0")
    db.close()
    with Ledger(path) as ledger:
        assert len(ledger.deliveries(NOV)) == 3
    assert user_version(path) == SCHEMA_VERSION


def test_database_of_another_program_is_refused(tmp_path: Path) -> None:
    """--state pointing at some other program's SQLite file must not have tables added to it."""
    path = tmp_path / "inventory.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE parts (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(DeliveryError) as raised:
        Ledger(path)
    assert str(raised.value) == (
        f"{path}: is not a delivery ledger (it holds other tables: parts); give --state (or "
        "DIGEST_STATE, DIGEST_DATABASE_URL) the ledger's, or a new one"
    )
    assert list(columns(path)) == ["parts"]


def test_ledger_is_a_context_manager(tmp_path: Path) -> None:
    """`with Ledger(path)` closes the database however the block ends."""
    with pytest.raises(RuntimeError), Ledger(tmp_path / "state.sqlite3") as ledger:
        raise RuntimeError("boom")
    with pytest.raises(sqlite3.ProgrammingError):
        ledger.suppressed()


def test_a_schema_3_ledger_gains_the_editors_history_with_its_rows_kept(tmp_path: Path) -> None:
    """Opening a ledger from before the editor keeps every send and starts an empty history."""
    path = tmp_path / "state.sqlite3"
    with Ledger(path) as ledger:
        ledger.freeze(NOV, "hash", "Subject", 3)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE edits")
    db.execute("PRAGMA user_version=3")  # the subscriber store, before the editor's history
    db.commit()
    db.close()
    with Ledger(path) as ledger:
        assert ledger.frozen(NOV) is not None
        assert ledger.edits() == []
        number = ledger.record_edit(
            "an-item", "Ada", datetime(2025, 11, 1, tzinfo=UTC), "publish", "diff", None, "{}", "v"
        )
        assert [(e.id, e.item, e.staff, e.at) for e in ledger.edits("an-item")] == [
            (number, "an-item", "Ada", "2025-11-01T00:00:00+00:00")
        ]
        assert ledger.edit(number) == ledger.edits()[0]
        assert ledger.edits("another") == []
    assert user_version(path) == SCHEMA_VERSION
