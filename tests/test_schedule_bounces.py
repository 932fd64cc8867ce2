"""The scheduler reads the bounce mailbox every 15 minutes; a failed read never stops it."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_SCHEDULER_STARTED

from digest.errors import DigestError
from digest.months import Month
from digest.send import schedule

HONG_KONG = ZoneInfo("Asia/Hong_Kong")
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=HONG_KONG)


def no_send(month: Month, stop: threading.Event) -> schedule.Outcome:
    """A send the polling tests never reach."""
    raise AssertionError("the polling tests send nothing")


@pytest.fixture
def started() -> Iterator[Callable[[Callable[[], str] | None], schedule.Scheduler]]:
    """Start a scheduler paused, in a thread, with the given poll: no job fires on its own."""
    runners: list[tuple[schedule.Scheduler, threading.Thread]] = []

    def start(poll: Callable[[], str] | None) -> schedule.Scheduler:
        runner = schedule.Scheduler("0 9 1 * *", HONG_KONG, no_send, lambda m: None, lambda: NOW,
                                    poll=poll)  # fmt: skip
        began = threading.Event()
        runner.scheduler.add_listener(lambda event: began.set(), EVENT_SCHEDULER_STARTED)
        thread = threading.Thread(target=runner.scheduler.start, kwargs={"paused": True})
        thread.start()
        assert began.wait(10)
        runners.append((runner, thread))
        return runner

    yield start
    for runner, thread in runners:
        runner.scheduler.shutdown(wait=False)
        thread.join(10)


def test_the_bounce_mailbox_is_read_every_15_minutes(
    started: Callable[[Callable[[], str] | None], schedule.Scheduler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a bounce source configured, bounces must be read four times an hour, unattended."""
    reads: list[int] = []

    def poll() -> str:
        reads.append(1)
        return "2 messages: 1 hard bounce, 1 left where it was"

    runner = started(poll)
    with caplog.at_level("INFO", logger="digest.schedule"):
        runner._add_poll()
        (job,) = runner.scheduler.get_jobs()
        assert job.id == schedule.POLL_ID
        assert job.trigger.start_date == NOW + timedelta(minutes=15)  # the first, then each 15
        assert job.trigger.interval == timedelta(minutes=15)
        job.func()
    assert reads == [1]
    assert caplog.messages == [
        "reading bounces every 15 minutes",
        "bounces: 2 messages: 1 hard bounce, 1 left where it was",
    ]


def test_a_failed_read_is_logged_and_the_next_goes_ahead(
    started: Callable[[Callable[[], str] | None], schedule.Scheduler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A mailbox that is down must not stop the monthly send, and staff must read why in the log."""
    answers = [DigestError("imaps://bounces@127.0.0.1:1/INBOX: cannot connect"), "0 messages"]

    def poll() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    runner = started(poll)
    runner._add_poll()
    with caplog.at_level("INFO", logger="digest.schedule"):
        runner._poll()
        runner._poll()
    assert caplog.messages == [
        "bounces: failed: imaps://bounces@127.0.0.1:1/INBOX: cannot connect (tried again in 15 "
        "minutes)",
        "bounces: 0 messages",
    ]
    assert [job.id for job in runner.scheduler.get_jobs()] == [schedule.POLL_ID]


def test_without_a_bounce_source_nothing_is_polled(
    started: Callable[[Callable[[], str] | None], schedule.Scheduler],
) -> None:
    """Without DIGEST_BOUNCE_SOURCE the scheduler must only send, as before."""
    runner = started(None)
    runner._add_poll()
    assert runner.scheduler.get_jobs() == []


@pytest.mark.parametrize("written", ["absolute", "relative"])
def test_a_scheduled_read_records_the_bounces_of_the_configured_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    """The scheduler's read must do what `digest bounces` does, and log one summary line. A
    relative maildir: in DIGEST_BOUNCE_SOURCE is beside the catalogue, like every path the
    environment names, wherever the scheduler was started."""
    from digest.app import bounces, settings
    from digest.send.ledger import Ledger
    from digest.send.store import Store, SubscriberStatus
    from test_cli_bounces import dsn, maildir_with

    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "items.yaml", tmp_path / "items.yaml")
    box = tmp_path / "Maildir"
    maildir_with(box, [dsn("bounces@example.edu", "gone@example.org", "5.1.1", name="x")])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    source = f"maildir:{box}" if written == "absolute" else "maildir:Maildir"
    found = settings.load(tmp_path / "items.yaml", {"DIGEST_BOUNCE_SOURCE": source})
    with Ledger(found.state_path) as ledger:
        from digest.send import store

        Store(ledger).change(
            lambda r: store.add(r, "gone@example.org", None, None, "ada", NOW), NOW
        )
    line = bounces.scheduled(found, NOW)
    assert line == (
        "1 message (1 hard bounce): 1 new report recorded, 1 subscription was ended, "
        "0 messages left where they were."
    )
    with Ledger(found.state_path) as ledger:
        row = Store(ledger).get("gone@example.org")
    assert row is not None
    assert row.status is SubscriberStatus.BOUNCED
