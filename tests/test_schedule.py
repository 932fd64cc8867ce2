"""When the scheduler sends, decided from the clock and the ledger, never from its own memory."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_SCHEDULER_STARTED

from conftest import SmtpServer
from digest.errors import DigestError
from digest.months import Month
from digest.publish import catalogue
from digest.send import delivery, schedule, subscribers
from digest.send.ledger import Ledger
from digest.send.transport import SmtpTransport, parse_url

ROOT = Path(__file__).resolve().parent.parent

HONG_KONG = ZoneInfo("Asia/Hong_Kong")
NEW_YORK = ZoneInfo("America/New_York")
MONTHLY = "0 9 1 * *"


def hk(*args: int) -> datetime:
    return datetime(*args, tzinfo=HONG_KONG)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "done", "expected"),
    [
        # Started on the 25th: the run of 1 November (for October) was due.
        (hk(2026, 11, 25, 10, 0), set(), Month(2026, 10)),
        (hk(2026, 11, 25, 10, 0), {Month(2026, 10)}, None),
        # An older month being done does not count for the last due run.
        (hk(2026, 11, 25, 10, 0), {Month(2026, 9)}, Month(2026, 10)),
        # A second before the run: the due run is last month's, for September.
        (hk(2026, 11, 1, 8, 59, 59), set(), Month(2026, 9)),
        (hk(2026, 11, 1, 8, 59, 59), {Month(2026, 9)}, None),
        # At the very moment of the run, that run is due.
        (hk(2026, 11, 1, 9, 0), set(), Month(2026, 10)),
        # Across the year.
        (hk(2027, 1, 3, 12, 0), set(), Month(2026, 12)),
        # The same instant seen from UTC: it is already 1 December 09:00 in Hong Kong.
        (datetime(2026, 12, 1, 1, 0, tzinfo=UTC), {Month(2026, 10)}, Month(2026, 11)),
        (datetime(2026, 12, 1, 0, 59, tzinfo=UTC), {Month(2026, 10)}, None),
    ],
)
def test_catch_up_sends_the_last_due_month_once(
    now: datetime, done: set[Month], expected: Month | None
) -> None:
    """A scheduler started after a missed run sends that month, and only if the ledger lacks it."""
    assert schedule.catch_up(MONTHLY, HONG_KONG, now, done.__contains__) == expected


def test_catch_up_looks_back_a_month_at_most() -> None:
    """A yearly schedule last due months ago is not replayed on an ordinary restart."""
    assert schedule.catch_up("0 9 1 1 *", HONG_KONG, hk(2026, 6, 1), lambda m: False) is None
    assert schedule.catch_up("0 9 1 1 *", HONG_KONG, hk(2026, 1, 20), lambda m: False) == Month(
        2025, 12
    )


def test_next_runs_are_wall_clock_in_the_publication_zone() -> None:
    """`digest schedule --dry-run` lists 09:00 Hong Kong time on the 1st of each month."""
    runs = schedule.next_runs(MONTHLY, HONG_KONG, hk(2026, 11, 25, 10), 5)
    assert [r.isoformat() for r in runs] == [
        "2026-12-01T09:00:00+08:00",
        "2027-01-01T09:00:00+08:00",
        "2027-02-01T09:00:00+08:00",
        "2027-03-01T09:00:00+08:00",
        "2027-04-01T09:00:00+08:00",
    ]
    assert [schedule.month_of_run(r, HONG_KONG) for r in runs[:2]] == [
        Month(2026, 11),
        Month(2026, 12),
    ]


def test_dst_overlap_fires_twice_and_the_ledger_sends_once() -> None:
    """01:30 on the night clocks go back happens twice; the second firing finds the month done."""
    # 1 November 2026 is the first Sunday of November: New York falls back from EDT to EST.
    runs = schedule.next_runs("30 1 1 11 *", NEW_YORK, datetime(2026, 10, 31, tzinfo=NEW_YORK), 2)
    assert [r.isoformat() for r in runs] == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",
    ]
    sent: set[Month] = set()
    first = schedule.catch_up("30 1 1 11 *", NEW_YORK, runs[0], sent.__contains__)
    assert first == Month(2026, 10)
    sent.add(first)
    assert schedule.catch_up("30 1 1 11 *", NEW_YORK, runs[1], sent.__contains__) is None


def test_dst_gap_fires_once_an_hour_later() -> None:
    """02:30 on the night clocks go forward does not exist; the run happens once, at 03:30."""
    # 8 March 2026, New York springs forward from 02:00 EST to 03:00 EDT.
    runs = schedule.next_runs("30 2 * * *", NEW_YORK, datetime(2026, 3, 7, 12, tzinfo=NEW_YORK), 3)
    instants = [r.astimezone(UTC).isoformat() for r in runs]
    assert instants == [
        "2026-03-08T07:30:00+00:00",  # 03:30 EDT, the wall-clock hour after the missing 02:30
        "2026-03-09T06:30:00+00:00",  # 02:30 EDT
        "2026-03-10T06:30:00+00:00",
    ]


def test_bad_cron_line_is_a_clear_error() -> None:
    """A mistyped schedule is reported with the line, not an APScheduler traceback."""
    with pytest.raises(
        DigestError, match=r"newsletter.schedule: .0 9 32 \* \*. is not a valid cron"
    ):
        schedule.trigger("0 9 32 * *", HONG_KONG)


def test_deferred_recipients_are_retried_a_bounded_number_of_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A month left with deferred recipients is retried on a backoff, then left for a person."""
    now = hk(2026, 12, 1, 9, 0)
    sends: list[Month] = []

    def send(month: Month, stop: object) -> schedule.Outcome:
        sends.append(month)
        return schedule.Outcome(month, "sent", "10 sent, 1 deferred", retry=True)

    runner = schedule.Scheduler(MONTHLY, HONG_KONG, send, lambda m: None, lambda: now)
    with caplog.at_level("INFO", logger="digest.schedule"):
        for _ in range(5):  # the scheduler is not started: each retry is run by hand
            runner._run_month(Month(2026, 11))

    assert len(sends) == 5
    assert [m for m in caplog.messages if "retrying" in m or "gave up" in m] == [
        "2026-11: retrying the deferred at 2026-12-01T09:15:00+08:00",
        "2026-11: retrying the deferred at 2026-12-01T10:00:00+08:00",
        "2026-11: retrying the deferred at 2026-12-01T13:00:00+08:00",
        "2026-11: retrying the deferred at 2026-12-01T21:00:00+08:00",
        "2026-11: gave up retrying after 4 tries; see `digest status`",
    ]


