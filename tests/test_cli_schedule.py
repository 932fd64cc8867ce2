"""`digest schedule` as a real process: it catches up once, never sends twice, stops cleanly."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import Result

from conftest import SmtpServer, finish, wait_for
from digest.months import Month
from digest.send import schedule
from digest.send.ledger import Ledger
from pgserver import PostgreSQL

ROOT = Path(__file__).resolve().parent.parent
HONG_KONG = ZoneInfo("Asia/Hong_Kong")
STATE = Path(".digest/state.sqlite3")
READERS = 11  # the bundled list's subscribers with November 2025 items (see test_cli_send)
Spawn = Callable[..., subprocess.Popen[str]]


def due_month() -> Month:
    """Return the month the bundled schedule's most recent run was for, by the real clock."""
    month = schedule.due_month("0 9 1 * *", HONG_KONG, datetime.now(UTC))
    assert month is not None
    return month


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer) -> Month:
    """The bundled catalogue with its November 2025 items moved to the month now due."""
    for name in ("DIGEST_SMTP_PASSWORD", "DIGEST_STATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    month = due_month()
    text = (ROOT / "items.yaml").read_text(encoding="utf-8")
    text = re.sub(r"date: 2025-11-(\d\d)", lambda m: f"date: {month}-{m[1]}", text)
    (tmp_path / "items.yaml").write_text(text, encoding="utf-8")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    return month


def logged(log: Path, what: str) -> Callable[[], bool]:
    return lambda: what in log.read_text(encoding="utf-8")


def stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> int:
    """Send `signum` and return the exit status, failing if it hangs (no exit within 30 s: a
    guard against a hang, not a speed test; 5 s was missed once with the machine loaded)."""
    proc.send_signal(signum)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"digest schedule did not stop within 30 s of {signal.Signals(signum).name}")


def statuses(tmp_path: Path, month: Month) -> dict[str, str]:
    ledger = Ledger(tmp_path / STATE)
    try:
        return {row.address: row.status for row in ledger.deliveries(str(month))}
    finally:
        ledger.close()


def assert_each_reader_got_one(server: SmtpServer) -> None:
    by_recipient = server.recorder.by_recipient()
    assert len(by_recipient) == READERS
    assert all(len(got) == 1 for got in by_recipient.values())


def test_catches_up_once_and_a_restart_sends_nothing(
    spawn: Spawn, smtp_server: SmtpServer, tmp_path: Path, project: Month
) -> None:
    """Started after the 1st, it sends last month once; started again, it sends nothing more."""
    log = tmp_path / "first.log"
    proc = spawn("schedule", log=log)
    wait_for(logged(log, f"{project}: sent (11 sent"), proc, "the catch-up send")
    assert stop(proc) == 0
    text = log.read_text(encoding="utf-8")
    assert f"{project}: catching up, its run was due while the scheduler was not running" in text
    assert re.search(r"next run at \d{4}-\d\d-01T09:00:00\+08:00", text), text
    assert "stopping (SIGTERM)" in text
    assert text.endswith(" stopped\n")
    assert_each_reader_got_one(smtp_server)

    log = tmp_path / "second.log"
    again = spawn("schedule", log=log)
    wait_for(logged(log, "next run at"), again, "the restart")
    assert stop(again, signal.SIGINT) == 0
    assert f"{project}: nothing to catch up: already sent (the ledger says)" in log.read_text(
        encoding="utf-8"
    )
    assert len(smtp_server.recorder.messages) == READERS


