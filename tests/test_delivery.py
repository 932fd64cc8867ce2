"""Delivery against a real SMTP server: everyone gets the digest once, whatever the server does."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import re
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import lxml.html
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Recorder, SmtpServer, free_port, greet, smtp_serving
from digest.errors import DeliveryError, LedgerBusyError
from digest.mail import message, newsletter
from digest.months import Month
from digest.publish import catalogue
from digest.send import delivery, subscribers
from digest.send.ledger import Delivery, Ledger, Mark, RunKind, Status
from digest.send.transport import (
    Connection,
    Fatal,
    OutboxTransport,
    SmtpTransport,
    Transport,
    parse_url,
)
from helpers import NOW, snapshot

ROOT = Path(__file__).resolve().parent.parent
NOVEMBER = Month(2025, 11)
KEY = str(NOVEMBER)
FAST = delivery.RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
EVERY_SECTION = ["Institutional Advancement", "Engagement", "Collaboration"]
ORIGINAL_TITLE = "HKUST Commences Preparations for New Medical School"
NEW_TITLE = "HKUST Begins Work on a New Medical School"
ORIGINAL_SUBJECT = "What's Happening — November 2025"


@pytest.fixture(scope="module")
def bundled() -> catalogue.Catalogue:
    return catalogue.load(ROOT / "items.yaml")


def declared(cat: catalogue.Catalogue) -> list[str]:
    return [c.slug for c in cat.publication.categories]


@pytest.fixture(scope="module")
def listed(bundled: catalogue.Catalogue) -> subscribers.SubscriberList:
    return subscribers.load(ROOT / "subscribers.csv", declared(bundled))


@pytest.fixture(scope="module")
def readers(listed: subscribers.SubscriberList) -> list[subscribers.Subscriber]:
    """The 11 subscribers with something to read in November (not smith.john)."""
    chosen = [s for s in listed.subscribers if s.email != "smith.john@example.org"]
    assert len(chosen) == 11
    return chosen


@pytest.fixture
def ledger(open_ledger: Callable[..., Ledger]) -> Iterator[Ledger]:
    """A new ledger, on each engine (tests/conftest.py `database_url`)."""
    opened = open_ledger()
    yield opened
    opened.close()


def smtp(server: SmtpServer) -> SmtpTransport:
    return SmtpTransport(parse_url(server.url))


def prepare(
    cat: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
    *,
    resend: bool = False,
) -> delivery.Send:
    plan = delivery.prepare(cat, listed, NOVEMBER, ledger, NOW, resend=resend)
    assert plan is not None
    return plan


def execute(plan: delivery.Send, transport: Transport, **options: Any) -> delivery.Summary:
    """Run the plan with the fast policy and no real waiting, unless told otherwise."""
    options.setdefault("policy", FAST)
    options.setdefault("sleep", lambda seconds: None)
    return plan.execute(transport, clock=lambda: NOW, **options)


def statuses(ledger: Ledger) -> dict[str, str]:
    return {row.address: row.status for row in ledger.deliveries(KEY)}


def row_of(ledger: Ledger, address: str) -> Delivery:
    (row,) = [r for r in ledger.deliveries(KEY) if r.address == address]
    return row


def counts(server: SmtpServer) -> dict[str, int]:
    return {rcpt: len(got) for rcpt, got in server.recorder.by_recipient().items()}


def headings(email: EmailMessage) -> list[str]:
    part = email.get_body(preferencelist=("html",))
    assert part is not None
    found = re.findall(r"<h2[^>]*>(.*?)</h2>", part.get_content(), flags=re.DOTALL)
    return [html.unescape(h.strip()) for h in found]


def body_text(email: EmailMessage) -> str:
    part = email.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def body_html(email: EmailMessage) -> str:
    part = email.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def expected_id(cat: catalogue.Catalogue, address: str) -> str:
    return message.message_id(cat.publication, NOVEMBER, address)


def stop_after(count: int) -> tuple[threading.Event, Callable[[delivery.Outcome], None]]:
    """Return a stop event and a progress callback that sets it after `count` outcomes."""
    stop = threading.Event()
    seen: list[delivery.Outcome] = []

    def progress(outcome: delivery.Outcome) -> None:
        seen.append(outcome)
        if len(seen) == count:
            stop.set()

    return stop, progress


# -- a complete send -----------------------------------------------------------------------------


def test_everyone_gets_one_personal_copy(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """Each reader gets exactly one digest, addressed and greeted by name, with their sections."""
    plan = prepare(bundled, listed, ledger)
    assert (len(plan.todo), plan.already, plan.without_items, plan.in_flight) == (11, 0, 1, 0)
    assert (plan.subject, plan.items, plan.changed) == (ORIGINAL_SUBJECT, 3, False)

    summary = execute(plan, smtp(smtp_server))

    assert (summary.sent, summary.already, summary.deferred, summary.failed) == (11, 0, 0, 0)
    assert summary.resent == 0
    assert summary.ok
    received = smtp_server.recorder.messages
    assert len(received) == 11
    assert [r.rcpt_tos for r in received] == [[s.email] for s in readers]
    assert {r.mail_from for r in received} == {"provost@example.edu"}
    assert set(statuses(ledger).values()) == {"sent"}
    assert [r.address for r in ledger.deliveries(KEY)] == [s.email for s in readers]
    assert {(r.attempts, r.last_code, r.last_reply) for r in ledger.deliveries(KEY)} == {
        (1, 250, "accepted")
    }

    by_address = {r.rcpt_tos[0]: r.message for r in received}
    for reader in readers:
        email = by_address[reader.email]
        assert email.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in email.iter_parts()] == ["text/plain", "text/html"]
        (to,) = email["To"].addresses
        assert (to.display_name, to.addr_spec) == (reader.name, reader.email)
        assert email["Message-ID"] == expected_id(bundled, reader.email)
        assert email["Subject"] == ORIGINAL_SUBJECT
        assert email["Date"] == format_datetime(NOW)
        assert f"Dear {reader.name}," in body_text(email)
        assert html.escape(f"Dear {reader.name},", quote=False) in body_html(email)

    assert headings(by_address["chan.taiman@example.org"]) == EVERY_SECTION
    assert headings(by_address["cheung.mei@example.org"]) == ["Institutional Advancement"]
    assert headings(by_address["lam.wingsze@example.org"]) == ["Engagement"]
    assert headings(by_address["tsang.hiuyan@example.org"]) == ["Collaboration"]
    assert "smith.john@example.org" not in counts(smtp_server)


def test_second_run_sends_nothing(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """Running the send again after a complete send never mails anyone a second copy."""
    execute(prepare(bundled, listed, ledger), smtp(smtp_server))

    again = prepare(bundled, listed, ledger)
    assert (again.todo, again.already, again.in_flight, again.changed) == ([], 11, 0, False)
    summary = execute(again, smtp(smtp_server))

    assert (summary.sent, summary.already, summary.deferred, summary.failed) == (0, 11, 0, 0)
    assert len(smtp_server.recorder.messages) == 11


# -- what the server does ------------------------------------------------------------------------


def test_temporary_refusal_is_retried_once(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """A greylisting 451 delays one reader's copy; it still arrives, once."""
    smtp_server.recorder.refuse_once["lee.kawai@example.org"] = "451 4.7.1 greylisted, try later"
    pauses: list[float] = []

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server), sleep=pauses.append)

    assert (summary.sent, summary.deferred, summary.failed) == (11, 0, 0)
    assert set(counts(smtp_server).values()) == {1}
    assert len(counts(smtp_server)) == 11
    lee = row_of(ledger, "lee.kawai@example.org")
    assert (lee.status, lee.attempts, lee.last_code, lee.last_reply) == ("sent", 2, 250, "accepted")
    # At most one pause before the retry, at most the policy's first step: what is left of it
    # when the loop waits (the time since the refusal has already passed; on a busy machine all
    # of it may pass while the loop waits for the server's replies, and no pause is left).
    assert len(pauses) <= 1
    assert all(0 < pause <= 0.01 for pause in pauses)