def test_recipients_the_daily_limit_held_are_sent_once_when_the_window_frees(
    smtp_server: SmtpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With `daily_limit: 30` and 50 subscribers, the scheduler sends 30 at the run and the other
    20 once, 24 hours later, without anyone starting it; not one of them before."""
    text = (ROOT / "items.yaml").read_text(encoding="utf-8")
    text = re.sub(r"date: 2025-11-(\d\d)", r"date: 2026-11-\1", text)
    line = "  subscribers: subscribers.csv\n"
    (tmp_path / "items.yaml").write_text(
        text.replace(line, f"{line}  delivery: {{daily_limit: 30}}\n"), encoding="utf-8"
    )
    readers = [f"reader{n:02}@example.org" for n in range(50)]
    (tmp_path / "subscribers.csv").write_text(
        "email,name\n" + "".join(f"{a},\n" for a in readers), encoding="utf-8"
    )
    cat = catalogue.load(tmp_path / "items.yaml")
    listed, _ = subscribers.of_catalogue(cat)
    transport = SmtpTransport(parse_url(smtp_server.url))
    moment = [hk(2026, 12, 1, 9, 0)]  # the clock: what the scheduler and the send both read

    def send(month: Month, stop: threading.Event) -> schedule.Outcome:
        ledger = Ledger(tmp_path / "state.sqlite3")
        try:
            result = delivery.send_month(
                cat,
                listed,
                month,
                ledger,
                transport,
                now=moment[0],
                clock=lambda: moment[0],
                holder="a test",
                stop=stop,
            )
        finally:
            ledger.close()
        held = result.summary.held_until if result.summary else None
        return schedule.Outcome(month, result.kind, held_until=held)

    runner = schedule.Scheduler(MONTHLY, HONG_KONG, send, lambda m: None, lambda: moment[0])
    # Started paused, in a thread: jobs are stored as when it runs, and none fires on its own.
    began = threading.Event()
    runner.scheduler.add_listener(lambda event: began.set(), EVENT_SCHEDULER_STARTED)
    started = threading.Thread(target=runner.scheduler.start, kwargs={"paused": True})
    started.start()
    try:
        assert began.wait(10)
        with caplog.at_level("INFO", logger="digest.schedule"):
            runner._fire()  # 1 December, 09:00: the cron run for November
            assert len(smtp_server.recorder.messages) == 30
            (job,) = runner.scheduler.get_jobs()
            assert job.id == "held-2026-11"
            assert job.next_run_time == hk(2026, 12, 2, 9, 0)

            # A run a minute early (a restart's catch-up, say) sends none and keeps the one job.
            moment[0] = hk(2026, 12, 2, 8, 59)
            runner._run_month(Month(2026, 11))
            assert len(smtp_server.recorder.messages) == 30
            assert [j.next_run_time for j in runner.scheduler.get_jobs()] == [job.next_run_time]

            # The job's time comes: APScheduler drops a date job as it starts it, then runs it.
            moment[0] = job.next_run_time
            runner.scheduler.remove_job(job.id)
            job.func(*job.args)
            assert runner.scheduler.get_jobs() == []
            runner._run_month(Month(2026, 11))  # and once more: nothing is left to send
    finally:
        runner.scheduler.shutdown(wait=False)
        started.join(10)

    by_recipient = smtp_server.recorder.by_recipient()
    assert sorted(by_recipient) == readers
    assert all(len(got) == 1 for got in by_recipient.values())
    assert [m for m in caplog.messages if m.startswith("2026-11: ")] == [
        "2026-11: sent",
        "2026-11: sending the recipients the daily limit holds at 2026-12-02T09:00:00+08:00",
        "2026-11: held",
        "2026-11: sending the recipients the daily limit holds at 2026-12-02T09:00:00+08:00",
        "2026-11: sent",
        "2026-11: already sent",
    ]
