"""`digest send` and `digest status` end to end: the real CLI, a real SMTP server, real kills."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from conftest import Received, SmtpServer, finish, wait_for
from digest.cli import cli
from digest.send.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(".digest/state.sqlite3")
SEND = ("send", "--month", "2025-11")

# The bundled list, in file order, without smith.john (whose categories have no November items).
READERS = [
    "chan.taiman@example.org",
    "lee.kawai@example.org",
    "wong.siuming@example.org",
    "cheung.mei@example.org",
    "ng.chiho@example.org",
    "lam.wingsze@example.org",
    "ho.kinfai@example.org",
    "yip.sukyee@example.org",
    "tsang.hiuyan@example.org",
    "leung.kamwah@example.org",
    "garcia.maria@example.org",
]
SUBJECT = "What's Happening — November 2025"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d HKT \(\+08:00\)"
INTERRUPTED = (
    "Interrupted. Run the same command again to send the rest; a message that was in flight is "
    "sent again with the same Message-ID.\n"
)
IN_FLIGHT = (
    "1 message may have gone out when the last run stopped; it is sent again with the same "
    "Message-ID, so mail clients show each once."
)
NOT_EVERYONE = (
    "Not everyone has the digest: run the same command later to retry the deferred; "
    "`digest status` lists the failed.\n"
)


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled catalogue and subscriber list in tmp_path, and no delivery settings inherited."""
    for name in ("DIGEST_SMTP_URL", "DIGEST_SMTP_PASSWORD", "DIGEST_STATE"):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    return tmp_path


