"""Send each month's digest on the catalogue's cron schedule: the only module using APScheduler.

The ledger decides what is sent, not the scheduler's memory: every firing (and the catch-up at
start-up) goes through `delivery.send_month`, which takes the month's lock and sends only what the
ledger says is missing. A second firing for a month already sent, whether from a restart, a DST
overlap or a manual send, therefore sends nothing.

A run that the relay's daily limit cut short leaves the rest pending; the scheduler runs the month
again once, at the moment the run said the rolling 24 hours leave room for them.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import islice
from types import FrameType
from typing import Any, Protocol

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.errors import DigestError
from digest.months import Month

JOB_ID = "digest-monthly-send"
# How far back start-up looks for a run that was due while the scheduler was not running.
CATCH_UP_WINDOW = timedelta(days=32)
# A run that left recipients deferred is retried after these pauses, then left for a person.
RETRY_AFTER = (timedelta(minutes=15), timedelta(hours=1), timedelta(hours=4), timedelta(hours=12))
# How often the bounce mailbox is read, when one is configured (DIGEST_BOUNCE_SOURCE).
POLL_EVERY = timedelta(minutes=15)
POLL_ID = "digest-bounces"
HEARTBEAT_ID = "digest-scheduler-lock"

log = logging.getLogger("digest.schedule")
_EVENT_ALL_DONE = EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED


def trigger(expression: str, tz: tzinfo) -> CronTrigger:
    """Return the cron trigger of `newsletter.schedule`, in the publication's time zone."""
    try:
        return CronTrigger.from_crontab(expression, timezone=tz)
    except ValueError as exc:
        raise DigestError(
            f"newsletter.schedule: {expression!r} is not a valid cron line (minute hour "
            f"day-of-month month day-of-week): {exc}"
        ) from exc


def _firings(expression: str, tz: tzinfo, start: datetime) -> Iterator[datetime]:
    """Yield the times the schedule fires from `start` on, each strictly after the last.

    Steps are taken on the UTC time line: wall-clock arithmetic (`moment + 1 s`) during a DST
    overlap lands back in the first pass of the repeated hour, and the trigger would return the
    second 01:30 for ever.
    """
    cron = trigger(expression, tz)
    moment = cron.get_next_fire_time(None, start.astimezone(tz))
    while moment is not None:
        yield moment
        after = (moment.astimezone(UTC) + timedelta(seconds=1)).astimezone(tz)
        moment = cron.get_next_fire_time(moment, after)


def next_runs(expression: str, tz: tzinfo, now: datetime, count: int) -> list[datetime]:
    """Return the next `count` times the schedule fires at or after `now`."""
    return list(islice(_firings(expression, tz, now), count))


def last_due(expression: str, tz: tzinfo, now: datetime) -> datetime | None:
    """Return the most recent time the schedule fired at or before `now`, within the window."""
    last = None
    # Compared as UTC instants: Python compares two times of one zone by wall clock, fold
    # ignored, so the two 01:30s of a night the clocks go back would count as equal.
    for moment in _firings(expression, tz, now - CATCH_UP_WINDOW):
        if moment.astimezone(UTC) > now.astimezone(UTC):
            break
        last = moment
    return last


def month_of_run(fired: datetime, tz: tzinfo) -> Month:
    """Return the month a run sends: the calendar month before the one it fires in."""
    return Month.previous(fired, tz)


def due_month(expression: str, tz: tzinfo, now: datetime) -> Month | None:
    """Return the month of the schedule's most recent run at or before `now`, if in the window."""
    fired = last_due(expression, tz, now)
    return None if fired is None else month_of_run(fired, tz)