def test_sigterm_mid_send_finishes_the_message_in_flight(
    spawn: Spawn, smtp_server: SmtpServer, tmp_path: Path, project: Month
) -> None:
    """Stopping it mid-send records the message in flight; the next start sends only the rest."""
    smtp_server.recorder.delay = 0.3
    log = tmp_path / "first.log"
    proc = spawn("schedule", log=log)
    wait_for(lambda: len(smtp_server.recorder.messages) >= 3, proc, "3 messages")
    assert stop(proc) == 0
    first = len(smtp_server.recorder.messages)
    assert first < READERS
    left = statuses(tmp_path, project)
    # Nothing is left "in flight": the message being sent was finished and recorded as sent.
    assert sorted(set(left.values())) == ["pending", "sent"]
    assert list(left.values()).count("sent") == first
    assert f"{project}: stopped" in log.read_text(encoding="utf-8")

    smtp_server.recorder.delay = 0
    log = tmp_path / "second.log"
    again = spawn("schedule", log=log)
    wait_for(logged(log, f"{project}: sent ({READERS - first} sent"), again, "the rest")
    assert stop(again) == 0
    assert_each_reader_got_one(smtp_server)


def test_manual_send_first_then_scheduler_sends_nothing(
    spawn: Spawn, smtp_server: SmtpServer, tmp_path: Path, project: Month
) -> None:
    """A staff member's send racing the scheduler's catch-up: one sends, the other reports."""
    smtp_server.recorder.hold = held = threading.Event()
    manual = spawn("send", "--month", str(project), "--yes")
    wait_for(lambda: len(smtp_server.recorder.messages) >= 1, manual, "the manual send")
    log = tmp_path / "schedule.log"
    scheduler = spawn("schedule", log=log)
    wait_for(logged(log, "skipped: another send is running"), scheduler, "the refusal")
    held.set()
    status, out, err = finish(manual)
    assert (status, err) == (
        0,
        "subscribers.csv: imported: 12 added, 0 updated, 0 ended (no longer in the directory).\n",
    )
    assert f"sent {READERS}, already sent 0" in out
    assert stop(scheduler) == 0
    text = log.read_text(encoding="utf-8")
    assert re.search(rf"{project}: retrying the deferred at \S+\+08:00", text), text
    assert_each_reader_got_one(smtp_server)


def test_scheduler_first_then_manual_send_is_refused(
    spawn: Spawn, smtp_server: SmtpServer, tmp_path: Path, project: Month
) -> None:
    """While the scheduler sends a month, `digest send` for it exits 1 naming the scheduler."""
    smtp_server.recorder.hold = held = threading.Event()
    log = tmp_path / "schedule.log"
    scheduler = spawn("schedule", log=log)
    wait_for(lambda: len(smtp_server.recorder.messages) >= 1, scheduler, "the scheduled send")
    status, out, err = finish(spawn("send", "--month", str(project), "--yes"))
    held.set()
    assert (status, out) == (1, "")
    assert re.fullmatch(
        rf"another send of {project} is running \(pid \d+ on .+, digest schedule, since .+\); "
        r"wait for it to finish, or stop it, then run this again\n",
        err,
    )
    wait_for(logged(log, f"{project}: sent ({READERS} sent"), scheduler, "the scheduled send")
    assert stop(scheduler) == 0
    assert len(smtp_server.recorder.messages) == READERS


