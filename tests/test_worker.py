"""Several senders: `digest worker` on a shared database, claims with leases, kills, the limits."""

from __future__ import annotations

import random
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import Result

from conftest import Received, SmtpServer, finish
from digest.errors import DeliveryError
from digest.mail import message, newsletter
from digest.months import Month
from digest.publish import catalogue as catalogues
from digest.send import delivery, subscribers
from digest.send.delivery import Sharing
from digest.send.ledger import (
    DEFERRED_LEASE,
    SCHEMA_VERSION,
    Claim,
    Ledger,
    Mark,
    Render,
    Status,
    selection_key,
    stamp,
)
from digest.send.transport import SmtpTransport, parse_url
from helpers import NOW
from pgserver import PostgreSQL

ROOT = Path(__file__).resolve().parent.parent
NOVEMBER = Month(2025, 11)
NOV = str(NOVEMBER)
SEND = ("send", "--month", NOV, "--yes")
ELSEWHERE = "another-host:4242:feedbeef"  # a claimer on another host: never taken as dead here


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled catalogue in tmp_path, and no delivery settings inherited."""
    for name in ("DIGEST_SMTP_URL", "DIGEST_SMTP_PASSWORD", "DIGEST_STATE"):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    return tmp_path


def write_readers(tmp_path: Path, count: int) -> list[str]:
    """Replace the subscriber list with `count` readers of every category; return them."""
    readers = [f"reader{n:04}@example.org" for n in range(count)]
    lines = ["email,name", *(f"{address},Reader {n}" for n, address in enumerate(readers))]
    (tmp_path / "subscribers.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return readers


def sent_by(url: str) -> dict[str, int]:
    """Return how many rows each claimer's process (by pid) has marked sent."""
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT claimer, COUNT(*) FROM deliveries WHERE status = 'sent' GROUP BY claimer"
        ).fetchall()
    counts: dict[str, int] = {}
    for claimer, count in rows:
        pid = str(claimer).split(":")[1]
        counts[pid] = counts.get(pid, 0) + count
    return counts


def claimed_by(tmp_path: Path, pid: int) -> bool:
    """Return whether the process `pid` holds or has sent a row of the SQLite ledger."""
    path = tmp_path / ".digest" / "state.sqlite3"
    if not path.exists():
        return False
    db = sqlite3.connect(path, timeout=5)
    try:
        rows = db.execute("SELECT claimer FROM deliveries WHERE claimer IS NOT NULL").fetchall()
    except sqlite3.OperationalError:  # not made yet
        return False
    finally:
        db.close()
    return any(str(claimer).split(":")[1] == str(pid) for (claimer,) in rows)


def statuses(url: str) -> dict[str, str]:
    """Return every November row's status, by recipient."""
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT recipient, status FROM deliveries WHERE month = %s", (NOV,)
        ).fetchall()
    return dict(rows)