def catch_up(
    expression: str, tz: tzinfo, now: datetime, done: Callable[[Month], bool]
) -> Month | None:
    """Return the month to send at start-up: the last due run's, unless the ledger has it done."""
    month = due_month(expression, tz, now)
    return None if month is None or done(month) else month


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one scheduled run did, for the log and the ledger."""

    month: Month
    decision: str  # "sent", "skipped: no items", "skipped: already sent", "failed", ...
    detail: str = ""
    retry: bool = False
    held_until: datetime | None = None  # the daily limit holds the rest until then


class Standby(Protocol):
    """The lock that makes one scheduler among several the active one (`standby.SchedulerLock`)."""

    poll: float  # seconds between two checks that the lock is still held

    @property
    def role(self) -> str: ...

    def acquire(self, stop: threading.Event) -> bool: ...

    def check(self) -> bool: ...

    def release(self) -> None: ...


class Scheduler:
    """Runs `send(month) -> Outcome` on the cron schedule, in the foreground, until stopped.

    With a `standby` lock, it acts only while it holds the lock: until then it stands by, and if
    the lock is lost (its connection gone and the lock taken by another) it stops its runs and
    stands by again. Without one (SQLite), it always acts.
    """

    def __init__(
        self,
        expression: str,
        tz: tzinfo,
        send: Callable[[Month, threading.Event], Outcome],
        settled: Callable[[Month], str | None],
        clock: Callable[[], datetime],
        poll: Callable[[], str] | None = None,
        standby: Standby | None = None,
    ) -> None:
        """`poll`, when given, reads the bounce mailbox every POLL_EVERY and returns the line to
        log; a poll that fails is logged, and the next one goes ahead."""
        self.poll = poll
        self.expression = expression
        self.tz = tz
        self.send = send
        self.settled = settled
        self.clock = clock
        self.standby = standby
        self.stop = threading.Event()  # SIGTERM or SIGINT: the process ends
        self.halt = threading.Event()  # this term as the active scheduler ends: sends stop
        self.lost = False  # the term ended because the lock was lost
        self.retries: dict[Month, int] = {}
        self.scheduler = BlockingScheduler(timezone=tz)

    def run(self) -> None:
        """Stand by until active (with a standby lock), then follow the schedule until stopped."""
        trigger(self.expression, self.tz)  # a bad line is reported before anything else
        log.info("started: %s in %s", self.expression, self.tz)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        if self.standby is None:
            log.info(
                "role: active (the state is an SQLite file: another scheduler on the same file "
                "would act too, and each month would still be sent once)"
            )
            self._term()
            log.info("stopped")
            return
        log.info("role: standby until this scheduler holds the scheduler lock, as %s",
                 self.standby.role)  # fmt: skip
        try:
            while self.standby.acquire(self.stop):
                log.info("role: active: this scheduler holds the scheduler lock and sends")
                self._term()
                if not self.lost:
                    break
                log.warning("role: standby again: another scheduler holds the lock now")
        finally:
            self.standby.release()
        log.info("stopped")

    def _term(self) -> None:
        """Follow the schedule as the active scheduler until stopped or the lock is lost."""
        self.lost = False
        self.halt = threading.Event()
        if self.stop.is_set():
            return
        self.scheduler = BlockingScheduler(timezone=self.tz)
        self.scheduler.add_listener(self._on_error, EVENT_JOB_ERROR)
        now = self.clock()
        self.scheduler.add_job(
            self._fire,
            trigger(self.expression, self.tz),
            id=JOB_ID,
            replace_existing=True,
            max_instances=1,  # never two runs at once (the month's lock also guarantees it)
            coalesce=True,  # runs missed while busy collapse into one
            # APScheduler silently drops a run more than 1 s late by default (a suspended VM, a
            # stalled host). However late, the run still happens, once (coalesced); the ledger
            # makes it send only what is missing.
            misfire_grace_time=None,
        )
        self._catch_up(now)
        self._add_poll()
        self._add_heartbeat()
        self.scheduler.add_listener(self._log_next, mask=_EVENT_ALL_DONE)
        self._log_next(None)
        self.scheduler.start()  # blocks until shutdown

    def _catch_up(self, now: datetime) -> None:
        """Send the month whose run was due while no scheduler ran, unless the ledger has it."""
        due = due_month(self.expression, self.tz, now)
        why = None if due is None else self.settled(due)
        if why is not None:
            log.info("%s: nothing to catch up: %s (the ledger says)", due, why)
        missed = due if due is not None and why is None else None
        if missed is not None:
            log.info("%s: catching up, its run was due while the scheduler was not running", missed)
            self.scheduler.add_job(
                self._run_month,
                args=(missed,),
                id=f"catch-up-{missed}",
                # However late the scheduler gets going: the default grace of 1 s silently drops
                # the catch-up when start-up stalls (a loaded host).
                misfire_grace_time=None,
            )

    def _add_heartbeat(self) -> None:
        """Check every `standby.poll` seconds that this scheduler still holds the lock."""
        if self.standby is None:
            return
        self.scheduler.add_job(
            self._heartbeat,
            IntervalTrigger(seconds=self.standby.poll),
            id=HEARTBEAT_ID,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    def _heartbeat(self) -> None:
        """Stop this term's runs if the lock was lost: another scheduler acts now."""
        if self.standby is None or self.halt.is_set() or self.standby.check():
            return
        log.warning(
            "lost the scheduler lock (its connection went, and another scheduler took it): "
            "this scheduler stops its runs, finishing the message in flight"
        )
        self.lost = True
        self.halt.set()
        threading.Thread(target=self._shutdown, daemon=True).start()

    def _add_poll(self) -> None:
        """Read the bounce mailbox every POLL_EVERY, the first time one period from now."""
        if self.poll is None:
            return
        first = self.clock() + POLL_EVERY
        self.scheduler.add_job(
            self._poll,
            IntervalTrigger(seconds=POLL_EVERY.total_seconds(), start_date=first),
            id=POLL_ID,
            replace_existing=True,
            max_instances=1,  # a slow mailbox never has two readers
            coalesce=True,
            misfire_grace_time=None,
        )
        log.info("reading bounces every %d minutes", POLL_EVERY.total_seconds() // 60)

    def _poll(self) -> None:
        """Read the bounce mailbox once; a failure is logged and the schedule goes on."""
        if self.poll is None or self.halt.is_set():
            return
        try:
            line = self.poll()
        except DigestError as exc:
            log.warning("bounces: failed: %s (tried again in %d minutes)", exc,
                        POLL_EVERY.total_seconds() // 60)  # fmt: skip
            return
        log.info("bounces: %s", line)

    def _log_next(self, event: Any) -> None:
        upcoming = next(iter(next_runs(self.expression, self.tz, self.clock(), 1)), None)
        if upcoming is not None:
            log.info(
                "next run at %s, for %s", upcoming.isoformat(), month_of_run(upcoming, self.tz)
            )

    def _fire(self) -> None:
        self._run_month(month_of_run(self.clock(), self.tz))

    def _run_month(self, month: Month) -> None:
        if self.halt.is_set():
            return
        outcome = self.send(month, self.halt)
        detail = f" ({outcome.detail})" if outcome.detail else ""
        log.info("%s: %s%s", month, outcome.decision, detail)
        if outcome.retry and not self.halt.is_set():
            tries = self.retries.get(month, 0)
            if tries < len(RETRY_AFTER):
                self.retries[month] = tries + 1
                when = self.clock() + RETRY_AFTER[tries]
                shown = when.astimezone(self.tz).isoformat(timespec="seconds")
                log.info("%s: retrying the deferred at %s", month, shown)
                self.scheduler.add_job(
                    self._run_month,
                    "date",
                    run_date=when,
                    args=(month,),
                    id=f"retry-{month}",
                    replace_existing=True,
                    misfire_grace_time=None,
                )
            else:
                log.info("%s: gave up retrying after %d tries; see `digest status`", month, tries)
        else:
            self.retries.pop(month, None)
        if outcome.held_until is not None and not self.halt.is_set():
            self._resume(month, outcome.held_until)

    def _resume(self, month: Month, when: datetime) -> None:
        """Run `month` again at `when`, once: the rest the daily limit held go then."""
        shown = when.astimezone(self.tz).isoformat(timespec="seconds")
        log.info("%s: sending the recipients the daily limit holds at %s", month, shown)
        self.scheduler.add_job(
            self._run_month,
            "date",
            run_date=when,
            args=(month,),
            id=f"held-{month}",
            replace_existing=True,  # one resumption a month, however many runs were held
            misfire_grace_time=None,
        )

    def _on_error(self, event: JobExecutionEvent) -> None:
        # A failed run is logged and the scheduler goes on to the next one.
        log.error("failed: %s", event.exception)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():  # a second Ctrl-C: shutting down twice would raise
            log.info("%s again: still stopping, a message in flight is finished first", name)
            return
        log.info("stopping (%s): a message in flight is finished and recorded first", name)
        self.stop.set()
        self.halt.set()
        threading.Thread(target=self._shutdown, daemon=True).start()

    def _shutdown(self) -> None:
        # A signal can land before the scheduler has started: shutdown() would then raise and
        # start() block for good, so wait until it runs. A standby never starts one (`stop` ends
        # its wait): this thread then gives up after a while, having nothing to shut down.
        scheduler = self.scheduler
        deadline = time.monotonic() + 30
        while not scheduler.running:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
            scheduler = self.scheduler  # a term may have begun meanwhile
        # Jobs see `halt` between messages; shutdown waits for the one running to return.
        scheduler.shutdown(wait=True)