def test_outbox_run_is_a_rehearsal_and_the_next_start_emails_the_month(
    spawn: Spawn,
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    tmp_path: Path,
    project: Month,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scheduler first run without DIGEST_SMTP_URL must still email the month once it is set."""
    monkeypatch.delenv("DIGEST_SMTP_URL")
    log = tmp_path / "first.log"
    proc = spawn("schedule", "--outbox", log=log)
    wait_for(logged(log, f"{project}: rehearsed ({READERS} written to outbox/"), proc, "outbox")
    assert stop(proc) == 0
    assert len(list((tmp_path / "outbox").iterdir())) == READERS
    assert statuses(tmp_path, project) == {}
    status = run("status")
    assert re.search(
        rf"^Last scheduler decision: {project} rehearsed \({READERS} written to outbox/, none "
        r"emailed\), at .+ HKT \(\+08:00\)\.$",
        status.stdout,
        re.MULTILINE,
    ), status.stdout

    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    log = tmp_path / "second.log"
    again = spawn("schedule", log=log)
    wait_for(logged(log, f"{project}: sent ({READERS} sent"), again, "the emailed send")
    assert stop(again) == 0
    assert_each_reader_got_one(smtp_server)


def test_month_without_items_is_skipped_once(
    spawn: Spawn, run: Callable[..., Result], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """An empty month is logged and recorded as skipped, and a restart does not retry it."""
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")  # nothing in the month now due
    month = due_month()
    log = tmp_path / "first.log"
    proc = spawn("schedule", log=log)
    wait_for(logged(log, f"{month}: skipped: no items"), proc, "the skip")
    assert stop(proc) == 0
    log = tmp_path / "second.log"
    again = spawn("schedule", log=log)
    wait_for(logged(log, "next run at"), again, "the restart")
    assert stop(again) == 0
    assert f"{month}: nothing to catch up: skipped: no items" in log.read_text(encoding="utf-8")
    assert smtp_server.recorder.messages == []
    status = run("status")
    assert re.search(
        rf"^Last scheduler decision: {month} skipped: no items, at .+ HKT \(\+08:00\)\.$",
        status.stdout,
        re.MULTILINE,
    ), status.stdout


def test_dry_run_lists_the_next_five_runs_in_hong_kong_time(
    run: Callable[..., Result], project: Month
) -> None:
    """`digest schedule --dry-run` shows when the digest goes out, in the office's time zone."""
    result = run("schedule", "--dry-run")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        r"Schedule: 0 9 1 \* \* in Asia/Hong_Kong \(now \d{4}-\d\d-\d\d \d\d:\d\d HKT\)\.", lines[0]
    )
    assert lines[1] == (
        f"On start, catching up the missed run: {project.label}: 3 items to 11 subscribers, "
        "as the catalogue stands today"
    )
    assert len(lines) == 7
    for line in lines[2:]:
        assert re.fullmatch(
            r"\d{4}-\d\d-01 09:00 HKT \(\+08:00\)  \w+ \d{4}: no items so far: skip", line
        ), line


def test_bad_cron_line_is_reported_by_check_and_schedule(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    """A schedule that cannot fire is caught by `digest check`, before anyone relies on it."""
    path = tmp_path / "items.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace('"0 9 1 * *"', '"0 9 32 * *"'), encoding="utf-8"
    )
    for command in ("check", "schedule"):
        result = run(command)
        assert result.exit_code == 1, command
        assert result.stderr.startswith(
            "items.yaml: newsletter.schedule: '0 9 32 * *' is not a valid cron line (minute hour "
            "day-of-month month day-of-week): "
        ), result.stderr


def test_a_failed_run_is_logged_and_the_scheduler_keeps_going(
    spawn: Spawn, smtp_server: SmtpServer, tmp_path: Path, project: Month
) -> None:
    """A run that cannot send (a broken subscriber list) is logged with why; the process lives."""
    (tmp_path / "subscribers.csv").write_text("email,name\nnot-an-address,X\n", encoding="utf-8")
    log = tmp_path / "schedule.log"
    proc = spawn("schedule", log=log)
    wait_for(logged(log, "retrying the deferred at"), proc, "the failed run")
    assert proc.poll() is None
    assert stop(proc) == 0
    text = log.read_text(encoding="utf-8")
    assert (
        f"{project}: failed (subscribers.csv:2: email: 'not-an-address' is not an email address"
        in text
    ), text
    assert smtp_server.recorder.messages == []


