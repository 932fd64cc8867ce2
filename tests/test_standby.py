"""The scheduler lock on PostgreSQL: one scheduler acts, a standby takes over from a silent one."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest

from digest.send import standby
from digest.send.schedule import Outcome, Scheduler
from digest.send.standby import SchedulerLock
from pgserver import PostgreSQL

KEY = standby.LOCK


def holder_of(url: str) -> list[tuple[int, str]]:
    """Return the sessions holding the scheduler lock: (server pid, application_name)."""
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted",
            KEY,
        ).fetchall()
    return [(int(pid), str(name)) for pid, name in rows]


def until(condition: Callable[[], bool], what: str, seconds: float = 15) -> None:
    """Poll `condition` until it holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling another thread's progress: nothing to await


def test_a_silent_active_scheduler_is_ended_and_the_standby_takes_over(
    postgresql: PostgreSQL, caplog: pytest.LogCaptureFixture
) -> None:
    """A holder whose session has said nothing for too long (its host gone, the server none the
    wiser) is ended by the standby, which then acts."""
    url = postgresql.database()
    zombie = psycopg.connect(url, autocommit=True, application_name="digest: pid 1 on gone, x")
    zombie.execute("SELECT pg_advisory_lock(%s, %s)", KEY)
    lock = SchedulerLock(url, poll=0.05, stale=1.0)
    try:
        with caplog.at_level(logging.INFO, "digest.schedule"):
            assert lock.acquire(threading.Event())
        assert [name for _, name in holder_of(url)] == [f"digest: {lock.name}"]
        assert lock.check()
        with pytest.raises(psycopg.OperationalError):
            zombie.execute("SELECT 1")
        messages = [record.getMessage() for record in caplog.records]
        assert messages[0] == (
            "standby: pid 1 on gone, x is the active scheduler; this one takes over when it stops "
            "(tried every 0.05 s)"
        )
        assert messages[1].startswith(
            "standby: the active scheduler (pid 1 on gone, x) has not been heard from for "
        )
        assert messages[1].endswith(" s: ending its session, so that this one takes over")
        assert messages[2] == "taking over from pid 1 on gone, x, which stopped"
    finally:
        lock.release()
        zombie.close()


def test_a_standby_stops_waiting_when_told(
    postgresql: PostgreSQL, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM reaches a standby too: it stops waiting and never takes the lock."""
    url = postgresql.database()
    active = SchedulerLock(url)
    waiting = SchedulerLock(url, poll=0.05)
    stop = threading.Event()
    taken: list[bool] = []
    try:
        assert active.acquire(threading.Event())
        with caplog.at_level(logging.INFO, "digest.schedule"):
            thread = threading.Thread(target=lambda: taken.append(waiting.acquire(stop)))
            thread.start()
            until(lambda: "is the active scheduler" in caplog.text, "the standby to wait")
            stop.set()
            thread.join(timeout=15)
        assert taken == [False]
        assert [name for _, name in holder_of(url)] == [f"digest: {active.name}"]
    finally:
        stop.set()
        active.release()
        waiting.release()


def test_the_active_scheduler_hears_that_its_lock_was_taken(postgresql: PostgreSQL) -> None:
    """An active scheduler whose session was ended and whose lock another took stops acting."""
    url = postgresql.database()
    lock = SchedulerLock(url, reconnect_for=1.0)
    try:
        assert lock.acquire(threading.Event())
        with psycopg.connect(url, autocommit=True) as other:
            ((pid, _),) = holder_of(url)
            other.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
            other.execute("SELECT pg_advisory_lock(%s, %s)", KEY)
            assert not lock.check()
    finally:
        lock.release()


def test_the_active_scheduler_lets_go_when_it_stops(postgresql: PostgreSQL) -> None:
    """A scheduler stopped with SIGTERM releases the lock at once: no standby waits for nothing."""
    url = postgresql.database()
    lock = SchedulerLock(url)
    assert lock.acquire(threading.Event())
    lock.release()
    after = SchedulerLock(url, poll=0.05)
    try:
        assert after.acquire(threading.Event())
    finally:
        after.release()


def test_an_active_scheduler_that_loses_its_lock_stands_by_and_comes_back(
    postgresql: PostgreSQL, caplog: pytest.LogCaptureFixture
) -> None:
    """Its session ended and the lock taken by another: it stops acting and stands by, then acts
    again once the lock is free; SIGTERM then stops it, releasing the lock."""
    url = postgresql.database()
    lock = SchedulerLock(url, poll=0.2, reconnect_for=1.0)
    scheduler = Scheduler(
        "0 9 1 * *", UTC, lambda month, stop: Outcome(month, "sent"),
        lambda month: "already sent", lambda: datetime.now(UTC), standby=lock,
    )  # fmt: skip
    failed: list[BaseException] = []

    def meanwhile() -> None:
        try:
            until(lambda: "role: active:" in caplog.text, "the first term")
            with psycopg.connect(url, autocommit=True) as other:
                ((pid, _),) = holder_of(url)
                other.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
                other.execute("SELECT pg_advisory_lock(%s, %s)", KEY)
                until(lambda: "role: standby again" in caplog.text, "the lock lost")
            until(lambda: caplog.text.count("role: active:") == 2, "the second term")
        except BaseException as exc:  # reported below, from the test's own thread
            failed.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the scheduler's handler stops it

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    helper = threading.Thread(target=meanwhile)
    try:
        with caplog.at_level(logging.INFO, "digest.schedule"):
            helper.start()
            scheduler.run()
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
        helper.join(timeout=30)
    assert not failed, failed
    messages = [record.getMessage() for record in caplog.records]
    assert (
        "lost the scheduler lock (its connection went, and another scheduler took it): this "
        "scheduler stops its runs, finishing the message in flight"
    ) in messages
    assert messages[-1] == "stopped"
    assert holder_of(url) == []