def test_permanent_refusal_fails_that_reader_only(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """A 550 for one address is recorded with the server's words; the other ten get the digest."""
    smtp_server.recorder.refuse["wong.siuming@example.org"] = "550 5.1.1 no such user"

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server))

    assert (summary.sent, summary.deferred, summary.failed) == (10, 0, 1)
    assert not summary.ok
    assert [o for o in summary.outcomes if o.status != "sent"] == [
        delivery.Outcome("wong.siuming@example.org", "failed", 550, "5.1.1 no such user")
    ]
    wong = row_of(ledger, "wong.siuming@example.org")
    assert (wong.status, wong.attempts, wong.last_code, wong.last_reply) == (
        "failed",
        1,
        550,
        "5.1.1 no such user",
    )
    assert list(statuses(ledger).values()).count("sent") == 10
    assert "wong.siuming@example.org" not in counts(smtp_server)
    assert set(counts(smtp_server).values()) == {1}
    assert len(counts(smtp_server)) == 10

    # A failed address is final for the month: the next run does not try it again.
    again = prepare(bundled, listed, ledger)
    assert (again.todo, again.already) == ([], 10)


def test_persistent_451_is_deferred_then_sent_by_a_later_run(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """A reader whose server keeps saying 'later' gets the digest from the next run, once."""
    smtp_server.recorder.refuse["ho.kinfai@example.org"] = "451 4.3.0 mailbox busy"
    pauses: list[float] = []

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server), sleep=pauses.append)

    assert (summary.sent, summary.deferred, summary.failed) == (10, 1, 0)
    assert not summary.ok
    ho = row_of(ledger, "ho.kinfai@example.org")
    assert (ho.status, ho.attempts, ho.last_code, ho.last_reply) == (
        "deferred",
        3,
        451,
        "4.3.0 mailbox busy",
    )
    # Between the policy's three attempts, what is left of each pause once the loop has waited
    # for the server's replies (on a busy machine, none may be left).
    assert len(pauses) <= 2
    assert "ho.kinfai@example.org" not in counts(smtp_server)

    del smtp_server.recorder.refuse["ho.kinfai@example.org"]
    later = prepare(bundled, listed, ledger)
    assert ([r.address for r in later.todo], later.already) == (["ho.kinfai@example.org"], 10)
    summary = execute(later, smtp(smtp_server))

    assert (summary.sent, summary.already, summary.deferred, summary.failed) == (1, 10, 0, 0)
    assert summary.ok
    assert set(counts(smtp_server).values()) == {1}
    assert len(counts(smtp_server)) == 11
    assert set(statuses(ledger).values()) == {"sent"}


def test_421_reconnects_instead_of_retrying_on_a_closed_connection(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """A server shutting down (421) costs one attempt, not two: the reader is not left waiting."""
    smtp_server.recorder.refuse_once["ng.chiho@example.org"] = "421 4.3.2 shutting down"
    two_tries = delivery.RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server), policy=two_tries)

    assert (summary.sent, summary.deferred, summary.failed) == (11, 0, 0)
    assert set(counts(smtp_server).values()) == {1}
    assert len(counts(smtp_server)) == 11
    assert row_of(ledger, "ng.chiho@example.org").attempts == 2


def test_dropped_connection_reconnects_without_duplicates(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """A server that hangs up after four messages: the rest still arrive, nobody twice."""
    smtp_server.recorder.drop_after = 4

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server))

    assert (summary.sent, summary.deferred, summary.failed) == (11, 0, 0)
    assert counts(smtp_server) == {s.email: 1 for s in readers}
    assert len(smtp_server.recorder.messages) == 11
    assert set(statuses(ledger).values()) == {"sent"}


def test_lost_reply_resends_with_the_same_message_id(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """A copy whose '250 OK' was lost is sent again with its Message-ID, so clients show it once."""
    smtp_server.recorder.drop_before_reply = 3
    third = readers[2].email

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server))

    assert (summary.sent, summary.deferred, summary.failed) == (11, 0, 0)
    assert counts(smtp_server) == {s.email: 2 if s.email == third else 1 for s in readers}
    copies = smtp_server.recorder.by_recipient()[third]
    assert [c.message_id for c in copies] == [expected_id(bundled, third)] * 2
    assert row_of(ledger, third).attempts == 2
    assert set(statuses(ledger).values()) == {"sent"}