def test_an_invalid_row_stops_the_run_as_it_stops_send_yes(
    spawn: Spawn, smtp_server: SmtpServer, tmp_path: Path, project: Month
) -> None:
    """Unattended, the scheduler sends nobody the digest of a partial list: it logs each bad row
    and each repeated one with its line, says how to send anyway, and tries again later."""
    with (tmp_path / "subscribers.csv").open("a", encoding="utf-8") as listed:
        listed.write("x@,Someone,\nChan.Taiman@Example.org,Chan again,\n")
    log = tmp_path / "schedule.log"
    proc = spawn("schedule", log=log)
    wait_for(logged(log, "retrying the deferred at"), proc, "the failed run")
    assert stop(proc) == 0
    text = log.read_text(encoding="utf-8")
    assert (
        f"{project}: warning: subscribers.csv:15: email: 'Chan.Taiman@Example.org' is a duplicate "
        "of line 2 (addresses compare case-insensitively); sent once, with line 2's name and "
        "categories\n" in text
    ), text
    assert (
        f"{project}: failed (subscribers.csv:14: email: 'x@' is not an email address: There must "
        "be something after the @-sign.; subscribers.csv: an invalid row, so nothing was sent: "
        "correct it, or send to the valid rows with `digest send --skip-invalid` (the scheduler "
        "tries again on its own, reading the list afresh))\n" in text
    ), text
    assert smtp_server.recorder.messages == []


def test_refuses_to_start_without_a_mail_server(
    run: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer
) -> None:
    """A scheduler with no DIGEST_SMTP_URL would mail nobody: it says so instead of starting."""
    monkeypatch.delenv("DIGEST_SMTP_URL")
    result = run("schedule")
    assert result.exit_code == 1
    assert result.stderr == (
        "DIGEST_SMTP_URL is not set, so the scheduler would only write each month to outbox/ "
        "and nobody would receive the digest; set DIGEST_SMTP_URL to the mail server (see the IT "
        "guide), or start it with --outbox for a rehearsal\n"
    )
    assert smtp_server.recorder.messages == []


def test_outbox_rehearsal_starts_when_asked(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, project: Month
) -> None:
    """`digest schedule --outbox` runs, writing the caught-up month to outbox/."""
    monkeypatch.delenv("DIGEST_SMTP_URL")
    log = tmp_path / "rehearsal.log"
    proc = spawn("schedule", "--outbox", log=log)
    wait_for(logged(log, f"{project}: rehearsed (11 written to outbox/"), proc, "the rehearsal")
    assert stop(proc) == 0
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == READERS


def test_daily_limit_caps_a_scheduled_run_which_resumes_when_it_frees(
    spawn: Spawn,
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    tmp_path: Path,
    project: Month,
) -> None:
    """`daily_limit` in items.yaml caps the scheduler's send as it caps `digest send`; the log
    says how many wait, and when the scheduler sends them, 24 hours after the first went."""
    path = tmp_path / "items.yaml"
    line = "  subscribers: subscribers.csv\n"
    text = path.read_text(encoding="utf-8").replace(line, f"{line}  delivery: {{daily_limit: 5}}\n")
    path.write_text(text, encoding="utf-8")
    before = datetime.now(UTC)
    log = tmp_path / "schedule.log"
    proc = spawn("schedule", log=log)
    wait_for(logged(log, "the daily limit holds at"), proc, "the held run")
    after = datetime.now(UTC)
    assert stop(proc) == 0

    text = log.read_text(encoding="utf-8")
    assert (
        f"{project}: sent (5 sent, 0 already had it, 0 deferred, 0 failed, 6 held by the daily "
        "limit)\n" in text
    ), text
    found = re.search(
        rf"{project}: sending the recipients the daily limit holds at (\S+\+08:00)\n", text
    )
    assert found is not None, text
    resumes = datetime.fromisoformat(found[1])
    assert before + timedelta(hours=24) < resumes <= after + timedelta(hours=24, minutes=1)
    assert len(smtp_server.recorder.messages) == 5
    assert sorted(statuses(tmp_path, project).values()) == ["pending"] * 6 + ["sent"] * 5
    shown = f"{resumes:%Y-%m-%d %H:%M} HKT (+08:00)"
    assert (
        f"Held by the daily limit: {project}: 6 subscribers, until {shown}.\n"
        in run("status").stdout
    )


