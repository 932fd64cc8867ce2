"""Send each month's digest on the catalogue's cron schedule: the only module using APScheduler.

The ledger decides what is sent, not the scheduler's memory: every firing (and the catch-up at
start-up) goes through `delivery.send_month`, which takes the month's lock and sends only what the
ledger says is missing. A second firing for a month already sent, whether from a restart, a DST
overlap or a manual send, therefore sends nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from types import FrameType
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from digest.errors import DigestError
from digest.months import Month

JOB_ID = "digest-monthly-send"
# How far back start-up looks for a run that was due while the scheduler was not running.
CATCH_UP_WINDOW = timedelta(days=32)
# A run that left recipients deferred is retried after these pauses, then left for a person.
RETRY_AFTER = (timedelta(minutes=15), timedelta(hours=1), timedelta(hours=4), timedelta(hours=12))

log = logging.getLogger("digest.schedule")
_EVENT_ALL_DONE = EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED


def trigger(expression: str, tz: tzinfo) -> CronTrigger:
    """Return the cron trigger of `newsletter.schedule`, in the publication's time zone."""
    try:
        return CronTrigger.from_crontab(expression, timezone=tz)
    except ValueError as exc:
        raise DigestError(
            f"newsletter.schedule {expression!r} is not a valid cron line: {exc}"
        ) from exc


def next_runs(expression: str, tz: tzinfo, now: datetime, count: int) -> list[datetime]:
    """Return the next `count` times the schedule fires after `now`."""
    cron = trigger(expression, tz)
    times: list[datetime] = []
    moment = cron.get_next_fire_time(None, now)
    while moment is not None and len(times) < count:
        times.append(moment)
        moment = cron.get_next_fire_time(moment, moment + timedelta(seconds=1))
    return times


def last_due(expression: str, tz: tzinfo, now: datetime) -> datetime | None:
    """Return the most recent time the schedule fired at or before `now`, within the window."""
    cron = trigger(expression, tz)
    last = None
    moment = cron.get_next_fire_time(None, now - CATCH_UP_WINDOW)
    while moment is not None and moment <= now:
        last = moment
        moment = cron.get_next_fire_time(moment, moment + timedelta(seconds=1))
    return last


def month_of_run(fired: datetime, tz: tzinfo) -> Month:
    """Return the month a run sends: the calendar month before the one it fires in."""
    return Month.previous(fired, tz)


def catch_up(
    expression: str, tz: tzinfo, now: datetime, done: Callable[[Month], bool]
) -> Month | None:
    """Return the month to send at start-up: the last due run's, unless the ledger has it done."""
    fired = last_due(expression, tz, now)
    if fired is None:
        return None
    month = month_of_run(fired, tz)
    return None if done(month) else month


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one scheduled run did, for the log and the ledger."""

    month: Month
    decision: str  # "sent", "skipped: no items", "skipped: already sent", "deferred", "failed: ..."
    detail: str = ""
    retry: bool = False


class Scheduler:
    """Runs `send(month) -> Outcome` on the cron schedule, in the foreground, until stopped."""

    def __init__(
        self,
        expression: str,
        tz: tzinfo,
        send: Callable[[Month, threading.Event], Outcome],
        done: Callable[[Month], bool],
        clock: Callable[[], datetime],
    ) -> None:
        self.expression = expression
        self.tz = tz
        self.send = send
        self.done = done
        self.clock = clock
        self.stop = threading.Event()
        self.retries: dict[Month, int] = {}
        self.scheduler = BlockingScheduler(timezone=tz)
        self.scheduler.add_listener(self._on_error, EVENT_JOB_ERROR)

    def run(self) -> None:
        """Catch up once if a run was missed, then follow the schedule until SIGTERM or SIGINT."""
        now = self.clock()
        cron = trigger(self.expression, self.tz)
        self.scheduler.add_job(
            self._fire,
            cron,
            id=JOB_ID,
            replace_existing=True,
            max_instances=1,  # never two runs at once (the month's lock also guarantees it)
            coalesce=True,  # runs missed while busy collapse into one
            # APScheduler silently drops a run more than 1 s late by default; the catch-up below
            # covers anything missed while the process was down, this covers a busy minute.
            misfire_grace_time=3600,
        )
        log.info("started: %s in %s", self.expression, self.tz)
        missed = catch_up(self.expression, self.tz, now, self.done)
        if missed is not None:
            log.info(
                "catching up: the run for %s was due while the scheduler was not running", missed
            )
            self.scheduler.add_job(self._run_month, args=(missed,), id=f"catch-up-{missed}")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.scheduler.add_listener(self._log_next, mask=_EVENT_ALL_DONE)
        self._log_next(None)
        self.scheduler.start()  # blocks until shutdown
        log.info("stopped")

    def _log_next(self, event: Any) -> None:
        upcoming = next(iter(next_runs(self.expression, self.tz, self.clock(), 1)), None)
        if upcoming is not None:
            log.info(
                "next run at %s, for %s", upcoming.isoformat(), month_of_run(upcoming, self.tz)
            )

    def _fire(self) -> None:
        self._run_month(month_of_run(self.clock(), self.tz))

    def _run_month(self, month: Month) -> None:
        if self.stop.is_set():
            return
        outcome = self.send(month, self.stop)
        log.info(
            "%s %s%s", outcome.decision, month, f": {outcome.detail}" if outcome.detail else ""
        )
        if outcome.retry and not self.stop.is_set():
            tries = self.retries.get(month, 0)
            if tries < len(RETRY_AFTER):
                self.retries[month] = tries + 1
                when = self.clock() + RETRY_AFTER[tries]
                log.info("retrying the deferred of %s at %s", month, when.isoformat())
                self.scheduler.add_job(
                    self._run_month,
                    "date",
                    run_date=when,
                    args=(month,),
                    id=f"retry-{month}",
                    replace_existing=True,
                    misfire_grace_time=3600,
                )
            else:
                log.info("gave up retrying %s after %d tries; see `digest status`", month, tries)
        else:
            self.retries.pop(month, None)

    def _on_error(self, event: JobExecutionEvent) -> None:
        # A failed run is logged and the scheduler goes on to the next one.
        log.error("failed: %s", event.exception)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info(
            "stopping (%s): a message in flight is finished and recorded first",
            signal.Signals(signum).name,
        )
        self.stop.set()
        # Jobs see `stop` between messages; shutdown waits for the one running to return.
        threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()