def test_crashed_run_resends_in_flight_messages_with_same_id(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """After a kill between the server's OK and the ledger's commit, the resent copies match."""
    stop, progress = stop_after(2)
    killed = prepare(bundled, listed, ledger)
    execute(killed, smtp(smtp_server), stop=stop, progress=progress)
    assert len(smtp_server.recorder.messages) == 2
    # As if the process died before recording these two as sent.
    in_flight = [readers[0].email, readers[1].email]
    for address in in_flight:
        ledger.record(KEY, [Mark(address, Status.SENDING, attempt=True)])

    plan = prepare(bundled, listed, ledger)
    assert (plan.in_flight, len(plan.todo), plan.already) == (2, 11, 0)
    summary = execute(plan, smtp(smtp_server))

    assert (summary.sent, summary.resent, summary.deferred, summary.failed) == (11, 2, 0, 0)
    assert sorted(o.address for o in summary.outcomes if o.again) == sorted(in_flight)
    assert counts(smtp_server) == {s.email: 2 if s.email in in_flight else 1 for s in readers}
    for address in in_flight:
        ids = [r.message_id for r in smtp_server.recorder.by_recipient()[address]]
        assert ids == [expected_id(bundled, address)] * 2
    assert set(statuses(ledger).values()) == {"sent"}


def test_unreachable_server_stops_the_run_at_once(
    bundled: catalogue.Catalogue, listed: subscribers.SubscriberList, ledger: Ledger
) -> None:
    """With no server listening the send stops with an error instead of trying all 11 in turn."""
    nowhere = SmtpTransport(parse_url(f"smtp://127.0.0.1:{free_port()}"))
    pauses: list[float] = []

    with pytest.raises(Fatal) as raised:
        execute(prepare(bundled, listed, ledger), nowhere, sleep=pauses.append)

    assert isinstance(raised.value, DeliveryError)
    assert str(raised.value).startswith(f"cannot connect to {nowhere.describe()}: ")
    assert str(raised.value).endswith("; gave up after 3 attempts, the rest wait")
    assert len(pauses) == 2
    rows = ledger.deliveries(KEY)
    assert [r.status for r in rows] == ["deferred"] + ["pending"] * 10
    assert (rows[0].attempts, rows[0].last_code) == (0, None)
    assert (rows[0].last_reply or "").startswith("cannot connect to ")
    # The next run picks everyone up.
    assert len(prepare(bundled, listed, ledger).todo) == 11


def test_failed_run_leaves_the_callers_stop_event_alone(
    bundled: catalogue.Catalogue, listed: subscribers.SubscriberList, ledger: Ledger
) -> None:
    """A send that fails does not flip the caller's stop switch (the scheduler's shutdown flag)."""
    nowhere = SmtpTransport(parse_url(f"smtp://127.0.0.1:{free_port()}"))
    stop = threading.Event()

    with pytest.raises(Fatal):
        execute(prepare(bundled, listed, ledger), nowhere, stop=stop)

    assert not stop.is_set()


class _RefusingTransport:
    """A server that now refuses the login: every connection attempt is fatal."""

    def open(self) -> Connection:
        raise Fatal("smtp://news@mail.example.edu:587: login refused (535)")

    def describe(self) -> str:
        return "smtp://news@mail.example.edu:587"


def test_fatal_error_keeps_an_in_flight_message_in_flight(
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """A message that may have gone out before a crash is still flagged after a failed retry."""
    prepare(bundled, listed, ledger)
    # The killed run's message in flight.
    ledger.record(KEY, [Mark(readers[0].email, Status.SENDING, attempt=True)])

    with pytest.raises(Fatal):
        execute(prepare(bundled, listed, ledger), _RefusingTransport())

    assert row_of(ledger, readers[0].email).status == "sending"
    assert prepare(bundled, listed, ledger).in_flight == 1


def test_outbox_writes_one_file_per_reader(
    tmp_path: Path,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """Without an SMTP server the office can open each reader's message as an .eml file."""
    outbox = tmp_path / "outbox"
    transport = OutboxTransport(outbox, KEY)

    summary = execute(prepare(bundled, listed, ledger), transport)

    assert (summary.sent, summary.deferred, summary.failed) == (11, 0, 0)
    names = sorted(p.name for p in outbox.iterdir())
    assert names == sorted(f"digest-2025-11-{s.email}.eml" for s in readers)
    for reader in readers:
        data = (outbox / f"digest-2025-11-{reader.email}.eml").read_bytes()
        email = message_from_bytes(data, policy=policy.default)
        assert isinstance(email, EmailMessage)
        assert email["To"].addresses[0].addr_spec == reader.email
        assert email["Message-ID"] == expected_id(bundled, reader.email)
        assert email.get_content_type() == "multipart/alternative"

    before = snapshot(outbox)
    again = execute(prepare(bundled, listed, ledger), transport)
    assert (again.sent, again.already) == (0, 11)
    assert snapshot(outbox) == before


def send_month(
    cat: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
    transport: Transport,
    **options: Any,
) -> delivery.MonthResult:
    """Send November as `digest send --yes` does, with the fast policy and no real waiting."""
    options.setdefault("policy", FAST)
    options.setdefault("sleep", lambda seconds: None)
    return delivery.send_month(
        cat, listed, NOVEMBER, ledger, transport, now=NOW, clock=lambda: NOW, holder="a test",
        **options,
    )  # fmt: skip


def test_outbox_send_is_a_rehearsal_recorded_apart(
    smtp_server: SmtpServer,
    tmp_path: Path,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """Writing outbox/ (twice) must leave every reader owed the email, and say it rehearsed."""
    outbox = OutboxTransport(tmp_path / "outbox", KEY)
    for attempt in range(2):
        result = send_month(bundled, listed, ledger, outbox)
        assert (result.kind, result.rehearsal) == ("sent", True)
        assert result.summary is not None
        assert (result.summary.sent, result.summary.already) == (11, 0)
        assert sorted(p.name for p in outbox.directory.iterdir()) == sorted(
            f"digest-2025-11-{s.email}.eml" for s in readers
        )
        assert (ledger.deliveries(KEY), ledger.frozen(KEY), ledger.settled(KEY)) == ([], None, None)
        assert ledger.months() == []
        runs = ledger.runs(KEY)
        assert len(runs) == attempt + 1
        assert (runs[0].kind, runs[0].transport, runs[0].sent, runs[0].rehearsal) == (
            RunKind.REHEARSAL,
            f"{outbox.directory}/",
            11,
            True,
        )
        assert runs[0].finished_at is not None

    result = send_month(bundled, listed, ledger, smtp(smtp_server))

    assert (result.kind, result.rehearsal) == ("sent", False)
    assert counts(smtp_server) == {s.email: 1 for s in readers}
    assert set(statuses(ledger).values()) == {"sent"}
    assert [run.kind for run in ledger.runs(KEY)] == [RunKind.SEND, *[RunKind.REHEARSAL] * 2]
    assert ledger.settled(KEY) == "already sent"


def test_rehearsal_leaves_out_who_unsubscribed_and_ignores_what_was_sent(
    smtp_server: SmtpServer,
    tmp_path: Path,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """The outbox shows every message the list would get now, never one to someone who left."""
    gone = readers[3].email
    ledger.suppress(gone, "one-click")
    assert send_month(bundled, listed, ledger, smtp(smtp_server)).kind == "sent"
    before = ledger.deliveries(KEY)
    outbox = OutboxTransport(tmp_path / "outbox", KEY)

    result = send_month(bundled, listed, ledger, outbox)

    assert result.rehearsal
    written = sorted(p.name for p in outbox.directory.iterdir())
    assert written == sorted(f"digest-2025-11-{s.email}.eml" for s in readers if s.email != gone)
    assert ledger.deliveries(KEY) == before


def test_interrupted_resend_run_again_goes_on_with_its_copies(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """An interrupted resend run again must send nobody a third copy; in flight keeps its id."""
    execute(prepare(bundled, listed, ledger), smtp(smtp_server))
    preview = delivery.prepare(bundled, listed, NOVEMBER, ledger, NOW, resend=True, write=False)
    assert preview is not None
    stop, progress = stop_after(3)
    resend = prepare(bundled, listed, ledger, resend=True)
    assert not resend.resuming
    assert [row.copy for row in preview.todo] == [row.copy for row in resend.todo] == [1] * 11
    execute(resend, smtp(smtp_server), stop=stop, progress=progress)
    # As if killed between the server's OK for the third and the ledger's commit.
    in_flight = readers[2].email
    assert statuses(ledger)[in_flight] == "sent"
    have = sum(1 for status in statuses(ledger).values() if status == "sent") - 1
    ledger.record(KEY, [Mark(in_flight, Status.SENDING, attempt=True)])

    again = prepare(bundled, listed, ledger, resend=True)

    assert (again.resuming, len(again.todo), again.already, again.in_flight) == (
        True,
        11 - have,
        have,
        1,
    )
    summary = execute(again, smtp(smtp_server))
    assert (summary.sent, summary.resent) == (11 - have, 1)
    got = smtp_server.recorder.by_recipient()
    for reader in readers:
        ids = [r.message_id for r in got[reader.email]]
        first = expected_id(bundled, reader.email)
        second = message.message_id(bundled.publication, NOVEMBER, reader.email, 1)
        assert ids == ([first, second, second] if reader.email == in_flight else [first, second])
    assert {row.copy for row in ledger.deliveries(KEY)} == {1}
    assert {(c.copy, c.message_id) for c in ledger.copies(KEY)} == {
        (0, expected_id(bundled, s.email)) for s in readers
    }


def test_resend_of_a_new_version_begins_new_copies_even_over_an_unfinished_resend(
    smtp_server: SmtpServer,
    tmp_path: Path,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """A second correction sent with --resend reaches everyone, whatever the first one got to."""
    path = edited_copy(tmp_path)
    first = catalogue.load(path)
    execute(prepare(first, listed, ledger), smtp(smtp_server))
    stop, progress = stop_after(2)
    execute(prepare(first, listed, ledger, resend=True), smtp(smtp_server), stop=stop,
            progress=progress)  # fmt: skip
    path.write_text(path.read_text(encoding="utf-8").replace(ORIGINAL_TITLE, NEW_TITLE), "utf-8")
    corrected = catalogue.load(path)
    reached = {row.address for row in ledger.deliveries(KEY) if row.attempts}
    assert 2 <= len(reached) < len(readers)

    plan = prepare(corrected, listed, ledger, resend=True)

    assert (plan.resuming, len(plan.todo), plan.already) == (False, 11, 0)
    execute(plan, smtp(smtp_server))
    newest = {r.rcpt_tos[0]: r for r in smtp_server.recorder.messages}
    for reader in readers:
        copy = 2 if reader.email in reached else 1  # never tried: copy 1 reached nobody
        assert newest[reader.email].message_id == message.message_id(
            corrected.publication, NOVEMBER, reader.email, copy
        )
    assert ledger.frozen(KEY) is not None
    assert ledger.frozen(KEY).resends == 2


# -- a catalogue edited mid-send -----------------------------------------------------------------


def edited_copy(tmp_path: Path) -> Path:
    """Copy the bundled catalogue into tmp_path; return its path."""
    target = tmp_path / "items.yaml"
    shutil.copy(ROOT / "items.yaml", target)
    return target


def test_catalogue_change_mid_send_keeps_the_frozen_issue(
    smtp_server: SmtpServer,
    tmp_path: Path,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """Readers of one month all read the same digest, even if an editor fixes a title mid-send."""
    path = edited_copy(tmp_path)
    first = prepare(catalogue.load(path), listed, ledger)
    stop, progress = stop_after(3)
    partial = execute(first, smtp(smtp_server), stop=stop, progress=progress)
    assert partial.sent == 3

    text = path.read_text(encoding="utf-8")
    assert text.count(ORIGINAL_TITLE) == 1
    text = text.replace(ORIGINAL_TITLE, NEW_TITLE)
    text = text.replace("subject: \"What's Happening — ", "subject: \"What's New — ")
    path.write_text(text, encoding="utf-8")
    edited = catalogue.load(path)

    plan = prepare(edited, listed, ledger)
    assert (plan.changed, plan.subject, len(plan.todo), plan.already) == (
        True,
        ORIGINAL_SUBJECT,
        8,
        3,
    )
    summary = execute(plan, smtp(smtp_server))
    assert (summary.sent, summary.already) == (8, 3)
    received = smtp_server.recorder.messages
    assert len(received) == 11
    for got in received:
        email = got.message
        assert email["Subject"] == ORIGINAL_SUBJECT
        assert NEW_TITLE not in body_html(email)
        assert NEW_TITLE not in body_text(email)
    assert sum(ORIGINAL_TITLE in body_html(got.message) for got in received) == 9

    # --resend starts over: everyone gets the corrected version.
    smtp_server.recorder.messages.clear()
    resend = prepare(edited, listed, ledger, resend=True)
    assert (resend.changed, len(resend.todo), resend.already) == (False, 11, 0)
    summary = execute(resend, smtp(smtp_server))
    assert (summary.sent, summary.already) == (11, 0)
    assert counts(smtp_server) == {s.email: 1 for s in readers}
    for got in smtp_server.recorder.messages:
        email = got.message
        assert email["Subject"] == "What's New — November 2025"
        assert ORIGINAL_TITLE not in body_html(email)
    assert sum(NEW_TITLE in body_html(g.message) for g in smtp_server.recorder.messages) == 9


def test_item_moved_out_of_month_mid_send_still_reaches_its_readers(
    smtp_server: SmtpServer,
    tmp_path: Path,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """A reader enrolled for the frozen issue still gets it after an editor re-dates an item."""
    path = edited_copy(tmp_path)
    stop, progress = stop_after(3)
    execute(
        prepare(catalogue.load(path), listed, ledger),
        smtp(smtp_server),
        stop=stop,
        progress=progress,
    )
    # The GPTX collaboration moves to December: Tsang chose only collaboration and visit.
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        "    date: 2025-11-12  # date not stated on the source page",
        "    date: 2025-12-02  # date not stated on the source page",
    )
    path.write_text(text, encoding="utf-8")

    plan = prepare(catalogue.load(path), listed, ledger)
    assert plan.changed
    summary = execute(plan, smtp(smtp_server))

    assert summary.sent + summary.already == 11
    assert counts(smtp_server) == {s.email: 1 for s in readers}


# -- several connections -------------------------------------------------------------------------


def test_parallel_connections_with_rate_limit_deliver_once(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """Sending over three connections at a capped rate still gives everyone one copy."""
    summary = execute(
        prepare(bundled, listed, ledger),
        smtp(smtp_server),
        connections=3,
        rate=1000,
        sleep=time.sleep,
    )

    assert (summary.sent, summary.deferred, summary.failed) == (11, 0, 0)
    assert counts(smtp_server) == {s.email: 1 for s in readers}
    assert sorted(o.address for o in summary.outcomes) == sorted(s.email for s in readers)
    assert set(statuses(ledger).values()) == {"sent"}


def test_parallel_connections_report_a_refusal(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """Over several connections a 550 is still counted and recorded, and the rest go on."""
    smtp_server.recorder.refuse["yip.sukyee@example.org"] = "550 5.1.1 no such user"

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server), connections=4)

    assert (summary.sent, summary.deferred, summary.failed) == (10, 0, 1)
    assert row_of(ledger, "yip.sukyee@example.org").status == "failed"
    assert len(counts(smtp_server)) == 10


@pytest.mark.parametrize("pipelining", [True, False])
def test_several_connections_one_command_at_a_time_or_pipelined(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
    pipelining: bool,
) -> None:
    """A server without PIPELINING is answered command by command; refusals land where they do."""
    recorder = smtp_server.recorder
    recorder.pipelining = pipelining
    recorder.refuse["yip.sukyee@example.org"] = "550 5.1.1 no such user"
    recorder.refuse_once["lee.kawai@example.org"] = "451 4.7.1 greylisted, try later"

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server), connections=3)

    assert (summary.sent, summary.deferred, summary.failed) == (10, 0, 1)
    assert counts(smtp_server) == {
        s.email: 1 for s in readers if s.email != "yip.sukyee@example.org"
    }
    assert row_of(ledger, "lee.kawai@example.org").attempts == 2
    assert row_of(ledger, "yip.sukyee@example.org").status == "failed"


class _Broken(Exception):
    """An error no transport is expected to raise."""


class _FlakyConnection:
    def __init__(self, inner: Connection, bad: str) -> None:
        self.inner = inner
        self.bad = bad

    def send(self, message: EmailMessage, sender: str, recipient: str) -> None:
        if recipient == self.bad:
            raise _Broken(f"unexpected failure for {recipient}")
        self.inner.send(message, sender, recipient)

    def close(self) -> None:
        self.inner.close()


class _FlakyTransport:
    def __init__(self, inner: SmtpTransport, bad: str) -> None:
        self.inner = inner
        self.bad = bad

    def open(self) -> Connection:
        return _FlakyConnection(self.inner.open(), self.bad)

    def describe(self) -> str:
        return self.inner.describe()


def test_unexpected_error_stops_a_single_connection_send(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """An error nobody planned for surfaces; its reader is left in flight for the next run."""
    flaky = _FlakyTransport(smtp(smtp_server), "ng.chiho@example.org")

    with pytest.raises(_Broken):
        execute(prepare(bundled, listed, ledger), flaky)

    assert row_of(ledger, "ng.chiho@example.org").status == "sending"
    assert prepare(bundled, listed, ledger).in_flight == 1


def test_unexpected_error_is_not_lost_with_several_connections(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """An error on one of several connections is raised, not hidden behind 'sent 10, ok'."""
    flaky = _FlakyTransport(smtp(smtp_server), "ng.chiho@example.org")

    with pytest.raises(_Broken):
        execute(prepare(bundled, listed, ledger), flaky, connections=3)

    assert row_of(ledger, "ng.chiho@example.org").status == "sending"


# -- hostile names -------------------------------------------------------------------------------

HOSTILE = 'Evil\u00a0"Name" <x@y> , Bcc: z@w'


def csv_of(*rows: tuple[str, str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "name"])
    writer.writerows(rows)
    return out.getvalue()


def header_names(email: EmailMessage) -> list[str]:
    return [key.lower() for key in email]


def test_hostile_name_adds_no_recipient(
    smtp_server: SmtpServer, tmp_path: Path, bundled: catalogue.Catalogue, ledger: Ledger
) -> None:
    """A name that looks like addresses and a Bcc header mails only its own subscriber."""
    path = tmp_path / "subscribers.csv"
    path.write_text(csv_of(("evil@example.org", HOSTILE)), encoding="utf-8")
    listed = subscribers.load(path, declared(bundled))
    assert [s.name for s in listed.subscribers] == [HOSTILE]

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server))

    assert summary.sent == 1
    (got,) = smtp_server.recorder.messages
    assert got.rcpt_tos == ["evil@example.org"]
    email = got.message
    keys = header_names(email)
    assert (keys.count("from"), keys.count("to"), "cc" in keys, "bcc" in keys) == (
        1,
        1,
        False,
        False,
    )
    (to,) = email["To"].addresses
    assert (to.display_name, to.addr_spec) == (HOSTILE, "evil@example.org")


@pytest.fixture(scope="module")
def shared_server() -> Iterator[SmtpServer]:
    """One recording server for every hypothesis example (function fixtures are not reset)."""
    with smtp_serving(Recorder()) as server:
        yield server


@pytest.fixture(scope="module")
def shared_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    opened = Ledger(tmp_path_factory.mktemp("hypothesis") / "state.sqlite3")
    yield opened
    opened.close()


names = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="\x85"),
    max_size=40,
)
_example = iter(range(10**9))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names)
def test_any_listed_name_is_delivered_with_no_extra_header(
    shared_server: SmtpServer,
    shared_ledger: Ledger,
    bundled: catalogue.Catalogue,
    name: str,
) -> None:
    """Whatever name the list holds, the delivered message has one From, one To and no Bcc/Cc."""
    address = f"reader{next(_example)}@example.org"
    listed = subscribers.parse(csv_of((address, name)), declared(bundled), "subscribers.csv")
    shared_server.recorder.messages.clear()

    summary = execute(prepare(bundled, listed, shared_ledger), smtp(shared_server))

    assert summary.sent == 1
    (got,) = shared_server.recorder.messages
    assert got.rcpt_tos == [address]
    email = got.message
    keys = header_names(email)
    assert (keys.count("from"), keys.count("to"), "cc" in keys, "bcc" in keys) == (
        1,
        1,
        False,
        False,
    )
    (to,) = email["To"].addresses
    assert to.addr_spec == address
    # Python's parser may put a space between the encoded-words of a long name; nothing else moves.
    assert "".join(to.display_name.split()) == "".join((name.strip()).split())


def test_idn_domain_goes_out_in_ascii(
    smtp_server: SmtpServer, tmp_path: Path, bundled: catalogue.Catalogue, ledger: Ledger
) -> None:
    """A reader at an internationalised domain gets a message every server and client can carry."""
    path = tmp_path / "subscribers.csv"
    path.write_text(csv_of(("a@bücher.example", "A")), encoding="utf-8")
    listed = subscribers.load(path, declared(bundled))

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server))

    assert summary.sent == 1
    (got,) = smtp_server.recorder.messages
    assert got.rcpt_tos == ["a@xn--bcher-kva.example"]
    assert got.message["To"].addresses[0].addr_spec == "a@xn--bcher-kva.example"
    assert got.message_id == expected_id(bundled, "a@xn--bcher-kva.example")


# -- names that look like the placeholders ---------------------------------------------------------

GREETING, LINK = newsletter.GREETING_TOKEN, newsletter.UNSUBSCRIBE_TOKEN
PLAIN = "Plain Reader"


def one_click(address: str) -> str:
    return f"https://digest.example.edu/unsubscribe/{address.split('@')[0]}.sig"


def greetings(email: EmailMessage, plain: EmailMessage) -> tuple[str, str]:
    """Return the greeting a reader sees in the text part and in the HTML part.

    In the text, it is the line where `plain`, a message to a reader named PLAIN, greets them.
    """
    line = body_text(plain).splitlines().index(f"Dear {PLAIN},")
    (cell,) = lxml.html.fromstring(body_html(email)).find_class("greeting")
    return body_text(email).splitlines()[line], cell.text_content()


def test_names_made_of_placeholders_are_greeted_by_name(
    smtp_server: SmtpServer, tmp_path: Path, bundled: catalogue.Catalogue, ledger: Ledger
) -> None:
    """A reader named like an internal placeholder is greeted by that name, and their
    unsubscribe link appears where everyone's does and nowhere else (not in the greeting)."""
    named = {
        "greeting@example.org": GREETING,
        "link@example.org": LINK,
        "both@example.org": GREETING + LINK,
        "swapped@example.org": f"{LINK} {GREETING}",
        "twice@example.org": f"{LINK}, {LINK}",
        # The link's token split between the name and the address.
        "SCRIBE-5f0c2e@example.org": "DIGEST-PERSONAL-UNSUB",
        "5f0c2e@example.org": "DIGEST-PERSONAL-UNSUBSCRIBE-",
        "plain@example.org": PLAIN,
    }
    path = tmp_path / "subscribers.csv"
    path.write_text(csv_of(*named.items()), encoding="utf-8")
    listed = subscribers.load(path, declared(bundled))

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server), unsubscribe=one_click)

    assert summary.sent == len(named)
    got = {r.rcpt_tos[0]: r.message for r in smtp_server.recorder.messages}
    plain = got["plain@example.org"]
    plain_link = one_click("plain@example.org")
    for address, name in named.items():
        email, link = got[address], one_click(address)
        assert greetings(email, plain) == (f"Dear {name},", f"Dear {name},"), address
        assert email["To"].addresses[0].display_name == name
        # Each part is the plain reader's, but for the name and the reader's own link.
        assert body_text(email) == body_text(plain).replace(PLAIN, name).replace(plain_link, link)
        assert body_html(email) == body_html(plain).replace(PLAIN, name).replace(plain_link, link)
        assert body_text(email).count(link) == body_text(plain).count(plain_link) == 1
        assert body_html(email).count(link) == body_html(plain).count(plain_link) == 1