# -- two schedulers on one PostgreSQL database -----------------------------------------------------


def test_the_standby_takes_over_when_the_active_scheduler_is_killed(
    spawn: Spawn,
    smtp_server: SmtpServer,
    tmp_path: Path,
    project: Month,
    postgresql: PostgreSQL,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two hosts' schedulers on one database: one sends; killed with -9 mid-send, the other
    takes over at once and sends the rest: each reader has the month once (the message in
    flight at the kill again, with the same Message-ID)."""
    url = postgresql.database()
    monkeypatch.setenv("DIGEST_DATABASE_URL", url)
    smtp_server.recorder.hold = held = threading.Event()
    monkeypatch.setenv("DIGEST_STATE", str(tmp_path / "host-a" / "state.sqlite3"))
    first_log = tmp_path / "a.log"
    first = spawn("schedule", log=first_log)
    wait_for(logged(first_log, "role: active: "), first, "the first scheduler to act")
    wait_for(lambda: len(smtp_server.recorder.messages) >= 1, first, "the first message")
    monkeypatch.setenv("DIGEST_STATE", str(tmp_path / "host-b" / "state.sqlite3"))
    second_log = tmp_path / "b.log"
    second = spawn("schedule", log=second_log)
    wait_for(logged(second_log, "is the active scheduler"), second, "the standby", seconds=60)

    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    held.set()  # the reply to the message in flight goes nowhere
    # Within a minute of the kill (the promise; here at the standby's next try, 5 s).
    wait_for(logged(second_log, f"{project}: sent ("), second, "the takeover", seconds=60)
    assert stop(second) == 0

    text = second_log.read_text(encoding="utf-8")
    assert re.search(
        rf"role: standby until this scheduler holds the scheduler lock, as one of the schedulers "
        rf"sharing {re.escape(url)} \(pid {second.pid} on .+, digest schedule\)\n",
        text,
    ), text
    assert re.search(
        rf"standby: pid {first.pid} on .+, digest schedule is the active scheduler; this one "
        r"takes over when it stops \(tried every 5 s\)\n",
        text,
    ), text
    assert re.search(
        rf"taking over from pid {first.pid} on .+, digest schedule, which stopped\n", text
    )
    assert "role: active: this scheduler holds the scheduler lock and sends\n" in text
    assert f"{project}: catching up, its run was due while the scheduler was not running" in text
    by_recipient = smtp_server.recorder.by_recipient()
    assert len(by_recipient) == READERS
    twice = [address for address, got in by_recipient.items() if len(got) > 1]
    assert len(twice) <= 1, twice
    for address in twice:
        assert len({got.message_id for got in by_recipient[address]}) == 1
    with Ledger(tmp_path / "unused", url=url) as ledger:
        assert {row.status for row in ledger.deliveries(str(project))} == {"sent"}


def test_two_schedulers_on_one_sqlite_file_both_act_and_send_the_month_once(
    spawn: Spawn, smtp_server: SmtpServer, tmp_path: Path, project: Month
) -> None:
    """On an SQLite file there is no standby: both act, the log says so, and the month's lock and
    the ledger still send it once."""
    smtp_server.recorder.hold = held = threading.Event()
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = spawn("schedule", log=first_log)
    wait_for(lambda: len(smtp_server.recorder.messages) >= 1, first, "the first send")
    second = spawn("schedule", log=second_log)
    wait_for(logged(second_log, "skipped: another send is running"), second, "the refusal")
    held.set()
    wait_for(logged(first_log, f"{project}: sent ({READERS} sent"), first, "the first send")
    assert stop(first) == 0
    assert stop(second) == 0
    role = (
        "role: active (the state is an SQLite file: another scheduler on the same file would act "
        "too, and each month would still be sent once)\n"
    )
    assert role in first_log.read_text(encoding="utf-8")
    assert role in second_log.read_text(encoding="utf-8")
    assert_each_reader_got_one(smtp_server)