@pytest.fixture
def smtp(smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> SmtpServer:
    """The recording SMTP server, named in DIGEST_SMTP_URL for the CLI and its subprocesses."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    return smtp_server


@pytest.fixture
def ask(run: Callable[..., Result]) -> Callable[..., Result]:
    """Run `digest ARGS...` in tmp_path (as `run` does), typing `answer` at its question."""

    def invoke(answer: str, *args: str) -> Result:
        return CliRunner().invoke(cli, list(args), input=answer, catch_exceptions=False)

    return invoke


def statuses(tmp_path: Path) -> dict[str, str]:
    """Return the ledger's status of every November recipient, by address."""
    ledger = Ledger(tmp_path / STATE)
    try:
        return {row.address: row.status for row in ledger.deliveries("2025-11")}
    finally:
        ledger.close()


def message_ids(received: list[Received]) -> set[str]:
    return {r.message_id for r in received}


def text_of(received: Received) -> str:
    body = received.message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def header(transport: str, todo: int = 11, already: int = 0) -> str:
    """Return the lines `digest send` prints before sending."""
    have = f", {already} already have it" if already else ""
    return (
        f"Subject:    {SUBJECT}\n"
        "Items:      3 in 3 categories\n"
        f"Recipients: {todo} to send{have}\n"
        f"Transport:  {transport}\n"
    )


# A send imports the list into the subscriber store first, and says what that changed beside the
# list's other notices (stderr): a first send adds every address.
IMPORTED = "subscribers.csv: imported: 12 added, 0 updated, 0 ended (no longer in the directory).\n"


def summary(transport: str, sent: int = 11, already: int = 0, failed: int = 0) -> str:
    return (
        f"November 2025: sent {sent}, already sent {already}, deferred 0, failed {failed} "
        f"(via {transport}).\n"
    )


NEXT_RUN = (
    r"Next scheduled run: \d{4}-\d\d-01 09:00 HKT \(\+08:00\), for \w+ \d{4} "
    r"\(when `digest schedule` is running\)\.\n"
)


def ledger_part(result: Result) -> str:
    """Return `digest status` output up to the next-run line, which must close it."""
    match = re.search(NEXT_RUN + r"\Z", result.stdout)
    assert match is not None, result.stdout
    return result.stdout[: match.start()]


def assert_status(result: Result, sent: int, failed: int = 0, pending: int = 0) -> None:
    lines = ledger_part(result).splitlines()
    assert lines[0] == "month      sent failed deferred pending  last activity"
    row = f"{'2025-11':<8} {sent:>6} {failed:>6} {0:>8} {pending:>7}  {STAMP}"
    assert re.fullmatch(row, lines[1]), lines[1]


def assert_crash_safe(by_recipient: dict[str, list[Received]], readers: list[str]) -> list[str]:
    """Assert the kill guarantees; return the recipients who got two copies."""
    assert sorted(by_recipient) == sorted(readers)
    twice = [address for address, got in by_recipient.items() if len(got) > 1]
    assert all(len(got) <= 2 for got in by_recipient.values())
    assert len(twice) <= 1, twice
    for address in twice:
        assert len(message_ids(by_recipient[address])) == 1
    return twice


# -- the outbox ------------------------------------------------------------------------------------


REHEARSED = "November 2025: 11 messages written to outbox/, none emailed (a rehearsal), failed 0.\n"
OUTBOX_NOTE = (
    "DIGEST_SMTP_URL is not set, so nothing was emailed: each message was written to outbox/ as an "
    ".eml file. A rehearsal: nobody is recorded as sent, so a send with DIGEST_SMTP_URL set "
    "reaches everyone.\n"
)
OLD_TITLE = "HKUST Commences Preparations for New Medical School"
NEW_TITLE = "HKUST Begins Work on a New Medical School"


def retitle(tmp_path: Path) -> None:
    """Fix a title in the catalogue, as the office does after a look at the outbox."""
    path = tmp_path / "items.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count(OLD_TITLE) == 1
    path.write_text(text.replace(OLD_TITLE, NEW_TITLE), encoding="utf-8")


def test_outbox_is_a_rehearsal_and_the_real_send_reaches_everyone(
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A look at outbox/ first must not stop the faculty getting the digest, corrected, by email."""
    first = run(*SEND, "--yes")
    assert first.exit_code == 0, first.output
    assert first.stdout == header("outbox/") + REHEARSED + OUTBOX_NOTE
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == sorted(
        f"digest-2025-11-{address}.eml" for address in READERS
    )
    assert statuses(tmp_path) == {}
    retitle(tmp_path)
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)

    real = run(*SEND, "--yes")

    assert real.exit_code == 0, real.output
    assert real.stdout == header(smtp_server.url) + summary(smtp_server.url)
    got = smtp_server.recorder.by_recipient()
    assert sorted(got) == sorted(READERS)
    assert all(len(messages) == 1 for messages in got.values())
    with_items = [r for r in smtp_server.recorder.messages if "Medical School" in text_of(r)]
    assert with_items
    assert all(NEW_TITLE in text_of(r) for r in with_items)
    assert set(statuses(tmp_path).values()) == {"sent"}


def test_outbox_run_again_rewrites_every_file_and_records_nothing(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    """A second look at outbox/ must show the catalogue as it is now, and still email nobody."""
    assert run(*SEND, "--yes").exit_code == 0
    retitle(tmp_path)

    again = run(*SEND, "--yes")

    assert again.exit_code == 0, again.output
    assert again.stdout == header("outbox/") + REHEARSED + OUTBOX_NOTE
    files = sorted((tmp_path / "outbox").iterdir())
    assert [p.name for p in files] == sorted(f"digest-2025-11-{a}.eml" for a in READERS)
    texts = [p.read_text(encoding="utf-8") for p in files]
    assert not any(OLD_TITLE in text for text in texts)
    assert any(NEW_TITLE in text for text in texts)
    assert statuses(tmp_path) == {}


def test_status_tells_a_rehearsal_from_a_send(
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Staff reading `digest status` after an outbox run must not believe the digest went out."""
    assert run(*SEND, "--yes").exit_code == 0

    rehearsed = run("status")

    assert rehearsed.exit_code == 0
    assert re.fullmatch(
        "Nothing sent yet.\n"
        f"2025-11: 11 messages written to outbox/ at {STAMP} \\(a rehearsal: nothing was "
        "emailed\\).\n",
        ledger_part(rehearsed),
    ), rehearsed.stdout
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    assert run(*SEND, "--yes").exit_code == 0

    sent = run("status")

    assert_status(sent, sent=11)
    assert re.search(
        f"^2025-11: 11 messages written to outbox/ at {STAMP} \\(a rehearsal", sent.stdout, re.M
    )


def test_outbox_test_copy_keeps_the_real_message(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    """A [TEST] copy to a subscriber must not replace the real message waiting in outbox/."""
    assert run(*SEND, "--yes").exit_code == 0
    real = tmp_path / "outbox" / "digest-2025-11-chan.taiman@example.org.eml"
    before = real.read_bytes()

    result = run(*SEND, "--to", "chan.taiman@example.org")

    assert result.exit_code == 0, result.output
    assert real.read_bytes() == before
    tests = [p for p in (tmp_path / "outbox").iterdir() if b"[TEST]" in p.read_bytes()]
    assert [p.name for p in tests] == ["test-digest-2025-11-chan.taiman@example.org.eml"]


def test_outbox_keeps_a_message_for_each_subscriber(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    """Addresses that differ only where a file name cannot tell them apart get one .eml each."""
    (tmp_path / "subscribers.csv").write_text("email,name\na=b@example.org,A\na_b@example.org,B\n")
    result = run(*SEND, "--yes")
    assert result.exit_code == 0, result.output
    assert "November 2025: 2 messages written to outbox/, none emailed" in result.stdout
    written = [message_from_bytes(p.read_bytes()) for p in (tmp_path / "outbox").iterdir()]
    assert sorted(str(m["To"]) for m in written) == ["A <a=b@example.org>", "B <a_b@example.org>"]


def test_test_copies_to_one_address_in_two_cases_are_one(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    """`--to` given one address twice, in two cases, sends one copy and says one."""
    result = run(*SEND, "--to", "Chan.Taiman@example.org", "--to", "chan.taiman@example.org")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Sent 1 test copy of November 2025 ([TEST] in the subject, not recorded) via outbox/.\n"
    )
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [
        "test-digest-2025-11-chan.taiman@example.org.eml"
    ]


# -- SMTP ------------------------------------------------------------------------------------------


def test_smtp_send_and_status(
    run: Callable[..., Result],
    smtp: SmtpServer,
    database_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Staff would see a wrong count, or subscribers a missing or doubled digest (either engine)."""
    if database_url is not None:
        monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    where = smtp.url

    result = run(*SEND, "--yes")

    assert result.exit_code == 0, result.output
    assert result.stdout == header(where) + summary(where)
    assert result.stderr == IMPORTED
    got = smtp.recorder.by_recipient()
    assert sorted(got) == sorted(READERS)
    assert all(len(messages) == 1 for messages in got.values())
    assert {str(r.message["Subject"]) for r in smtp.recorder.messages} == {SUBJECT}
    assert {r.mail_from for r in smtp.recorder.messages} == {"provost@example.edu"}
    assert_status(run("status"), sent=11)


def test_decline_sends_and_records_nothing(
    run: Callable[..., Result], ask: Callable[..., Result], smtp: SmtpServer
) -> None:
    """Answering no (or nothing) must send nothing and leave no trace of a send in the ledger."""
    for answer in ("n\n", ""):
        result = ask(answer, *SEND)
        assert result.exit_code == 1
        assert result.stdout == header(smtp.url) + (
            f"Send November 2025 to 11 subscribers? [y/N]: {answer}"
        )
        # The import is the list's, not a send's: it stays, and the second try has nothing new.
        assert result.stderr == (IMPORTED if answer else "") + "Aborted!\n"
        assert smtp.recorder.messages == []
        assert ledger_part(run("status")) == "Nothing sent yet.\n"

    result = ask("y\n", *SEND)

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        header(smtp.url) + "Send November 2025 to 11 subscribers? [y/N]: y\n" + summary(smtp.url)
    )
    assert sorted(smtp.recorder.by_recipient()) == sorted(READERS)


def test_declined_then_corrected_sends_the_correction(
    run: Callable[..., Result], ask: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """Staff who say no to fix a typo would otherwise send everyone the uncorrected digest."""
    assert ask("n\n", *SEND).exit_code == 1
    catalogue = tmp_path / "items.yaml"
    old = "HKUST Commences Preparations for New Medical School"
    new = "HKUST Commences Preparations for a New Medical School"
    catalogue.write_text(catalogue.read_text(encoding="utf-8").replace(old, new), "utf-8")

    result = run(*SEND, "--yes")

    assert result.exit_code == 0, result.output
    assert "catalogue changed" not in result.stdout
    first = smtp.recorder.by_recipient()["chan.taiman@example.org"][0]
    assert new in text_of(first)


def test_dry_run_lists_and_sends_nothing(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """A dry run that sent mail, or left a ledger behind, would defeat its purpose."""
    result = run(*SEND, "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Dry run: nothing is sent or recorded.\n"
        f"Subject:    {SUBJECT}\n"
        "Items:      3 in 3 categories\n"
        "Recipients: 11 to send\n"
        f"Transport:  {smtp.url}\n"
        "  chan.taiman@example.org  Prof. Chan Tai-man  (all categories)\n"
        "  lee.kawai@example.org  Dr. Lee Ka-wai  (all categories)\n"
        "  wong.siuming@example.org  Prof. Wong Siu-ming  (all categories)\n"
        "  cheung.mei@example.org  Dr. Cheung Mei  (institutional-advancement, recognition)\n"
        "  ng.chiho@example.org  Prof. Ng Chi-ho  (all categories)\n"
        "  lam.wingsze@example.org  Dr. Lam Wing-sze  (engagement, engagement-and-visit)\n"
        "  ho.kinfai@example.org  Prof. Ho Kin-fai  (all categories)\n"
        "  yip.sukyee@example.org  Yip, Suk-yee  (all categories)\n"
        "  tsang.hiuyan@example.org  Dr. Tsang Hiu-yan  (collaboration, visit)\n"
        "  leung.kamwah@example.org  Prof. Leung Kam-wah  (all categories)\n"
        "  garcia.maria@example.org  Dr. María García  (all categories)\n"
        "Not sent: 1 subscriber whose categories have no items this month.\n"
    )
    assert smtp.recorder.messages == []
    assert not (tmp_path / ".digest").exists()


def test_dry_run_with_test_addresses_sends_nothing(
    run: Callable[..., Result], smtp: SmtpServer
) -> None:
    """`--dry-run --to ADDR` must not mail a test copy."""
    result = run(*SEND, "--dry-run", "--to", "a@example.org")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Dry run: nothing is sent. A [TEST] copy of November 2025 would go to a@example.org "
        f"via {smtp.url}.\n"
    )
    assert smtp.recorder.messages == []


def test_test_copies_stay_outside_the_ledger(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """A test copy counted as sent, or sharing the real Message-ID, would hide the real digest."""
    result = run(*SEND, "--to", "a@example.org", "--to", "b@example.org")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Sent 2 test copies of November 2025 ([TEST] in the subject, not recorded) "
        f"via {smtp.url}.\n"
    )
    tests = list(smtp.recorder.messages)
    assert sorted(r.rcpt_tos[0] for r in tests) == ["a@example.org", "b@example.org"]
    assert {str(r.message["Subject"]) for r in tests} == {f"[TEST] {SUBJECT}"}
    assert not (tmp_path / STATE).exists()

    real = run(*SEND, "--yes")

    assert real.exit_code == 0, real.output
    assert real.stdout == header(smtp.url) + summary(smtp.url)
    sent = smtp.recorder.messages[len(tests) :]
    assert sorted(r.rcpt_tos[0] for r in sent) == sorted(READERS)
    assert message_ids(tests).isdisjoint(message_ids(sent))
    assert len(message_ids(tests)) == 2


def test_test_copy_to_a_subscriber_has_its_own_message_id(
    run: Callable[..., Result], smtp: SmtpServer
) -> None:
    """A tester on the list whose client took the real digest for a duplicate would never see it."""
    assert run(*SEND, "--to", "chan.taiman@example.org").exit_code == 0
    assert run(*SEND, "--yes").exit_code == 0

    copies = smtp.recorder.by_recipient()["chan.taiman@example.org"]

    assert [str(r.message["Subject"]).startswith("[TEST] ") for r in copies] == [True, False]
    assert len(message_ids(copies)) == 2


def test_test_address_must_be_an_address(run: Callable[..., Result], smtp: SmtpServer) -> None:
    """A typo in --to must be a usage error, not a silent send elsewhere."""
    result = run(*SEND, "--to", "not-an-address")

    assert result.exit_code == 2
    assert (
        "Error: Invalid value for '--to': 'not-an-address' is not an email address: "
        "An email address must have an @-sign.\n"
    ) in result.stderr
    assert smtp.recorder.messages == []


def test_refused_recipient_fails_alone(run: Callable[..., Result], smtp: SmtpServer) -> None:
    """One dead mailbox must not stop the rest, and staff must learn which one and why."""
    smtp.recorder.refuse["lee.kawai@example.org"] = "550 5.1.1 no such user"

    result = run(*SEND, "--yes")

    assert result.exit_code == 1
    assert result.stdout == header(smtp.url) + summary(smtp.url, sent=10, failed=1)
    assert result.stderr == (
        IMPORTED + "failed: lee.kawai@example.org: 550 5.1.1 no such user\n" + NOT_EVERYONE
    )
    assert sorted(smtp.recorder.by_recipient()) == sorted(set(READERS) - {"lee.kawai@example.org"})
    status = run("status")
    assert_status(status, sent=10, failed=1)
    assert ledger_part(status).splitlines()[2:] == [
        "Not delivered:",
        "  2025-11 failed: lee.kawai@example.org: 550 5.1.1 no such user",
    ]
    again = run(*SEND, "--yes")
    assert again.exit_code == 0
    assert re.fullmatch(
        f"November 2025 was already sent to 10 subscribers, the last at {STAMP}; 1 failed, see "
        "`digest status`. Nothing to send; --resend sends it again.\n",
        again.stdout,
    )
    assert len(smtp.recorder.messages) == 10


def copies_kept(tmp_path: Path) -> dict[str, list[tuple[int, str]]]:
    """Return the ledger's earlier copies of November: (copy, Message-ID) by address."""
    with Ledger(tmp_path / STATE) as ledger:
        kept: dict[str, list[tuple[int, str]]] = {}
        for earlier in ledger.copies("2025-11"):
            kept.setdefault(earlier.address, []).append((earlier.copy, earlier.message_id))
        return kept


def current_copies(tmp_path: Path) -> dict[str, tuple[str, int]]:
    """Return each November row's (status, copy) by address."""
    with Ledger(tmp_path / STATE) as ledger:
        return {row.address: (row.status, row.copy) for row in ledger.deliveries("2025-11")}


def test_resend_sends_everyone_a_new_copy_with_a_new_message_id(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """A corrected --resend copy must show in every mail client (a held Message-ID is dropped)."""
    assert run(*SEND, "--yes").exit_code == 0
    first = {r.rcpt_tos[0]: r.message_id for r in smtp.recorder.messages}

    result = run(*SEND, "--yes", "--resend")

    assert result.exit_code == 0, result.output
    assert result.stdout == header(smtp.url, already=11) + summary(smtp.url)
    got = smtp.recorder.by_recipient()
    assert sorted(got) == sorted(READERS)
    assert {len(messages) for messages in got.values()} == {2}
    assert all(len(message_ids(messages)) == 2 for messages in got.values())
    assert copies_kept(tmp_path) == {address: [(0, first[address])] for address in READERS}
    assert current_copies(tmp_path) == dict.fromkeys(READERS, ("sent", 1))
    second = {address: messages[1].message_id for address, messages in got.items()}
    assert all(second[a] == first[a].replace("@", ".r1@") for a in READERS)

    run(*SEND, "--yes", "--resend")

    assert {len(message_ids(messages)) for messages in smtp.recorder.by_recipient().values()} == {3}
    assert {len(kept) for kept in copies_kept(tmp_path).values()} == {2}


def test_declined_resend_forgets_nothing(
    run: Callable[..., Result], ask: Callable[..., Result], smtp: SmtpServer
) -> None:
    """Saying no to --resend must not make the next plain send mail everyone a second time."""
    assert run(*SEND, "--yes").exit_code == 0

    declined = ask("n\n", *SEND, "--resend")

    assert declined.exit_code == 1
    assert declined.stdout == (
        "Subject:    What's Happening — November 2025\n"
        "Items:      3 in 3 categories\n"
        "Recipients: 11 to send, 11 already have it\n"
        f"Transport:  smtp://127.0.0.1:{smtp.port}\n"
        "Send November 2025 again to all 11 subscribers, 11 of whom already have it? [y/N]: n\n"
    )
    assert_status(run("status"), sent=11)
    assert run(*SEND, "--yes").stdout.startswith("November 2025 was already sent to 11 ")
    assert len(smtp.recorder.messages) == 11


# -- crashes, interruptions, a second sender -------------------------------------------------------


def write_readers(tmp_path: Path, count: int) -> list[str]:
    """Replace the subscriber list with `count` readers of every category; return them."""
    readers = [f"reader{n:03}@example.org" for n in range(count)]
    lines = ["email,name", *(f"{address},Reader {n}" for n, address in enumerate(readers))]
    (tmp_path / "subscribers.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return readers


# Where the kill lands: "reply", as the server answers message k (the client has not yet recorded
# it as sent); "data", half-way through the server's pause over message k+1's DATA.
@pytest.mark.parametrize(
    ("list_size", "kill_at", "moment"),
    [
        (None, 1, "reply"),
        (None, 1, "data"),
        (None, 4, "data"),
        (None, 8, "reply"),
        (None, 10, "data"),
        (60, 30, "data"),
    ],
)
def test_killed_send_then_rerun_sends_each_once(
    run: Callable[..., Result],
    smtp: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    list_size: int | None,
    kill_at: int,
    moment: str,
) -> None:
    """A send killed with -9 and run again must leave no one without and no one doubled."""
    readers = READERS if list_size is None else write_readers(tmp_path, list_size)
    recorder = smtp.recorder
    recorder.delay = delay = 0.05 if list_size is None else 0.03
    proc = spawn(*SEND, "--yes")
    wait_for(lambda: len(recorder.messages) >= kill_at, proc, f"{kill_at} messages")
    if moment == "data":
        time.sleep(delay / 2)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    time.sleep(delay * 3)  # let the server finish a DATA it was holding
    before = statuses(tmp_path)
    received = {r.rcpt_tos[0] for r in recorder.messages}
    in_flight = [address for address, status in before.items() if status == "sending"]
    already = sum(1 for status in before.values() if status == "sent")
    # At most one message is in flight: the one just answered or the next one.
    assert set(in_flight) <= set(readers[kill_at - 1 : kill_at + 1])
    # Whatever arrived was recorded as sent or in flight; nothing recorded as sent went missing.
    assert received <= {a for a, s in before.items() if s in ("sent", "sending")}
    assert {a for a, s in before.items() if s == "sent"} <= received
    recorder.delay = 0

    rerun = run(*SEND, "--yes")

    assert rerun.exit_code == 0, rerun.output
    notice = IN_FLIGHT + "\n" if in_flight else ""
    todo = len(readers) - already
    assert rerun.stdout == (
        header(smtp.url, todo=todo, already=already) + notice + summary(smtp.url, todo, already)
    )
    twice = assert_crash_safe(recorder.by_recipient(), readers)
    assert set(twice) <= set(in_flight) & received
    record_property("received_at_kill", len(received))
    record_property("in_flight", in_flight)
    record_property("duplicates", twice)


@pytest.mark.parametrize("kill_at", [1, 6])
@pytest.mark.parametrize("rerun", [("--resend",), ()], ids=["same-command", "plain-send"])
def test_killed_resend_then_rerun_gives_each_one_new_copy(
    run: Callable[..., Result],
    smtp: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    kill_at: int,
    rerun: tuple[str, ...],
) -> None:
    """A --resend killed with -9 and run again must not mail anyone a third, visible copy."""
    assert run(*SEND, "--yes").exit_code == 0
    recorder = smtp.recorder
    first = {r.rcpt_tos[0]: r.message_id for r in recorder.messages}
    recorder.delay = 0.05
    proc = spawn(*SEND, "--yes", "--resend")
    wait_for(lambda: len(recorder.messages) >= len(READERS) + kill_at, proc, "the resend")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    recorder.delay = 0

    again = run(*SEND, "--yes", *rerun)

    assert again.exit_code == 0, again.output
    if rerun:
        assert "Going on with the resend begun on " in again.stdout
    got = recorder.by_recipient()
    assert sorted(got) == sorted(READERS)
    twice = []
    for address, messages in got.items():
        ids = [m.message_id for m in messages]
        assert ids[0] == first[address]
        assert len(set(ids[1:])) == 1, ids  # every new copy of one reader carries one id
        assert first[address] not in ids[1:], ids
        assert len(ids) in (2, 3)
        if len(ids) == 3:
            twice.append(address)
    assert len(twice) <= 1, twice  # at most the message in flight at the kill
    assert current_copies(tmp_path) == dict.fromkeys(READERS, ("sent", 1))
    assert copies_kept(tmp_path) == {address: [(0, first[address])] for address in READERS}


def test_ctrl_c_finishes_the_message_in_flight(
    run: Callable[..., Result],
    smtp: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    """Ctrl-C must stop after the message in flight, say how to finish, and send nobody twice."""
    recorder = smtp.recorder
    recorder.delay = 0.05
    proc = spawn(*SEND, "--yes")
    wait_for(lambda: len(recorder.messages) >= 6, proc, "6 messages")
    time.sleep(0.025)  # half-way through the server's pause over the 7th message's DATA
    proc.send_signal(signal.SIGINT)

    status, out, err = finish(proc)

    # The message in flight when the signal came was finished: the ledger has every message the
    # server accepted, and no more (on a loaded machine the signal may land a message later).
    received = len(recorder.messages)
    assert 6 <= received < len(READERS)
    assert status == 1
    assert out == header(smtp.url) + summary(smtp.url, sent=received)
    left = len(READERS) - received
    assert err == IMPORTED + (
        "Stopping after the message in flight (Ctrl-C again to stop at once).\n"
        f"Stopped: {left} subscribers not sent yet. Run the same command again to send the rest.\n"
    )
    assert sorted(set(statuses(tmp_path).values())) == ["pending", "sent"]
    recorder.delay = 0
    rerun = run(*SEND, "--yes")
    assert rerun.exit_code == 0, rerun.output
    assert IN_FLIGHT not in rerun.stdout
    assert rerun.stdout.endswith(summary(smtp.url, sent=left, already=received))
    assert assert_crash_safe(recorder.by_recipient(), READERS) == []
    assert_status(run("status"), sent=11, pending=0)


def test_second_ctrl_c_stops_at_once(
    run: Callable[..., Result],
    smtp: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """A second Ctrl-C must stop at once, and the rerun must finish the month cleanly."""
    recorder = smtp.recorder
    recorder.delay = 0.3
    proc = spawn(*SEND, "--yes")
    wait_for(lambda: len(recorder.messages) >= 2, proc, "2 messages")
    time.sleep(0.1)  # inside the server's pause over the 3rd message's DATA
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)

    status, out, err = finish(proc)

    assert status == 1
    assert err.endswith(INTERRUPTED)
    assert out == header(smtp.url)
    time.sleep(0.4)  # let the server finish the DATA it was holding
    recorder.delay = 0
    rerun = run(*SEND, "--yes")
    assert rerun.exit_code == 0, rerun.output
    twice = assert_crash_safe(recorder.by_recipient(), READERS)
    assert_status(run("status"), sent=11, pending=0)
    record_property("in_flight_notice", IN_FLIGHT in rerun.stdout)
    record_property("duplicates", twice)


def test_second_sender_is_refused(
    run: Callable[..., Result],
    smtp: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    """Two sends of one month at once must never interleave into double deliveries."""
    recorder = smtp.recorder
    recorder.delay = 0.12
    first = spawn(*SEND, "--yes")
    wait_for(lambda: len(recorder.messages) >= 1, first, "the first message")

    second = run(*SEND, "--yes")

    assert first.poll() is None, "the first send finished too soon to test anything"
    assert second.exit_code == 1
    assert second.stdout == ""
    assert re.fullmatch(
        rf"another send of 2025-11 is running \(pid {first.pid} on [^,]+, digest send by "
        r"[^,]+, since [^)]+\); wait for it to finish, or stop it, then run this again\n",
        second.stderr,
    ), second.stderr
    status, out, err = finish(first)
    assert (status, err) == (0, IMPORTED)
    assert out == header(smtp.url) + summary(smtp.url)
    got = recorder.by_recipient()
    assert sorted(got) == sorted(READERS)
    assert all(len(messages) == 1 for messages in got.values())


# -- status, check and the lists -------------------------------------------------------------------


def test_status_before_any_send(run: Callable[..., Result]) -> None:
    """Staff asking what was sent before anything was must get an answer, not a traceback."""
    result = run("status")

    assert result.exit_code == 0
    assert ledger_part(result) == "Nothing sent yet (.digest/state.sqlite3 does not exist).\n"


def test_check_counts_subscribers(run: Callable[..., Result]) -> None:
    """`digest check` must say how many people the list holds."""
    result = run("check")

    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("; subscribers.csv: 12 subscribers.\n")


def test_bad_address_stops_check_and_send(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """A bad row must be named by its line before anyone is sent anything."""
    with (tmp_path / "subscribers.csv").open("a", encoding="utf-8") as listed:
        listed.write("not-an-address,Someone,\n")
    error = (
        "subscribers.csv:14: email: 'not-an-address' is not an email address: "
        "An email address must have an @-sign.\n"
    )
    refusal = (
        "subscribers.csv: an invalid row, so nothing was sent: correct it, or run the same "
        "command with --skip-invalid to send to the valid rows only\n"
    )

    for args, stderr in ((("check",), error), ((*SEND, "--yes"), error + refusal)):
        result = run(*args)
        assert result.exit_code == 1, args
        assert result.stderr == stderr
        assert result.stdout == ""
    assert smtp.recorder.messages == []
    assert not (tmp_path / STATE).exists()


# Three rows added to the bundled list: a bad address, a repeat in other letters, and an unknown
# category.
BAD_ROWS = "x@,Someone,\nChan.Taiman@Example.org,Chan again,\nnew.reader@example.org,New,nope\n"
X_ERROR = (
    "subscribers.csv:14: email: 'x@' is not an email address: "
    "There must be something after the @-sign.\n"
)
NOPE_ERROR = (
    "subscribers.csv:16: categories: 'nope' not declared in the catalogue; declared: achievement, "
    "collaboration, engagement, engagement-and-visit, institutional-advancement, recognition, "
    "visit\n"
)
DUPLICATE = (
    "warning: subscribers.csv:15: email: 'Chan.Taiman@Example.org' is a duplicate of line 2 "
    "(addresses compare case-insensitively); sent once, with line 2's name and categories\n"
)


def test_every_bad_row_is_listed_before_the_send_is_refused(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """Staff see every row to fix, with its line, and how to send anyway; nobody is sent to."""
    with (tmp_path / "subscribers.csv").open("a", encoding="utf-8") as listed:
        listed.write(BAD_ROWS)

    result = run(*SEND, "--yes")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        DUPLICATE
        + X_ERROR
        + NOPE_ERROR
        + "subscribers.csv: 2 invalid rows, so nothing was sent: correct them, or run the same "
        "command with --skip-invalid to send to the valid rows only\n"
    )
    assert smtp.recorder.messages == []
    assert not (tmp_path / STATE).exists()


def test_skip_invalid_sends_to_the_valid_rows_and_names_the_rest(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """With --skip-invalid the valid rows get the digest and the bad ones are not attempted;
    once corrected, the same command sends to them alone."""
    path = tmp_path / "subscribers.csv"
    bundled = path.read_text(encoding="utf-8")
    path.write_text(bundled + BAD_ROWS, encoding="utf-8")

    result = run(*SEND, "--yes", "--skip-invalid")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Skipping 2 invalid rows of subscribers.csv (lines 14 and 16); correct them and run the "
        "same command again to send to them too.\n" + header(smtp.url) + summary(smtp.url)
    )
    assert result.stderr == (
        DUPLICATE + IMPORTED + "skipped: " + X_ERROR + "skipped: " + NOPE_ERROR
    )
    got = smtp.recorder.by_recipient()
    assert sorted(got) == sorted(READERS)
    assert all(len(messages) == 1 for messages in got.values())
    assert sorted(statuses(tmp_path)) == sorted(READERS)  # the bad rows were never enrolled

    path.write_text(
        bundled + "x.ming@example.org,Someone,\nnew.reader@example.org,New,engagement\n",
        encoding="utf-8",
    )
    again = run(*SEND, "--yes")

    assert again.exit_code == 0, again.output
    assert again.stdout == header(smtp.url, todo=2, already=11) + summary(
        smtp.url, sent=2, already=11
    )
    assert sorted(smtp.recorder.by_recipient()) == sorted(
        [*READERS, "x.ming@example.org", "new.reader@example.org"]
    )
    assert len(smtp.recorder.messages) == 13


def test_check_warns_of_duplicates_and_passes(run: Callable[..., Result], tmp_path: Path) -> None:
    """A repeated address is harmless (sent once) but named, so the office can tidy the list."""
    with (tmp_path / "subscribers.csv").open("a", encoding="utf-8") as listed:
        listed.write("Chan.Taiman@Example.org,Chan again,\n")

    result = run("check")

    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("; subscribers.csv: 12 subscribers (1 duplicate sent once).\n")
    assert result.stderr == DUPLICATE.replace(":15:", ":14:")


def test_check_fails_on_invalid_rows_and_warns_of_duplicates(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    """`digest check` fails on a row a send would refuse, naming it, and names repeats too."""
    with (tmp_path / "subscribers.csv").open("a", encoding="utf-8") as listed:
        listed.write(BAD_ROWS)

    result = run("check")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == DUPLICATE + X_ERROR + NOPE_ERROR


def test_catalogue_text_that_spells_a_placeholder_sends_nothing(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """A title spelling the greeting's placeholder is refused rather than greeting each reader
    in place of the title."""
    catalogue = tmp_path / "items.yaml"
    old = "HKUST Commences Preparations for New Medical School"
    new = "HKUST DIGEST-PERSONAL-GREETING-5f0c2e"
    catalogue.write_text(catalogue.read_text(encoding="utf-8").replace(old, new), "utf-8")

    result = run(*SEND, "--yes")

    assert result.exit_code == 1
    assert result.stderr == IMPORTED + (
        "items.yaml:37: item 'medical-school-preparations' contains "
        "'DIGEST-PERSONAL-GREETING-5f0c2e', which digest reserves to mark where each reader's "
        "greeting goes; reword it\n"
    )
    assert smtp.recorder.messages == []
    assert ledger_part(run("status")) == "Nothing sent yet.\n"


def test_month_without_items(run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path) -> None:
    """An empty month must send nothing and say so."""
    result = run("send", "--month", "2025-12", "--yes")

    assert result.exit_code == 0, result.output
    assert result.stdout == "No items in December 2025: nothing to send.\n"
    assert smtp.recorder.messages == []
    assert not (tmp_path / STATE).exists()


def test_month_without_readers(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """A list whose only subscriber chose no category with items must not crash the send."""
    (tmp_path / "subscribers.csv").write_text(
        "email,name,categories\nsmith.john@example.org,John,achievement\n", encoding="utf-8"
    )

    result = run(*SEND, "--yes")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "No subscriber has items in November 2025: nothing to send (1 subscriber whose "
        "categories have no items this month).\n"
    )
    assert smtp.recorder.messages == []
    assert ledger_part(run("status")) == "Nothing sent yet.\n"


def test_killed_send_over_several_connections_then_rerun_sends_each_once(
    run: Callable[..., Result],
    smtp: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    """With four connections at most four messages are in flight at a kill, one a connection."""
    readers = write_readers(tmp_path, 80)
    recorder = smtp.recorder
    recorder.delay = 0.02
    proc = spawn(*SEND, "--yes", "--connections", "4")
    wait_for(lambda: len(recorder.messages) >= 30, proc, "30 messages")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    time.sleep(0.1)  # let the server finish the DATA it was holding
    before = statuses(tmp_path)
    received = {r.rcpt_tos[0] for r in recorder.messages}
    in_flight = {address for address, status in before.items() if status == "sending"}
    assert len(in_flight) <= 4
    assert received <= {a for a, s in before.items() if s in ("sent", "sending")}
    assert {a for a, s in before.items() if s == "sent"} <= received
    recorder.delay = 0

    rerun = run(*SEND, "--yes")

    assert rerun.exit_code == 0, rerun.output
    by_recipient = recorder.by_recipient()
    assert sorted(by_recipient) == sorted(readers)
    twice = {address for address, got in by_recipient.items() if len(got) > 1}
    assert twice <= in_flight & received
    for address in twice:
        assert len(by_recipient[address]) == 2
        assert len(message_ids(by_recipient[address])) == 1
    assert set(statuses(tmp_path).values()) == {"sent"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_over_several_connections_finishes_in_flight_and_exits(
    run: Callable[..., Result],
    smtp: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    signum: signal.Signals,
) -> None:
    """SIGTERM or one Ctrl-C stops a send over four connections; it must not spin until killed."""
    recorder = smtp.recorder
    recorder.delay = 0.1
    # The second reader's copy is answered late: when the signal comes its connection is still
    # waiting for that answer while the other three have their next message's "go ahead".
    slow = READERS[1]
    recorder.slow[slow] = 2.0
    proc = spawn(*SEND, "--yes", "--connections", "4")
    wait_for(lambda: len(recorder.messages) >= 3, proc, "3 messages")
    proc.send_signal(signum)
    signalled = time.monotonic()

    status, out, err = finish(proc)  # fails after 30 s if the send does not stop

    record_property("seconds_to_exit", round(time.monotonic() - signalled, 2))
    received = {r.rcpt_tos[0] for r in recorder.messages}
    assert slow in received
    assert 3 <= len(received) < len(READERS)
    assert status == 1
    assert out == header(smtp.url) + summary(smtp.url, sent=len(received))
    left = len(READERS) - len(received)
    assert err == IMPORTED + (
        "Stopping after the message in flight (Ctrl-C again to stop at once).\n"
        f"Stopped: {left} subscribers not sent yet. Run the same command again to send the rest.\n"
    )
    assert statuses(tmp_path) == {a: "sent" if a in received else "pending" for a in READERS}
    recorder.delay = 0
    recorder.slow.clear()
    rerun = run(*SEND, "--yes", "--connections", "4")
    assert rerun.exit_code == 0, rerun.output
    assert IN_FLIGHT not in rerun.stdout
    assert rerun.stdout.endswith(summary(smtp.url, sent=left, already=len(received)))
    assert assert_crash_safe(recorder.by_recipient(), READERS) == []


# -- a ledger another program keeps locked ---------------------------------------------------------


def lock_notice(seconds: int) -> str:
    return (
        f"The delivery ledger {STATE} is locked by another program (an sqlite3 shell with a "
        f"transaction open, say); waiting up to {seconds} seconds for it.\n"
    )


def test_ledger_locked_mid_send_stops_cleanly_and_a_rerun_completes(
    run: Callable[..., Result],
    smtp: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ledger locked by an sqlite3 shell mid-send ends in what to do, not a traceback."""
    monkeypatch.setenv("DIGEST_LEDGER_WAIT", "2")
    recorder = smtp.recorder
    recorder.delay = 0.1
    proc = spawn(*SEND, "--yes", "--connections", "4")
    wait_for(lambda: len(recorder.messages) >= 3, proc, "3 messages")
    shell = sqlite3.connect(tmp_path / STATE, isolation_level=None)
    shell.execute("BEGIN IMMEDIATE")  # what an sqlite3 shell holds in a write transaction
    try:
        status, out, err = finish(proc)
        before = statuses(tmp_path)  # the ledger can still be read (WAL)
    finally:
        shell.execute("ROLLBACK")
        shell.close()

    sent = {address for address, s in before.items() if s == "sent"}
    unrecorded = {address for address, s in before.items() if s == "sending"}
    received = {r.rcpt_tos[0] for r in recorder.messages}
    # Nothing left without being recorded `sending` first; what the server took is sent or so.
    assert received == sent | unrecorded
    assert set(before.values()) <= {"sent", "sending", "pending"}
    assert status == 1
    assert out == header(smtp.url) + summary(smtp.url, sent=len(sent))
    left = len(READERS) - len(sent)
    stopped = (
        f"Stopped: {left} subscribers not sent yet, because the delivery ledger {STATE} stayed "
        f"locked by another program for 2 seconds. Close whatever holds the database open at "
        f"{STATE} (an sqlite3 shell, say), then run the same command again to send the rest."
    )
    if unrecorded:
        count = len(unrecorded)
        stopped += (
            f" {count} {'message' if count == 1 else 'messages'} the server accepted meanwhile "
            f"{'was' if count == 1 else 'were'} not recorded, and will be sent again with the "
            "same Message-ID, so mail clients show each once."
        )
    assert err == IMPORTED + lock_notice(2) + stopped + "\n"

    recorder.delay = 0
    rerun = run(*SEND, "--yes", "--connections", "4")

    assert rerun.exit_code == 0, rerun.output
    by_recipient = recorder.by_recipient()
    assert sorted(by_recipient) == sorted(READERS)
    for address, got in by_recipient.items():
        assert len(got) == (2 if address in unrecorded else 1)
        assert len(message_ids(got)) == 1
    assert set(statuses(tmp_path).values()) == {"sent"}


def test_ledger_unlocked_during_the_wait_lets_the_send_finish(
    smtp: SmtpServer,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closing the sqlite3 shell while the send waits lets it finish as if nothing happened."""
    monkeypatch.setenv("DIGEST_LEDGER_WAIT", "60")
    recorder = smtp.recorder
    recorder.delay = 0.1
    log = tmp_path / "stderr.log"
    proc = spawn(*SEND, "--yes", "--connections", "4", log=log)
    wait_for(lambda: len(recorder.messages) >= 3, proc, "3 messages")
    shell = sqlite3.connect(tmp_path / STATE, isolation_level=None)
    shell.execute("BEGIN IMMEDIATE")
    try:
        wait_for(lambda: lock_notice(60) in log.read_text(), proc, "the notice of the wait")
    finally:
        shell.execute("ROLLBACK")
        shell.close()

    status, out, _ = finish(proc)

    assert (status, log.read_text()) == (0, IMPORTED + lock_notice(60))
    assert out == header(smtp.url) + summary(smtp.url)
    assert assert_crash_safe(recorder.by_recipient(), READERS) == []
    assert set(statuses(tmp_path).values()) == {"sent"}


def test_a_wait_that_is_not_a_number_is_refused_before_anything_is_sent(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped DIGEST_LEDGER_WAIT is named before anyone is sent anything."""
    monkeypatch.setenv("DIGEST_LEDGER_WAIT", "soon")

    result = run(*SEND, "--yes")

    assert result.exit_code == 2
    assert result.stderr.endswith(
        "Error: Invalid value for '--ledger-wait' (env var: 'DIGEST_LEDGER_WAIT'): 'soon' is not "
        "a valid float range.\n"
    )
    assert smtp.recorder.messages == []
    assert not (tmp_path / STATE).exists()


# -- the relay's limits (newsletter.delivery) -----------------------------------------------------


def set_delivery(tmp_path: Path, block: str) -> None:
    """Give items.yaml's newsletter a `delivery:` block, as an editor would."""
    path = tmp_path / "items.yaml"
    text = path.read_text(encoding="utf-8")
    line = "  subscribers: subscribers.csv\n"
    assert line in text
    path.write_text(text.replace(line, f"{line}  delivery: {block}\n"), encoding="utf-8")


HELD = re.compile(
    r"(\d+) subscribers held by the daily limit \((\d+) recipients in any 24 hours\): they can go "
    r"from (\d{4}-\d\d-\d\d \d\d:\d\d) HKT \(\+08:00\); run the same command then, or let "
    r"`digest schedule` send them\.\n"
)
HONG_KONG = ZoneInfo("Asia/Hong_Kong")


def held(output: str) -> tuple[int, int, datetime]:
    """Return what a send says it held: how many, the daily limit, and until when."""
    match = HELD.search(output)
    assert match is not None, output
    until = datetime.strptime(match[3], "%Y-%m-%d %H:%M").replace(tzinfo=HONG_KONG)
    return int(match[1]), int(match[2]), until


def test_daily_limit_sends_thirty_holds_twenty_and_says_until_when(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """With `daily_limit: 30` and 50 subscribers, 30 get the digest, and staff learn when the
    other 20 can go; running it again within the day sends nobody anything and says the same."""
    set_delivery(tmp_path, "{daily_limit: 30}")
    readers = write_readers(tmp_path, 50)
    before = datetime.now(UTC)

    first = run(*SEND, "--yes")

    after = datetime.now(UTC)
    assert first.exit_code == 0, first.output
    assert len(smtp.recorder.messages) == 30
    assert sorted(smtp.recorder.by_recipient()) == readers[:30]
    assert statuses(tmp_path) == {a: "sent" if n < 30 else "pending" for n, a in enumerate(readers)}
    lines = first.stdout.splitlines(keepends=True)
    assert "".join(lines[:5]) == header(smtp.url, todo=50) + (
        "Daily limit: 30 can go now; the other 20 wait until the last 24 hours leave room.\n"
    )
    assert lines[5] == summary(smtp.url, sent=30)
    assert HELD.fullmatch(lines[6])
    assert len(lines) == 7
    count, limit, until = held(lines[6])
    assert (count, limit) == (20, 30)
    # 24 hours after the first of the 30 went, rounded up to the minute.
    assert before + timedelta(hours=24) - timedelta(minutes=1) < until
    assert until <= after + timedelta(hours=24, minutes=1)

    second = run(*SEND, "--yes")

    assert second.exit_code == 0, second.output
    assert len(smtp.recorder.messages) == 30
    assert second.stdout == summary(smtp.url, sent=0, already=30) + lines[6]
    assert list(statuses(tmp_path).values()).count("pending") == 20

    status = run("status")
    assert_status(status, sent=30, pending=20)
    when = f"{until:%Y-%m-%d %H:%M} HKT (+08:00)"
    assert f"Held by the daily limit: 2025-11: 20 subscribers, until {when}.\n" in status.stdout


def test_daily_limit_flag_overrides_the_catalogue_for_one_run(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """`--daily-limit` replaces items.yaml's for one run, and a --resend counts against it."""
    set_delivery(tmp_path, "{daily_limit: 5}")

    first = run(*SEND, "--yes", "--daily-limit", "15")

    assert first.exit_code == 0, first.output
    assert len(smtp.recorder.messages) == 11
    assert "held" not in first.stdout
    resend = run(*SEND, "--yes", "--resend", "--daily-limit", "15")
    assert resend.exit_code == 0, resend.output
    # The relay took 11 in the last 24 hours, whatever the ledger forgot for the resend.
    assert len(smtp.recorder.messages) == 15
    assert summary(smtp.url, sent=4) in resend.stdout
    assert held(resend.stdout)[:2] == (7, 15)
    again = run(*SEND, "--yes")  # items.yaml's 5: already more than that in the last 24 hours
    assert again.exit_code == 0, again.output
    assert held(again.stdout)[:2] == (7, 5)
    assert len(smtp.recorder.messages) == 15


def test_connections_come_from_the_catalogue_unless_the_flag_says(
    run: Callable[..., Result], smtp: SmtpServer, tmp_path: Path
) -> None:
    """`connections: 3` in items.yaml opens three at once; `--connections 1` keeps to one."""
    set_delivery(tmp_path, "{connections: 3}")

    assert run(*SEND, "--yes").exit_code == 0

    assert smtp.recorder.peak_sessions == 3
    smtp.recorder.peak_sessions = 0
    assert run(*SEND, "--yes", "--resend", "--connections", "1").exit_code == 0
    assert smtp.recorder.peak_sessions == 1
    assert len(smtp.recorder.messages) == 22


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_daily_limit_flag_must_be_a_positive_number(run: Callable[..., Result], value: str) -> None:
    """A mistyped --daily-limit is a usage error that sends nothing, not a send without limit."""
    result = run(*SEND, "--yes", "--daily-limit", value)

    assert result.exit_code == 2
    assert "Invalid value for '--daily-limit'" in result.stderr
    assert not (Path(STATE)).exists()


def test_a_send_leaves_no_helper_process_behind(
    run: Callable[..., Result], smtp: SmtpServer
) -> None:
    """The helper that styled the digest beside the send ends with it (IT would find it left)."""
    from test_helper import helpers_of

    result = run(*SEND, "--yes")

    assert result.exit_code == 0, result.output
    assert sorted(smtp.recorder.by_recipient()) == sorted(READERS)
    assert helpers_of(os.getpid()) == []