@pytest.fixture(scope="module")
def everyone_plan(bundled: catalogue.Catalogue, shared_ledger: Ledger) -> delivery.Send:
    """A plan (nothing written) whose renders include the whole issue's, for hand-made rows."""
    listed = subscribers.parse(csv_of(("anyone@example.org", "")), declared(bundled), "list.csv")
    plan = delivery.prepare(bundled, listed, NOVEMBER, shared_ledger, NOW, write=False)
    assert plan is not None
    return plan


fragments = st.sampled_from(
    [GREETING, LINK, "DIGEST-", "PERSONAL-", "GREETING-", "UNSUBSCRIBE-", "5f0c2e", "Dear ", ","]
)
# What subscribers.csv accepts in a name: no control characters or line breaks.
free_text = st.text(
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\x85\u2028\u2029"),
    max_size=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.one_of(fragments, free_text), min_size=1, max_size=6))
def test_any_name_of_placeholder_pieces_is_greeted_literally(
    everyone_plan: delivery.Send, bundled: catalogue.Catalogue, parts: list[str]
) -> None:
    """Whatever a name is made of, the reader sees it as written in the greeting, and their
    unsubscribe link exactly as often as a plainly named reader sees theirs."""
    listed = subscribers.parse(
        csv_of(("reader@example.org", "".join(parts))), declared(bundled), "subscribers.csv"
    )
    (subscriber,) = listed.subscribers
    composer = delivery.Composer(everyone_plan, one_click)
    (anyone,) = everyone_plan.todo
    row = dataclasses.replace(
        anyone, recipient=subscriber.key, address=subscriber.email, name=subscriber.name
    )
    plain = read_back(composer(dataclasses.replace(row, name=PLAIN), NOW))

    email = read_back(composer(row, NOW))

    expected = f"Dear {subscriber.name}," if subscriber.name else "Dear colleague,"
    assert greetings(email, plain) == (expected, expected)
    link = one_click("reader@example.org")
    assert body_text(email).count(link) == body_text(plain).count(link) == 1
    assert body_html(email).count(link) == body_html(plain).count(link) == 1
    # Nothing else differs from the plainly named reader's message.
    greeted = f"Dear {PLAIN},"
    assert body_text(email) == body_text(plain).replace(greeted, expected)
    assert body_html(email) == body_html(plain).replace(greeted, html.escape(expected, quote=False))