def wait_long(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    """Poll until `condition` holds; fail (not hang) if `proc` ends first or 120 s pass.

    Five processes share two cores here: a send of 2,000 takes tens of seconds when loaded.
    """
    deadline = time.monotonic() + 120
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"digest exited {proc.returncode} before {what}:\n{out}{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_four_workers_two_killed_send_each_reader_once(
    postgresql: PostgreSQL,
    smtp_server: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    """Two of four workers killed with -9 mid-send: each reader one copy, but for one per kill."""
    readers = write_readers(tmp_path, 2000)
    url = postgresql.database()
    monkeypatch.setenv("DIGEST_DATABASE_URL", url)
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    seed = random.SystemRandom().randrange(1_000_000)
    record_property("seed", seed)
    rng = random.Random(seed)  # noqa: S311 -- where the kills land, not secrets
    # One connection each: at most one message's content is in flight in a process at a kill.
    common = ("--connections", "1", "--lease", "5", "--poll", "0.1", "--batch", "20")
    workers = [spawn("worker", "--forever", *common) for _ in range(4)]
    sender = spawn(*SEND, "--connections", "1")
    recorder = smtp_server.recorder
    kills = []
    victims = zip(rng.sample(range(4), 2), sorted(rng.sample(range(300, 1500), 2)), strict=True)
    for victim, at in victims:
        proc = workers[victim]
        pid = str(proc.pid)
        wait_long(lambda: len(recorder.messages) >= at, proc, f"{at} messages")  # noqa: B023
        wait_long(lambda: sent_by(url).get(pid, 0) > 0, proc, "its first message")  # noqa: B023
        time.sleep(rng.random() * 0.05)  # anywhere in its dialogue with the server
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        kills.append((victim, len(recorder.messages)))
        workers[victim] = spawn("worker", "--forever", *common)
    record_property("kills", kills)

    out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, out + err
    deadline = time.monotonic() + 60
    while set(statuses(url).values()) != {"sent"}:  # the killed workers' claims run out first
        assert time.monotonic() < deadline, statuses(url)
        time.sleep(0.05)
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
        code, out, err = finish(proc)
        assert code == 0, out + err

    by_recipient = recorder.by_recipient()
    assert sorted(by_recipient) == sorted(readers)
    twice = {address: got for address, got in by_recipient.items() if len(got) > 1}
    record_property("duplicates", sorted(twice))
    assert len(twice) <= len(kills), sorted(twice)
    for got in twice.values():
        assert len(got) == 2
        assert got[0].message_id == got[1].message_id
    # The ledger and the server agree: everyone sent, and the work was shared.
    assert statuses(url) == dict.fromkeys(readers, "sent")
    shares = sent_by(url)
    record_property("shares", shares)
    assert len(shares) >= 5, shares  # the send and the four first workers each sent some


def test_workers_once_and_forever_share_a_send_on_sqlite(
    smtp_server: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A --forever worker waits for the send and then for the next; a --once one ends with it."""
    readers = write_readers(tmp_path, 120)
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    recorder = smtp_server.recorder
    recorder.hold = hold = threading.Event()  # replies wait until both workers hold rows
    options = ("--poll", "0.1", "--connections", "1", "--batch", "10")
    waiting = spawn("worker", "--forever", *options)
    sender = spawn(*SEND, "--connections", "1")  # claims 100 at a time: 20 left to share
    wait_long(lambda: claimed_by(tmp_path, waiting.pid), waiting, "the first worker's claim")
    once = spawn("worker", "--once", *options)
    wait_long(lambda: claimed_by(tmp_path, once.pid), once, "the second worker's claim")
    hold.set()

    out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, out + err
    code, out_once, err = finish(once)
    assert (code, err) == (0, "")
    assert waiting.poll() is None  # the send is done: it waits for the next
    waiting.send_signal(signal.SIGTERM)
    code, out_waiting, err = finish(waiting)
    assert code == 0, err
    via = re.escape(smtp_server.url)
    # Each says its own part and how many the others sent meanwhile: no one reads "sent 60" of a
    # send of 120 as 60 missing.
    line = r"November 2025: sent ([1-9]\d*) \((\d+) more by other senders\), already sent (\d+), "
    line += rf"deferred 0, failed 0 \(via {via}\).\n"
    for said in (out_once, out_waiting, out.splitlines(keepends=True)[-1]):
        found = re.fullmatch(line, said)
        assert found, said
        own, others, already = (int(n) for n in found.groups())
        assert own + others + already == len(readers), said
    assert sorted(recorder.by_recipient()) == sorted(readers)
    assert len(recorder.messages) == len(readers)


def test_worker_once_with_no_send_in_progress_says_so(run: Callable[..., Result]) -> None:
    """A worker started when nothing is being sent exits at once and says why."""
    done = run("worker", "--once")
    assert (done.exit_code, done.stdout, done.stderr) == (
        0,
        "No send in progress: nothing to do.\n",
        "",
    )


def test_worker_without_a_mail_server_refuses_to_join(
    run: Callable[..., Result], smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker host missing DIGEST_SMTP_URL says so instead of writing files nobody reads."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    assert run(*SEND, "--daily-limit", "3").exit_code == 0  # 8 readers left to do
    monkeypatch.delenv("DIGEST_SMTP_URL")
    refused = run("worker", "--once")
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"a send of {NOV} is in progress on .digest/state.sqlite3, and DIGEST_SMTP_URL is not set "
        "here: a worker sends only through the mail server. Set DIGEST_SMTP_URL (and its "
        "password) as on the host that started the send\n"
    )


# -- what a joining worker sends: the sender's frozen issue ---------------------------------------

TITLE = "HKUST Commences Preparations for New Medical School"  # a November 2025 item's


def undated(received: list[Received]) -> dict[str, bytes]:
    """Return each recipient's one message as sent, but for its Date line (the moment it went)."""
    got: dict[str, bytes] = {}
    for one in received:
        (recipient,) = one.rcpt_tos
        assert recipient not in got, f"{recipient} was sent two messages"
        got[recipient] = re.sub(rb"(?m)^Date: [^\r\n]*\r?\n", b"", one.data, count=1)
    return got


def sent_alone(run: Callable[..., Result], smtp_server: SmtpServer, tmp_path: Path) -> dict:
    """Send November to the whole list by one process, on a ledger of its own: what each gets."""
    assert run(*SEND, "--state", str(tmp_path / "alone" / "state.sqlite3")).exit_code == 0
    alone = undated(smtp_server.recorder.messages)
    smtp_server.recorder.messages.clear()
    return alone


def begin_shared(
    run: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, database_url: str | None
) -> None:
    """Begin November's send on the test's engine, 3 readers sent and 8 left for the workers."""
    if database_url is not None:
        monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    begun = run(*SEND, "--daily-limit", "3")
    assert begun.exit_code == 0, begun.stderr


def test_a_joining_worker_sends_the_frozen_issue_byte_for_byte(
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str | None,
) -> None:
    """A worker joining after an item was edited sends each reader the sender's own message."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    alone = sent_alone(run, smtp_server, tmp_path)
    begin_shared(run, monkeypatch, database_url)
    path = tmp_path / "items.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(TITLE, "Medical School: Day One"))

    joined = run("worker", "--once")

    assert (joined.exit_code, joined.stderr) == (0, ""), joined.stdout
    assert joined.stdout.startswith("November 2025: sent 8, already sent 3, ")
    shared = undated(smtp_server.recorder.messages)
    assert len(shared) == len(alone) == 11
    assert shared == alone  # Message-IDs, subjects, bodies: the issue frozen before the edit
    assert all(TITLE.encode() in data for data in shared.values() if b"Medical" in data)


def test_a_joining_worker_renders_nothing_the_sender_froze(
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str | None,
) -> None:
    """Templates broken mid-send stop no worker: it sends the renderings frozen at the start."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    alone = sent_alone(run, smtp_server, tmp_path)
    begin_shared(run, monkeypatch, database_url)
    templates = tmp_path / "newsletter_templates"
    templates.mkdir()
    (templates / "digest.html.j2").write_text("{% if %}\n", encoding="utf-8")  # cannot render
    (templates / "digest.txt.j2").write_text("{% if %}\n", encoding="utf-8")
    assert run("render", "--month", NOV).exit_code == 1  # as anything that renders would be

    joined = run("worker", "--once")

    assert (joined.exit_code, joined.stderr) == (0, ""), joined.stdout
    assert undated(smtp_server.recorder.messages) == alone
    with Ledger(tmp_path / ".digest" / "state.sqlite3", url=database_url) as ledger:
        assert ledger.open_sends() == []  # all sent: the worker closed the send


def test_a_worker_finishes_a_send_whose_month_lost_its_items(
    run: Callable[..., Result], smtp_server: SmtpServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Items redated out of the month after sending began: the rest still get the frozen issue."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    alone = sent_alone(run, smtp_server, tmp_path)
    begin_shared(run, monkeypatch, None)
    path = tmp_path / "items.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("date: 2025-11-", "date: 2025-09-"), encoding="utf-8")

    joined = run("worker", "--once")

    assert (joined.exit_code, joined.stderr) == (0, ""), joined.stdout
    assert joined.stdout.startswith("November 2025: sent 8, already sent 3, ")
    assert undated(smtp_server.recorder.messages) == alone


# -- claims and leases, on both engines --------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> catalogues.Catalogue:
    return catalogues.load(ROOT / "items.yaml")


@pytest.fixture(scope="module")
def listed(bundled: catalogues.Catalogue) -> subscribers.SubscriberList:
    slugs = [c.slug for c in bundled.publication.categories]
    return subscribers.load(ROOT / "subscribers.csv", slugs)


@pytest.fixture
def ledger(open_ledger: Callable[..., Ledger]) -> Iterator[Ledger]:
    opened = open_ledger()
    yield opened
    opened.close()


def plan_of(
    bundled: catalogues.Catalogue, listed: subscribers.SubscriberList, ledger: Ledger
) -> delivery.Send:
    plan = delivery.prepare(bundled, listed, NOVEMBER, ledger, NOW)
    assert plan is not None
    return plan


class Clock:
    """A clock that moves only when a pause says so: lease expiry without waiting for it."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.paused: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def pause(self, seconds: float) -> None:
        self.paused.append(seconds)
        self.now += timedelta(seconds=seconds)


def run_plan(plan: delivery.Send, server: SmtpServer, clock: Clock, **options: Any) -> Any:
    sharing = Sharing(
        claimer=options.pop("claimer", "this-host:1:aaaa"), lease=60, poll=5, batch=4,
        pause=clock.pause,
    )  # fmt: skip
    options.setdefault("sleep", lambda seconds: None)
    transport = SmtpTransport(parse_url(server.url))
    return plan.execute(transport, clock=clock, sharing=sharing, **options)


def test_a_joining_worker_renders_only_a_selection_never_frozen(
    bundled: catalogues.Catalogue, listed: subscribers.SubscriberList, ledger: Ledger
) -> None:
    """A reader whose selection was never frozen gets it rendered; an edited issue refuses it."""
    delivery.prepare(bundled, listed, NOVEMBER, ledger, NOW)  # the sender: frozen and enrolled
    issue = newsletter.issue(bundled, NOVEMBER, NOW)
    chosen = frozenset({issue.sections[-1].category.slug})
    selection = selection_key(chosen)
    assert ledger.render(NOV, selection) is None  # no reader of the list chose just that
    # Enrolled by a send that stopped before it rendered their selection.
    new = subscribers.Subscriber("new@example.org", "New Reader", chosen, 99)
    everyone = subscribers.SubscriberList((*listed.subscribers, new))
    ledger.enrol(NOV, [(new.key, new.email, new.name, selection)])

    plan = delivery.join(bundled, everyone, NOVEMBER, ledger, NOW)

    assert plan is not None
    assert len(plan.todo) == 12
    assert not plan.changed
    made = newsletter.Renderer(bundled).render(issue, chosen)
    assert plan.renders[selection] == Render(made.subject, made.html, made.text)
    for kept in {row.selection for row in plan.todo} - {selection}:
        assert plan.renders[kept] == ledger.render(NOV, kept)
    text = bundled.path.read_text(encoding="utf-8").replace(TITLE, "Medical School: Day One")
    edited = catalogues.parse(text.encode(), bundled.path, "items.yaml")
    with pytest.raises(DeliveryError, match="changed after sending began"):
        delivery.join(edited, everyone, NOVEMBER, ledger, NOW)
    assert delivery.join(edited, listed, NOVEMBER, ledger, NOW) is not None  # all frozen


def test_a_live_claim_is_skipped_and_an_expired_one_taken(ledger: Ledger) -> None:
    """Two senders never hold one recipient at once; a dead one's rows go on after its lease."""
    rows = [(f"r{n}@example.org", f"r{n}@example.org", None, "*") for n in range(4)]
    ledger.enrol(NOV, rows)
    everyone = [r[0] for r in rows]
    first = Claim("a:1:x", stamp(NOW + timedelta(seconds=60)))
    assert [row.recipient for row in ledger.claim(NOV, everyone[:3], first, NOW)] == everyone[:3]
    second = Claim("b:2:y", stamp(NOW + timedelta(seconds=70)))
    assert [row.recipient for row in ledger.claim(NOV, everyone, second, NOW)] == everyone[3:]
    later = NOW + timedelta(seconds=61)
    taken = ledger.claim(NOV, everyone, Claim("b:2:y", stamp(later + timedelta(60))), later)
    assert [row.recipient for row in taken] == everyone  # the expired three, and its own
    # The first sender, back from a lost network, can no longer mark what it lost.
    assert ledger.record(NOV, [Mark(everyone[0], Status.SENDING, True)], claim=first) == {
        everyone[0]
    }
    assert ledger.leases(NOV)[everyone[0]][:2] == ("pending", "b:2:y")


def test_a_deferred_row_waits_for_the_send_to_open_again(ledger: Ledger) -> None:
    """A recipient deferred in a send is not retried by every other worker until it is reopened."""
    ledger.enrol(NOV, [("r@example.org", "r@example.org", None, "*")])
    claim = Claim("a:1:x", stamp(NOW + timedelta(seconds=60)))
    assert ledger.claim(NOV, ["r@example.org"], claim, NOW)
    ledger.record(NOV, [Mark("r@example.org", Status.DEFERRED, True, 451, "later")], claim=claim)
    assert ledger.leases(NOV)["r@example.org"] == ("deferred", "a:1:x", DEFERRED_LEASE)
    much_later = NOW + timedelta(days=2)
    other = Claim("b:2:y", stamp(much_later))
    assert ledger.claim(NOV, ["r@example.org"], other, much_later) == []
    ledger.open_send(NOV, "digest send", much_later)
    assert [r.status for r in ledger.claim(NOV, ["r@example.org"], other, much_later)] == [
        "deferred"
    ]


def test_rows_of_a_killed_sender_go_again_after_its_lease_with_the_same_message_id(
    bundled: catalogues.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
    smtp_server: SmtpServer,
) -> None:
    """A sender killed mid-message: after its lease another sends its rows, the Message-ID kept."""
    plan = plan_of(bundled, listed, ledger)
    dead, claimed = plan.todo[0], plan.todo[:3]
    lease = Claim(ELSEWHERE, stamp(NOW + timedelta(seconds=60)))
    assert len(ledger.claim(NOV, [row.recipient for row in claimed], lease, NOW)) == 3
    ledger.record(NOV, [Mark(dead.recipient, Status.SENDING, True)], claim=lease)  # DATA went
    clock = Clock(NOW + timedelta(seconds=1))

    summary = run_plan(plan, smtp_server, clock)

    got = smtp_server.recorder.by_recipient()
    assert sorted(got) == sorted(row.address for row in plan.todo)
    assert all(len(messages) == 1 for messages in got.values())
    # The others first; then it waited, polling, until the dead sender's lease ran out.
    assert [o.address for o in summary.outcomes][-3:] == [row.address for row in claimed]
    assert 59 <= sum(clock.paused) <= 65
    assert [o.address for o in summary.outcomes if o.again] == [dead.address]
    expected = message.message_id(bundled.publication, NOVEMBER, dead.address, dead.copy)
    assert got[dead.address][0].message_id == expected
    assert summary.resent == 1
    assert ledger.open_sends() == []  # nothing left to do: the send is closed


def test_a_sender_whose_lease_was_taken_stops_sending(
    bundled: catalogues.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
    open_ledger: Callable[..., Ledger],
    smtp_server: SmtpServer,
) -> None:
    """A worker cut off past its lease finds its rows taken and sends none of them."""
    plan = plan_of(bundled, listed, ledger)
    other = open_ledger()
    everyone = [row.recipient for row in plan.todo]
    far = NOW + timedelta(hours=1)

    def taken(outcome: delivery.Outcome) -> None:
        if outcome.address == plan.todo[0].address:  # as if it stalled past its lease here
            other.claim(NOV, everyone, Claim(ELSEWHERE, stamp(far + timedelta(60))), far)

    summary = run_plan(plan, smtp_server, Clock(NOW), connections=1, progress=taken)
    other.close()

    assert 1 <= summary.sent <= 2  # the first, and the one whose DATA was already going
    assert len(smtp_server.recorder.messages) == summary.sent
    leases = ledger.leases(NOV)
    assert {leases[r][1] for r in everyone[summary.sent :]} == {ELSEWHERE}


def test_the_daily_limit_holds_for_two_workers_together(
    bundled: catalogues.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
    open_ledger: Callable[..., Ledger],
    smtp_server: SmtpServer,
) -> None:
    """Two workers sharing a send with a daily limit of 5 send 5 between them, not 10."""
    plans = [plan_of(bundled, listed, ledger), plan_of(bundled, listed, open_ledger())]
    summaries: list[Any] = []

    def work(plan: delivery.Send, name: str) -> None:
        summaries.append(run_plan(plan, smtp_server, Clock(NOW), claimer=name, daily_limit=5))

    threads = [
        threading.Thread(target=work, args=(plan, f"host:{n}:w")) for n, plan in enumerate(plans)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    plans[1].ledger.close()
    assert len(smtp_server.recorder.messages) == 5
    assert sum(s.sent for s in summaries) == 5
    assert {s.held for s in summaries} == {11 - 5}
    assert ledger.accepted_since(NOW - timedelta(hours=24)) == 5


def test_the_rate_is_one_pace_for_every_worker(
    ledger: Ledger, open_ledger: Callable[..., Ledger]
) -> None:
    """Starts reserved by two workers interleave at the rate's pace, never side by side."""
    ledger.open_send(NOV, "digest send", NOW)
    other = open_ledger()
    try:
        first = ledger.take_slots(NOV, 3, 0.5, 1000.0)
        second = other.take_slots(NOV, 2, 0.5, 1000.2)
        third = ledger.take_slots(NOV, 1, 0.5, 1005.0)  # the pace had fallen behind: now
    finally:
        other.close()
    assert (first, second, third) == (1000.0, 1001.5, 1005.0)
    assert ledger.take_slots("2025-10", 1, 0.5, 1000.0) is None  # no shared send of that month


def test_a_version_5_ledger_gains_claims(tmp_path: Path) -> None:
    """Opening a ledger from before several senders keeps its rows and can share them."""
    path = tmp_path / "state.sqlite3"
    with Ledger(path) as ledger:
        ledger.enrol(NOV, [("r@example.org", "r@example.org", None, "*")])
    db = sqlite3.connect(path)
    db.execute("DROP TABLE sends")
    db.execute("ALTER TABLE deliveries DROP COLUMN claimer")
    db.execute("ALTER TABLE deliveries DROP COLUMN lease_until")
    db.execute("PRAGMA user_version=5")
    db.commit()
    db.close()
    with Ledger(path) as ledger:
        claim = Claim("a:1:x", stamp(NOW + timedelta(seconds=60)))
        assert [r.recipient for r in ledger.claim(NOV, ["r@example.org"], claim, NOW)] == [
            "r@example.org"
        ]
        ledger.open_send(NOV, "digest send", NOW)
        assert ledger.open_sends() == [NOV]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    db.close()


def test_marks_naming_a_row_twice_are_the_claimers_too(ledger: Ledger) -> None:
    """Two marks of one row in one commit (sending, then sent) obey the claim as one mark does."""
    ledger.enrol(NOV, [("r@example.org", "r@example.org", None, "*")])
    mine = Claim("a:1:x", stamp(NOW + timedelta(seconds=60)))
    assert ledger.claim(NOV, ["r@example.org"], mine, NOW)
    twice = [Mark("r@example.org", Status.SENDING, True), Mark("r@example.org", Status.SENT)]
    assert ledger.record(NOV, twice, claim=Claim("b:2:y", mine.until)) == {"r@example.org"}
    assert ledger.leases(NOV)["r@example.org"] == ("pending", "a:1:x", mine.until)
    assert ledger.record(NOV, twice, claim=mine) == set()
    assert ledger.leases(NOV)["r@example.org"] == ("sent", "a:1:x", None)


def test_a_dead_sender_on_this_host_is_not_waited_for(
    bundled: catalogues.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
    smtp_server: SmtpServer,
) -> None:
    """A killed send on this machine leaves nothing to wait a lease for: the rerun takes it all."""
    plan = plan_of(bundled, listed, ledger)
    gone = subprocess.Popen(["true"])
    gone.wait()
    place = delivery.claimer_name().partition(":")[0]  # this host and its PID namespace
    dead = Claim(f"{place}:{gone.pid}:0000", stamp(NOW + timedelta(seconds=60)))
    assert len(ledger.claim(NOV, [row.recipient for row in plan.todo], dead, NOW)) == 11
    clock = Clock(NOW)

    summary = run_plan(plan, smtp_server, clock)

    assert summary.sent == 11
    assert clock.paused == []  # its rows were freed at the first look, not after its lease


def test_a_claim_refused_for_a_lock_stops_the_send_cleanly(
    bundled: catalogues.Catalogue,
    listed: subscribers.SubscriberList,
    tmp_path: Path,
    smtp_server: SmtpServer,
) -> None:
    """A ledger another program keeps locked when the first batch is claimed sends nobody."""
    path = tmp_path / "locked" / "state.sqlite3"
    ledger = Ledger(path, busy_timeout=0.3)
    plan = plan_of(bundled, listed, ledger)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(delivery.Halted) as stopped:
            run_plan(plan, smtp_server, Clock(NOW))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (stopped.value.left, stopped.value.summary.sent) == (11, 0)
    assert str(stopped.value).startswith("Stopped: 11 subscribers not sent yet, because ")
    assert smtp_server.recorder.messages == []
    assert {row.status for row in ledger.deliveries(NOV)} == {Status.PENDING}
    ledger.close()


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("--lease", "0", "0.0 is not in the range x>=1."),
        ("--batch", "0", "0 is not in the range 1<=x<=1000."),
        ("--poll", "0", "0.0 is not in the range x>=0.05."),
    ],
)
def test_worker_options_out_of_range_are_usage_errors(
    run: Callable[..., Result], option: str, value: str, why: str
) -> None:
    """A lease, batch or poll that would make a worker spin or never hold a row is refused."""
    done = run("worker", option, value)
    assert done.exit_code == 2
    assert done.stderr.endswith(f"Error: Invalid value for '{option}': {why}\n")


def test_a_refused_send_leaves_no_send_open_for_workers(
    bundled: catalogues.Catalogue, listed: subscribers.SubscriberList, ledger: Ledger
) -> None:
    """A send refused for an issue changed since it was frozen opens nothing workers would join:
    each would render the missing selection, be refused in turn, and exit (a `--forever` one
    too)."""
    delivery.prepare(bundled, listed, NOVEMBER, ledger, NOW)  # frozen, enrolled, opened
    ledger.close_send(NOV, NOW)  # sent, say, and closed
    issue = newsletter.issue(bundled, NOVEMBER, NOW)
    chosen = frozenset({issue.sections[-1].category.slug})
    new = subscribers.Subscriber("new@example.org", "New Reader", chosen, 99)
    everyone = subscribers.SubscriberList((*listed.subscribers, new))
    text = bundled.path.read_text(encoding="utf-8").replace(TITLE, "Medical School: Day One")
    edited = catalogues.parse(text.encode(), bundled.path, "items.yaml")

    with pytest.raises(DeliveryError, match="changed after sending began"):
        delivery.prepare(edited, everyone, NOVEMBER, ledger, NOW)

    assert ledger.open_sends() == []
    delivery.prepare(bundled, everyone, NOVEMBER, ledger, NOW)  # the catalogue restored
    assert ledger.open_sends() == [NOV]