def read_back(made: bytes | EmailMessage) -> EmailMessage:
    """Return a composed message as a mail client reads it."""
    data = made if isinstance(made, bytes) else made.as_bytes()
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# -- one-click unsubscribe -----------------------------------------------------------------------


def test_unsubscribed_reader_gets_nothing_more_even_mid_month(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """Someone who unsubscribed after the send began is not sent the rest of that month."""
    prepare(bundled, listed, ledger)  # everyone enrolled, nobody sent yet: a half-sent month
    ledger.suppress("Lee.Kawai@example.org", "one-click")

    plan = prepare(bundled, listed, ledger)
    execute(plan, smtp(smtp_server))

    assert "lee.kawai@example.org" not in counts(smtp_server)
    assert len(counts(smtp_server)) == 10


def test_one_click_link_is_personal_in_header_and_body(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """Each reader's unsubscribe link, in the header and the body, names that reader only."""

    def link(address: str) -> str:
        return f"https://digest.example.edu/unsubscribe/{address.split('@')[0]}"

    execute(prepare(bundled, listed, ledger), smtp(smtp_server), unsubscribe=link)

    for received in smtp_server.recorder.messages:
        email = received.message
        mine = link(received.rcpt_tos[0])
        assert email["List-Unsubscribe"] == (
            f"<{mine}>, <mailto:provost@example.edu?subject=unsubscribe>"
        )
        assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert f"Unsubscribe: {mine}\n" in body_text(email).replace("\r\n", "\n")
        assert f'href="{mine}"' in body_html(email)


# -- what each subscriber is sent ----------------------------------------------------------------


@pytest.mark.parametrize("one_click", [False, True])
def test_each_message_is_what_the_email_package_builds(
    tmp_path: Path, bundled: catalogue.Catalogue, ledger: Ledger, one_click: bool
) -> None:
    """A send writes each recipient's bytes from a stencil: byte for byte compose()'s message.

    The subscribers include accented, Chinese, quoted and long names and no name at all.
    """
    names = [
        "Zoë Müller",
        "陳大文",
        'Prof. "Tai-man" Chan',
        "O'Brien, Pat",
        "A very long name " * 6,
    ]
    with (tmp_path / "subscribers.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["email", "name", "categories"])
        writer.writerows([f"person{i}@example.org", name, ""] for i, name in enumerate(names))
        writer.writerow(["noname@example.org", "", "engagement"])
    listed = subscribers.load(tmp_path / "subscribers.csv", declared(bundled))
    plan = prepare(bundled, listed, ledger)
    links = (lambda address: f"https://news.example.edu/u/{address}.sig") if one_click else None
    composer = delivery.Composer(plan, links)
    assert len(plan.todo) == 6
    for row in plan.todo:
        made = composer(row, NOW)
        assert isinstance(made, bytes)  # the stencil wrote it
        assert made == delivery.compose(plan, row, NOW, links).as_bytes()


def test_each_message_with_a_preferences_link_is_what_the_email_package_builds(
    tmp_path: Path, bundled: catalogue.Catalogue, ledger: Ledger
) -> None:
    """With public pages, the stencil's bytes are still compose()'s, and each reader's HTML and
    text carry their own preferences link once, whatever their name."""
    names = ["Zoë Müller", '"><a href="x">', "DIGEST-PERSONAL-PREFERENCES-5f0c2e", ""]
    with (tmp_path / "subscribers.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["email", "name", "categories"])
        writer.writerows([f"person{i}@example.org", name, ""] for i, name in enumerate(names))
    listed = subscribers.load(tmp_path / "subscribers.csv", declared(bundled))

    def own(address: str) -> str:
        return f"https://news.example.edu/preferences/{address.split('@')[0]}-t0k3n"

    def links(address: str) -> str:
        return f"https://news.example.edu/u/{address}.sig"

    plan = delivery.prepare(bundled, listed, NOVEMBER, ledger, NOW, preferences=own)
    assert plan is not None
    composer = delivery.Composer(plan, links)
    assert len(plan.todo) == 4
    for row in plan.todo:
        made = composer(row, NOW)
        assert isinstance(made, bytes)  # the stencil wrote it
        assert made == delivery.compose(plan, row, NOW, links).as_bytes()
        email = read_back(made)
        mine = own(row.address)
        assert body_text(email).count(mine) == 1
        assert body_html(email).count(f'href="{mine}"') == 1
        others = [own(r.address) for r in plan.todo if r is not row]
        assert [o for o in others if o in body_text(email) + body_html(email)] == []


def test_a_send_renders_each_selection_once(
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The confirmation's preview and the send share their renders: premailer runs once each."""
    from digest.mail import newsletter

    rendered: list[frozenset[str] | None] = []
    original = newsletter.Renderer.render

    def counting(self: Any, issue: Any, categories: Any = None, **options: Any) -> Any:
        rendered.append(categories)
        return original(self, issue, categories, **options)

    monkeypatch.setattr(newsletter.Renderer, "render", counting)
    result = delivery.send_month(
        bundled,
        listed,
        NOVEMBER,
        ledger,
        OutboxTransport(tmp_path / "outbox", KEY),
        now=NOW,
        clock=lambda: NOW,
        holder="a test",
    )
    assert result.kind == "sent"
    assert result.plan is not None
    assert len(rendered) == len(set(rendered)) == len(result.plan.renders)


# -- the wire and the ledger, message by message ---------------------------------------------------


class Scripted:
    """A one-connection SMTP server, read line by line, that looks at the ledger as messages arrive.

    It offers PIPELINING and answers the end of each message only once it has read the next
    message's MAIL, RCPT and DATA as well (when `hold` is set): a client that waited for that
    answer before going on would hang. `seen` has, for each message, the ledger's statuses when its
    first line of content arrived and when its end did.
    """

    def __init__(
        self, ledger_path: Path, messages: int, *, hold: bool = True, url: str | None = None
    ) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.ledger_path = ledger_path
        self.url = url  # the PostgreSQL database, when the test runs there
        self.messages = messages
        self.hold = hold
        self.seen: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def statuses(self) -> dict[str, str]:
        """Return each address's status as another connection reads it: what is committed."""
        if self.url is not None:
            with psycopg.connect(self.url) as pg:
                return dict(pg.execute("SELECT address, status FROM deliveries").fetchall())
        with sqlite3.connect(self.ledger_path) as db:
            return dict(db.execute("SELECT address, status FROM deliveries").fetchall())

    def _serve(self) -> None:
        try:
            peer, _ = self.listener.accept()
            with peer, peer.makefile("rb") as lines:
                greet(peer, lines)
                held = b""
                for index in range(self.messages):
                    envelope = [lines.readline() for _ in range(3)]
                    assert [e[:4] for e in envelope] == [b"MAIL", b"RCPT", b"DATA"], envelope
                    recipient = envelope[1].decode().strip()[len("RCPT TO:<") : -1]
                    peer.sendall(held + b"250 sender ok\r\n250 recipient ok\r\n354 go on\r\n")
                    first = lines.readline()
                    at_first = self.statuses()
                    line = first
                    while line not in (b".\r\n", b""):
                        line = lines.readline()
                    at_end = self.statuses()
                    self.seen.append((recipient, at_first, at_end))
                    held = b"250 queued\r\n"
                    if not self.hold or index == self.messages - 1:
                        peer.sendall(held)
                        held = b""
                if lines.readline() == b"QUIT\r\n":
                    peer.sendall(b"221 bye\r\n")
        except BaseException as exc:  # raised by the test, in its own thread
            self.error = exc
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def scripted_transport(server: Scripted) -> SmtpTransport:
    return SmtpTransport(
        dataclasses.replace(parse_url(f"smtp://127.0.0.1:{server.port}"), timeout=5)
    )


def test_each_message_is_recorded_before_its_first_byte_and_after_its_reply(
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
    database_url: str | None,
) -> None:
    """What a kill -9 at any moment leaves is safe to run again.

    The row is committed `sending` before any of the message's content leaves, so a crash during
    it is known as 'perhaps sent' (resent with the same Message-ID); it is still `sending` while
    the server holds the whole message unanswered; and it is `sent` before the next one starts.
    """
    plan = prepare(bundled, listed, ledger)
    server = Scripted(ledger.path, len(readers), url=database_url)

    summary = execute(plan, scripted_transport(server))
    server.join()

    assert summary.sent == len(readers)
    assert [recipient for recipient, _, _ in server.seen] == [s.email for s in readers]
    done: list[str] = []
    for recipient, at_first, at_end in server.seen:
        assert at_first[recipient] == "sending"
        assert at_end[recipient] == "sending"
        assert [at_first[address] for address in done] == ["sent"] * len(done)
        done.append(recipient)
    assert set(statuses(ledger).values()) == {"sent"}


def test_the_next_envelope_goes_out_with_the_end_of_a_message(
    bundled: catalogue.Catalogue,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
    database_url: str | None,
) -> None:
    """One round trip a message: the client does not wait for '250' before the next MAIL FROM.

    The scripted server answers a message only after the next one's envelope: were the client to
    wait, the send would time out and nothing would be `sent`.
    """
    server = Scripted(ledger.path, 3, url=database_url)
    first_three = subscribers.SubscriberList(tuple(readers[:3]), 0)

    summary = execute(prepare(bundled, first_three, ledger), scripted_transport(server))
    server.join()

    assert (summary.sent, summary.deferred) == (3, 0)


def test_interrupted_send_puts_back_what_never_went_out(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """Ctrl-C after the first copy: no row is left 'perhaps sent' that never left the machine."""

    def interrupt(outcome: delivery.Outcome) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(prepare(bundled, listed, ledger), smtp(smtp_server), progress=interrupt)

    assert len(smtp_server.recorder.messages) == 1
    assert sorted(statuses(ledger).values()) == ["pending"] * 10 + ["sent"]
    plan = prepare(bundled, listed, ledger)
    assert (plan.in_flight, len(plan.todo)) == (0, 10)


def test_a_server_that_stops_answering_is_left_and_the_message_retried(
    bundled: catalogue.Catalogue,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """A server silent after a message's end costs one timeout, not the run."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        # The first connection goes silent once it has the first message; the second works.
        for silent in (True, False):
            peer, _ = listener.accept()
            with peer, peer.makefile("rb") as lines:
                greet(peer, lines)
                while True:
                    envelope = [lines.readline() for _ in range(3)]
                    if not envelope[0].startswith(b"MAIL"):
                        break
                    peer.sendall(b"250 ok\r\n250 ok\r\n354 go on\r\n")
                    while lines.readline() not in (b".\r\n", b""):
                        pass
                    got.append(envelope[1])
                    if silent:
                        lines.read()  # until the client hangs up
                        break
                    peer.sendall(b"250 queued\r\n")
                if envelope[0] == b"QUIT\r\n":
                    peer.sendall(b"221 bye\r\n")
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    settings = dataclasses.replace(parse_url(f"smtp://127.0.0.1:{port}"), timeout=0.5)
    two = subscribers.SubscriberList(tuple(readers[:2]), 0)

    summary = execute(prepare(bundled, two, ledger), SmtpTransport(settings))
    thread.join(10)

    first = readers[0].email
    assert (summary.sent, summary.resent, summary.deferred) == (2, 0, 0)
    # The silent server may have kept the first copy: it goes again, with the same Message-ID.
    assert got == [f"RCPT TO:<{first}>\r\n".encode()] * 2 + [
        f"RCPT TO:<{readers[1].email}>\r\n".encode()
    ]
    assert row_of(ledger, first).attempts == 2


# -- stopping ------------------------------------------------------------------------------------


@pytest.mark.parametrize("connections", [2, 4])
def test_stop_over_several_connections_finishes_what_is_in_flight(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
    connections: int,
) -> None:
    """Ctrl-C during a send over several connections stops it, rather than spinning forever."""
    # The second copy's "250" comes late: when the stop comes, its connection still waits for it
    # while the others have moved on to their next message.
    slow = readers[1].email
    smtp_server.recorder.delay = 0.02
    smtp_server.recorder.slow[slow] = 1.0
    stop, progress = stop_after(2)
    plan = prepare(bundled, listed, ledger)
    ended: list[delivery.Summary] = []

    def send() -> None:
        options = {"connections": connections, "stop": stop, "progress": progress}
        ended.append(execute(plan, smtp(smtp_server), **options))

    # In a thread only so that a send that never stops fails this test instead of hanging it.
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sender.join(30)
    assert not sender.is_alive(), "the send did not stop"

    (summary,) = ended
    accepted = counts(smtp_server)
    assert set(accepted.values()) == {1}
    assert 2 <= summary.sent == len(accepted) < len(readers)
    assert (summary.deferred, summary.failed) == (0, 0)
    assert slow in accepted  # its reply was read after the stop, and recorded
    assert statuses(ledger) == {
        s.email: "sent" if s.email in accepted else "pending" for s in readers
    }
    again = prepare(bundled, listed, ledger)
    assert (again.in_flight, again.already) == (0, len(accepted))
    execute(again, smtp(smtp_server), connections=connections)
    assert counts(smtp_server) == {s.email: 1 for s in readers}


def test_stopped_send_waits_for_its_last_reply_without_busy_looping(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """A stopped send with a rate, waiting on a slow server's last reply, leaves the CPU idle."""
    slow = readers[1].email
    smtp_server.recorder.slow[slow] = 3.0
    stop, progress = stop_after(2)
    plan = prepare(bundled, listed, ledger)
    used: list[float] = []

    def send() -> None:
        started = time.thread_time()
        options = {"connections": 2, "rate": 20, "stop": stop, "progress": progress}
        execute(plan, smtp(smtp_server), sleep=time.sleep, **options)
        used.append(time.thread_time() - started)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sender.join(30)
    assert not sender.is_alive(), "the send did not stop"

    assert statuses(ledger)[slow] == "sent"
    # Three seconds spent waiting for the slow reply; a loop polling all along would burn them.
    (cpu,) = used
    assert cpu < 1.0


# -- a ledger another program keeps locked ---------------------------------------------------------


def lock_after(count: int, path: Path) -> tuple[list[sqlite3.Connection], Callable[..., None]]:
    """Return the shells it opens, and a callback that write-locks the ledger at outcome `count`."""
    shells: list[sqlite3.Connection] = []
    seen: list[delivery.Outcome] = []

    def progress(outcome: delivery.Outcome) -> None:
        seen.append(outcome)
        if len(seen) == count:
            shell = sqlite3.connect(path, isolation_level=None)
            shell.execute("BEGIN IMMEDIATE")
            shells.append(shell)

    return shells, progress


@pytest.mark.parametrize("connections", [1, 4])
def test_ledger_locked_mid_send_halts_with_nothing_sent_unrecorded(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    tmp_path: Path,
    connections: int,
) -> None:
    """A ledger locked mid-send stops it; no copy went out without its row saying `sending`."""
    path = tmp_path / "state.sqlite3"
    ledger = Ledger(path, busy_timeout=1)
    shells, progress = lock_after(3, path)
    plan = prepare(bundled, listed, ledger)

    with pytest.raises(delivery.Halted) as raised:
        execute(plan, smtp(smtp_server), connections=connections, progress=progress)
    (shell,) = shells
    now = statuses(ledger)  # reading goes on while the shell holds its write lock
    shell.execute("ROLLBACK")
    shell.close()

    halted = raised.value
    sent = {address for address, status in now.items() if status == "sent"}
    unrecorded = {address for address, status in now.items() if status == "sending"}
    received = set(counts(smtp_server))
    assert received == sent | unrecorded
    assert set(counts(smtp_server).values()) == {1}
    assert set(now.values()) <= {"sent", "sending", "pending"}
    assert (halted.summary.sent, halted.left, halted.unrecorded) == (
        len(sent),
        len(readers) - len(sent),
        len(unrecorded),
    )
    if connections == 1:  # at most the copy already under way when the lock came went out
        assert (len(sent), len(unrecorded) <= 1) == (3, True)
    assert isinstance(halted.cause, LedgerBusyError)
    assert str(path) in str(halted)

    again = prepare(bundled, listed, ledger)
    assert again.in_flight == len(unrecorded)
    execute(again, smtp(smtp_server), connections=connections)
    for address, got in smtp_server.recorder.by_recipient().items():
        assert len(got) == (2 if address in unrecorded else 1)
        assert {r.message_id for r in got} == {expected_id(bundled, address)}
    assert sorted(smtp_server.recorder.by_recipient()) == sorted(s.email for s in readers)
    ledger.close()


def test_ledger_locked_at_the_end_of_a_send_still_reports_it(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    tmp_path: Path,
) -> None:
    """Locked after the last copy, the send says everyone was dealt with and what to close."""
    path = tmp_path / "state.sqlite3"
    ledger = Ledger(path, busy_timeout=1)
    shells, progress = lock_after(len(readers), path)

    with pytest.raises(delivery.Halted) as raised:
        delivery.send_month(
            bundled,
            listed,
            NOVEMBER,
            ledger,
            smtp(smtp_server),
            now=NOW,
            clock=lambda: NOW,
            holder="a test",
            progress=progress,
        )
    for shell in shells:
        shell.execute("ROLLBACK")
        shell.close()

    assert (raised.value.summary.sent, raised.value.left, raised.value.unrecorded) == (11, 0, 0)
    assert str(raised.value) == (
        f"The send ended, but the delivery ledger {path} stayed locked by another program for "
        f"1 second, so its end is not recorded there: close whatever holds the database open at "
        f"{path} (an sqlite3 shell, say)."
    )
    assert set(statuses(ledger).values()) == {"sent"}
    assert counts(smtp_server) == {s.email: 1 for s in readers}
    ledger.close()


# -- the relay's limits (newsletter.delivery) -----------------------------------------------------

DAY = timedelta(hours=24)
HONG_KONG = ZoneInfo("Asia/Hong_Kong")


def with_delivery(tmp_path: Path, block: str) -> catalogue.Catalogue:
    """Return the bundled catalogue with a `newsletter.delivery` block, as an editor writes it."""
    text = (ROOT / "items.yaml").read_text(encoding="utf-8")
    line = "  subscribers: subscribers.csv\n"
    path = tmp_path / "items.yaml"
    path.write_text(text.replace(line, f"{line}  delivery: {block}\n"), encoding="utf-8")
    return catalogue.load(path)


def test_rate_in_the_catalogue_paces_a_send_nobody_gave_a_rate(
    tmp_path: Path, listed: subscribers.SubscriberList, ledger: Ledger, smtp_server: SmtpServer
) -> None:
    """`rate: "1/minute"` in items.yaml spaces a scheduled or console send a minute apart, as
    `--rate` does; a rate given for the run replaces it. (A rehearsal to outbox/ goes to no relay,
    and is not paced.)"""
    cat = with_delivery(tmp_path, '{rate: "1/minute"}')
    pauses: list[float] = []

    result = send_month(cat, listed, ledger, smtp(smtp_server), sleep=pauses.append)

    assert result.summary is not None
    assert result.summary.sent == 11
    assert len(pauses) == 10
    assert all(59 < pause <= 60 for pause in pauses), pauses
    pauses.clear()
    again = send_month(
        cat,
        listed,
        ledger,
        smtp(smtp_server),
        sleep=pauses.append,
        resend=True,
        rate=0.02,
    )
    assert again.summary is not None
    assert again.summary.sent == 11
    assert len(pauses) == 10
    assert all(49 < pause <= 50 for pause in pauses), pauses


def test_connections_in_the_catalogue_are_opened_at_once(
    smtp_server: SmtpServer, tmp_path: Path, listed: subscribers.SubscriberList, ledger: Ledger
) -> None:
    """`connections: 3` in items.yaml has a scheduled or console send use three connections at
    once; one given for the run replaces it."""
    cat = with_delivery(tmp_path, "{connections: 3}")

    result = send_month(cat, listed, ledger, smtp(smtp_server))

    assert result.summary is not None
    assert result.summary.sent == 11
    assert smtp_server.recorder.peak_sessions == 3
    assert set(counts(smtp_server).values()) == {1}
    smtp_server.recorder.peak_sessions = 0
    send_month(cat, listed, ledger, smtp(smtp_server), resend=True, connections=1)
    assert smtp_server.recorder.peak_sessions == 1
    assert set(counts(smtp_server).values()) == {2}


def test_daily_limit_counts_messages_in_flight_on_every_connection(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """Over four connections a daily limit of 7 lets exactly 7 go, never one per connection more;
    the other 4 wait, pending, until 24 hours after, and go then, once."""
    summary = execute(
        prepare(bundled, listed, ledger), smtp(smtp_server), connections=4, daily_limit=7
    )

    assert (summary.sent, summary.held, summary.deferred, summary.failed) == (7, 4, 0, 0)
    assert summary.held_until == (NOW + DAY).astimezone(HONG_KONG)
    assert summary.ok
    assert len(smtp_server.recorder.messages) == 7
    assert sorted(statuses(ledger).values()) == ["pending"] * 4 + ["sent"] * 7

    again = execute(
        prepare(bundled, listed, ledger), smtp(smtp_server), connections=4, daily_limit=7
    )
    assert (again.sent, again.held, again.held_until) == (0, 4, summary.held_until)
    assert len(smtp_server.recorder.messages) == 7

    later = prepare(bundled, listed, ledger).execute(
        smtp(smtp_server), clock=lambda: NOW + DAY, connections=4, daily_limit=7, policy=FAST
    )
    assert (later.sent, later.held, later.held_until) == (4, 0, None)
    assert counts(smtp_server) == {s.email: 1 for s in readers}


def test_daily_limit_counts_every_month_in_a_rolling_24_hours(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    ledger: Ledger,
) -> None:
    """What October's send took an hour ago counts against November's; each recipient frees a
    place 24 hours after it was accepted, not at midnight."""
    october = [f"october{n}@example.org" for n in range(5)]
    ledger.enrol("2025-10", [(a, a, None, "*") for a in october])
    ledger.record("2025-10", [Mark(a, "sent") for a in october], at=NOW - timedelta(hours=1))

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server), daily_limit=8)

    assert (summary.sent, summary.held) == (3, 8)
    # All 8 fit once November's 3 have aged out too.
    assert summary.held_until == (NOW + DAY).astimezone(HONG_KONG)
    # October's 5 free their places an hour earlier: 5 go then, and 3 wait for November's.
    at = NOW + DAY - timedelta(hours=1)
    later = prepare(bundled, listed, ledger).execute(
        smtp(smtp_server), clock=lambda: at, daily_limit=8, policy=FAST
    )
    assert (later.sent, later.held, later.held_until) == (5, 3, summary.held_until)
    assert len(smtp_server.recorder.messages) == 8


def test_a_refused_recipient_does_not_use_up_the_daily_limit(
    smtp_server: SmtpServer,
    bundled: catalogue.Catalogue,
    listed: subscribers.SubscriberList,
    readers: list[subscribers.Subscriber],
    ledger: Ledger,
) -> None:
    """The limit counts recipients the relay accepted: a 550 leaves its place to the next one."""
    smtp_server.recorder.refuse[readers[1].email] = "550 5.1.1 no such user"

    summary = execute(prepare(bundled, listed, ledger), smtp(smtp_server), daily_limit=5)

    assert (summary.sent, summary.failed, summary.held) == (5, 1, 5)
    assert len(smtp_server.recorder.messages) == 5
