"""`digest bounces` end to end: a real send with VERP, real bounces in a real mailbox, the rules."""

from __future__ import annotations

import imaplib
import mailbox
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from bounce_mail import AUTOREPLY, ORDINARY, complaint, dsn
from conftest import SmtpServer
from digest.send.ledger import Ledger
from digest.send.store import Store, SubscriberStatus
from digest.send.verp import Verp
from imapserver import Account, Dovecot

ROOT = Path(__file__).resolve().parent.parent
SECRET = "b" * 40
BOUNCES = "bounces@provost.example.edu"
PATHS = Verp(SECRET, BOUNCES)
NOV = "2025-11"
HARD, SOFT, COMPLAINED = (
    "chan.taiman@example.org",
    "lee.kawai@example.org",
    "wong.siuming@example.org",
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer) -> Path:
    """The bundled catalogue with newsletter.bounces set, sending to the test SMTP server."""
    for name in (
        "DIGEST_SMTP_PASSWORD",
        "DIGEST_STATE",
        "DIGEST_PUBLIC_URL",
        "DIGEST_BOUNCE_SOURCE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    text = (ROOT / "items.yaml").read_text(encoding="utf-8")
    marker = "  subscribers: subscribers.csv\n"
    text = text.replace(marker, marker + f"  bounces: {{address: {BOUNCES}}}\n")
    (tmp_path / "items.yaml").write_text(text, encoding="utf-8")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    return tmp_path


def sent_to(smtp_server: SmtpServer) -> dict[str, str]:
    """Return the envelope sender the server saw, by recipient."""
    return {message.rcpt_tos[0]: message.mail_from for message in smtp_server.recorder.messages}


def state(project: Path) -> Ledger:
    """Return the project's state database, on the engine DIGEST_DATABASE_URL names."""
    return Ledger(project / ".digest" / "state.sqlite3", url=os.environ.get("DIGEST_DATABASE_URL"))


def status_of(project: Path, address: str) -> SubscriberStatus:
    """Return a subscriber's status in the project's store."""
    with state(project) as ledger:
        row = Store(ledger).get(address)
    assert row is not None
    return row.status


def history(project: Path) -> list[tuple[str, int]]:
    """Return every subscriber's history length and the bounce count: what a run may change."""
    with state(project) as ledger:
        kept = Store(ledger)
        return [(key, len(kept.history(key))) for key in kept.rows()] + [
            ("bounces", len(kept.recent_bounces(limit=1000)))
        ]


def november_bounces(smtp_server: SmtpServer) -> list[bytes]:
    """Return a hard and a soft DSN and a complaint, each addressed to the VERP path it answers,
    an auto-reply, and two ordinary messages."""
    senders = sent_to(smtp_server)
    return [
        dsn(senders[HARD], HARD, "5.1.1", name="hard"),
        dsn(senders[SOFT], SOFT, "4.2.2", name="soft"),
        complaint("fbl@provost.example.edu", COMPLAINED, senders[COMPLAINED]),
        AUTOREPLY,
        *ORDINARY,
    ]


def maildir_with(path: Path, messages: list[bytes]) -> mailbox.Maildir:
    """Return a new Maildir at `path` holding `messages`, all unread in new/."""
    box = mailbox.Maildir(path, create=True)
    for raw in messages:
        box.add(mailbox.MaildirMessage(raw))
    return box


def files(path: Path) -> dict[str, bytes]:
    """Return every file under the maildir, by its path inside it: names carry the flags."""
    return {
        str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()
    }


def test_send_bounce_read_and_the_next_month_skips_them(
    project: Path,
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    database_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hard bounce and a complaint must stop the next digest to those two; a soft one must
    only be counted; the ordinary mail in the mailbox must be left unread where it was. The
    same on PostgreSQL: the send, the bounces, the status and the next send share its state."""
    if database_url is not None:
        monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    result = run("send", "--month", NOV, "--yes")
    assert result.exit_code == 0, result.output
    senders = sent_to(smtp_server)
    assert senders[HARD] == PATHS.sender(NOV, HARD)
    assert all(
        re.fullmatch(r"bounces\+202511-[a-z2-7]{10}@provost\.example\.edu", s)
        for s in senders.values()
    )

    box = project / "Maildir"
    maildir_with(box, november_bounces(smtp_server))
    ordinary = {k: v for k, v in files(box).items() if b"Lunch" in v or b"maintenance" in v}
    assert len(ordinary) == 2

    result = run("bounces", f"maildir:{box}")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 7
    tails = [line.split(": ", 1)[1] for line in lines[:-1]]  # each after the message's key
    assert sorted(tails) == sorted([
        f"hard bounce: {HARD}, November 2025 (5.1.1, matched by verp): bounced",
        f"soft bounce: {SOFT}, November 2025 (4.2.2, matched by verp): counted",
        f"complaint: {COMPLAINED}, November 2025 (matched by verp): complained",
        "auto-reply: ignored, moved to processed",
        "not recognised: not a bounce; left where it was",
        "not recognised: not a bounce; left where it was",
    ])  # fmt: skip
    assert lines[-1] == (
        "6 messages (1 hard bounce, 1 soft bounce, 1 complaint, 1 auto-reply, 2 not recognised): "
        "3 new reports recorded, 2 subscriptions were ended, 2 messages left where they were."
    )
    assert status_of(project, HARD) is SubscriberStatus.BOUNCED
    assert status_of(project, SOFT) is SubscriberStatus.ACTIVE
    assert status_of(project, COMPLAINED) is SubscriberStatus.COMPLAINED
    after = files(box)
    assert {k: v for k, v in after.items() if k in ordinary} == ordinary  # same names: still unread
    assert len([k for k in after if k.startswith(".digest-processed/cur/")]) == 4

    # A second run: nothing left to read but the two ordinary messages, and nothing changes.
    before = history(project)
    again = run("bounces", f"maildir:{box}")
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[-1] == (
        "2 messages (2 not recognised): 0 new reports recorded, 0 subscriptions were ended, "
        "2 messages left where they were."
    )
    assert history(project) == before
    assert files(box) == after

    status = run("status")
    assert status.exit_code == 0, status.output
    assert "month      sent failed bounced    rate complained    rate\n" in status.stdout
    assert "2025-11      11      0       2 18.18 %          1  9.09 %\n" in status.stdout
    # Off the list, and why: never counted as one-click unsubscribes.
    assert "2 addresses off the list (1 bounced, 1 complained): never sent again" in status.stdout
    assert "Warning: 2025-11: bounce rate 18.18 % is above 2 %" in status.stderr
    assert "Warning: 2025-11: complaint rate 9.09 % is above 0.1 %" in status.stderr

    # December: the two whose mail bounced or complained get nothing; the soft bounce still does.
    text = (
        (project / "items.yaml")
        .read_text(encoding="utf-8")
        .replace("date: 2025-11-", "date: 2025-12-")
    )
    (project / "items.yaml").write_text(text, encoding="utf-8")
    smtp_server.recorder.messages.clear()
    december = run("send", "--month", "2025-12", "--yes")
    assert december.exit_code == 0, december.output
    got = sent_to(smtp_server)
    assert len(got) == 9
    assert HARD not in got
    assert COMPLAINED not in got
    assert got[SOFT] == PATHS.sender("2025-12", SOFT)
    # On PostgreSQL, nothing of it went to a SQLite file beside the catalogue.
    assert (project / ".digest" / "state.sqlite3").exists() is (database_url is None)


def test_a_dry_run_records_nothing_and_moves_nothing(
    project: Path, run: Callable[..., Result], smtp_server: SmtpServer
) -> None:
    """`--dry-run` must say what would happen and leave the mailbox and the list as they were."""
    assert run("send", "--month", NOV, "--yes").exit_code == 0
    box = project / "Maildir"
    maildir_with(box, november_bounces(smtp_server))
    before, kept = files(box), history(project)
    result = run("bounces", f"maildir:{box}", "--dry-run")
    assert result.exit_code == 0, result.output
    assert (
        f"hard bounce: {HARD}, November 2025 (5.1.1, matched by verp): would be bounced"
        in result.stdout
    )
    assert "auto-reply: ignored, would be moved to processed" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "6 messages (1 hard bounce, 1 soft bounce, 1 complaint, 1 auto-reply, 2 not recognised): "
        "3 new reports recorded, 2 subscriptions would be ended, 2 messages left where they were; "
        "dry run: nothing was recorded or moved."
    )
    assert files(box) == before
    assert history(project) == kept
    assert status_of(project, HARD) is SubscriberStatus.ACTIVE


def test_a_dsn_without_the_verp_address_is_matched_by_its_recipient_and_message_id(
    project: Path, run: Callable[..., Result], smtp_server: SmtpServer
) -> None:
    """A bounce that lost its VERP address on the way must still find its subscriber and month."""
    assert run("send", "--month", NOV, "--yes").exit_code == 0
    (sent,) = [m for m in smtp_server.recorder.messages if m.rcpt_tos == [HARD]]
    message_id = sent.message["Message-ID"]
    box = project / "Maildir"
    maildir_with(
        box,
        [
            dsn(BOUNCES, HARD, "5.1.1", message_id=message_id, name="by-id"),
            dsn(BOUNCES, SOFT, "5.1.1", name="no-month"),  # a Message-ID of no digest sent
            dsn(BOUNCES, "stranger@example.net", "5.1.1", name="stranger"),
        ],
    )
    result = run("bounces", f"maildir:{box}")
    assert result.exit_code == 0, result.output
    assert (
        f"hard bounce: {HARD}, November 2025 (5.1.1, matched by recipient): bounced"
        in result.stdout
    )
    assert f"hard bounce: {SOFT}, no month (5.1.1, matched by recipient): bounced" in result.stdout
    assert "hard bounce (5.1.1): names nobody on the list; left where it was" in result.stdout
    assert len([k for k in files(box) if k.startswith(("new/", "cur/"))]) == 1  # the stranger's
    # The bounce tied to no month counts for the subscriber, and for no month's rates.
    assert "2025-11      11      0       1  9.09 %" in run("status").stdout


def test_a_forged_verp_address_ends_nobody(
    project: Path, run: Callable[..., Result], smtp_server: SmtpServer
) -> None:
    """Someone who mails a made-up bounce address must not end a subscription through it."""
    assert run("send", "--month", NOV, "--yes").exit_code == 0
    real = sent_to(smtp_server)[HARD]
    forged = (
        real[: real.index("@") - 1]
        + ("a" if real[real.index("@") - 1] != "a" else "b")
        + real[real.index("@") :]
    )
    box = project / "Maildir"
    maildir_with(box, [dsn(forged, "someone@example.net", "5.1.1", name="forged")])
    result = run("bounces", f"maildir:{box}")
    assert result.exit_code == 0, result.output
    assert "names nobody on the list; left where it was" in result.stdout
    assert status_of(project, HARD) is SubscriberStatus.ACTIVE


def test_an_mbox_source_is_read_too(
    project: Path, run: Callable[..., Result], smtp_server: SmtpServer
) -> None:
    """An office whose bounces land in an mbox file must get the same result as from a maildir."""
    assert run("send", "--month", NOV, "--yes").exit_code == 0
    path = project / "bounces.mbox"
    box = mailbox.mbox(path, create=True)
    for raw in november_bounces(smtp_server):
        box.add(mailbox.mboxMessage(raw))
    box.close()
    result = run("bounces", f"mbox:{path}")
    assert result.exit_code == 0, result.output
    assert status_of(project, HARD) is SubscriberStatus.BOUNCED
    assert status_of(project, COMPLAINED) is SubscriberStatus.COMPLAINED
    assert len(mailbox.mbox(path)) == 2  # the two ordinary messages stay


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("pop3://mail.example.edu/INBOX", "the bounce source 'pop3://...' must be one of"),
        ("maildir:nowhere", "is not a maildir"),
        ("mbox:missing.mbox", "cannot open the bounce source mbox:missing.mbox"),
    ],
)
def test_a_bad_source_is_a_clear_error(
    project: Path, run: Callable[..., Result], source: str, message: str
) -> None:
    """A mistyped source must say what is wrong and exit 1, having written nothing."""
    result = run("bounces", source)
    assert result.exit_code == 1
    assert message in result.stderr
    assert not (project / ".digest").exists()


def test_without_a_source_is_a_usage_error(project: Path, run: Callable[..., Result]) -> None:
    """`digest bounces` alone must say a SOURCE is needed (exit 2)."""
    result = run("bounces")
    assert result.exit_code == 2
    assert "Missing argument 'SOURCE'" in result.stderr


def test_staff_resubscribe_a_bounced_address_only_with_a_reason(
    project: Path, run: Callable[..., Result], smtp_server: SmtpServer
) -> None:
    """A bounced subscriber must come back only when staff say why, and the history must say it."""
    assert run("send", "--month", NOV, "--yes").exit_code == 0
    box = project / "Maildir"
    maildir_with(box, [dsn(sent_to(smtp_server)[HARD], HARD, "5.1.1", name="hard")])
    assert run("bounces", f"maildir:{box}").exit_code == 0
    assert status_of(project, HARD) is SubscriberStatus.BOUNCED

    assert run("subscribers", "resubscribe", HARD).exit_code == 2  # --reason is required
    blank = run("subscribers", "resubscribe", HARD, "--reason", "  ")
    assert blank.exit_code == 1
    assert "a reason is needed to subscribe someone again" in blank.stderr
    assert status_of(project, HARD) is SubscriberStatus.BOUNCED

    back = run("subscribers", "resubscribe", HARD, "--reason", "mailbox restored by IT")
    assert back.exit_code == 0, back.output
    assert back.stdout == f"Resubscribed {HARD}: active again; its history keeps why.\n"
    with Ledger(project / ".digest" / "state.sqlite3") as ledger:
        last = Store(ledger).history(HARD)[-1]
    assert last.action == "resubscribed by staff: mailbox restored by IT"
    assert last.actor.startswith("staff:")
    again = run("subscribers", "resubscribe", HARD, "--reason", "twice")
    assert again.stdout == f"{HARD} is on the list already; nothing changed.\n"


# -- the acceptance run, on a real IMAP server ----------------------------------------------------


def imap_state(dovecot: Dovecot, account: Account, folder: str) -> dict[str, set[str]]:
    """Return each message's flags by Message-ID in `folder`, looked at read-only (EXAMINE)."""
    with imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=10) as client:
        client.login(account.user, account.password)
        status, _ = client.select(f'"{folder}"', readonly=True)
        if status != "OK":
            return {}
        _, found = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    state: dict[str, set[str]] = {}
    for part in found:
        if isinstance(part, tuple):
            flags = re.search(rb"FLAGS \(([^)]*)\)", part[0])
            assert flags is not None
            key = part[1].decode().partition(":")[2].strip()
            state[key] = set(flags.group(1).decode().split()) - {"\\Recent"}
    return state


def test_acceptance_on_dovecot_two_dsns_and_a_complaint(
    project: Path,
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    dovecot: Dovecot,
    imap_user: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a new user would: send November, drop a hard and a soft DSN and a complaint into the
    IMAP mailbox, read it: one bounced, one soft bounce counted, one complained; the rates show;
    the ordinary mail stays unread in INBOX; a second read changes nothing; December skips two."""
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.ca_file))
    monkeypatch.setenv("DIGEST_BOUNCE_PASSWORD", imap_user.password)
    assert run("send", "--month", NOV, "--yes").exit_code == 0
    for raw in november_bounces(smtp_server):
        dovecot.deliver(imap_user, raw)
    ordinary = {"<lunch-1@example.edu>", "<maintenance-1@example.edu>"}
    assert {k: v for k, v in imap_state(dovecot, imap_user, "INBOX").items() if k in ordinary} == {
        key: set() for key in ordinary
    }

    result = run("bounces", imap_user.url())
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "6 messages (1 hard bounce, 1 soft bounce, 1 complaint, 1 auto-reply, 2 not recognised): "
        "3 new reports recorded, 2 subscriptions were ended, 2 messages left where they were."
    )
    assert status_of(project, HARD) is SubscriberStatus.BOUNCED
    assert status_of(project, SOFT) is SubscriberStatus.ACTIVE
    assert status_of(project, COMPLAINED) is SubscriberStatus.COMPLAINED
    inbox = imap_state(dovecot, imap_user, "INBOX")
    assert inbox == {key: set() for key in ordinary}  # still there, still unread
    processed = imap_state(dovecot, imap_user, "digest-processed")
    assert len(processed) == 4
    assert all("\\Seen" in flags for flags in processed.values())

    before = history(project)
    again = run("bounces", imap_user.url())
    assert again.exit_code == 0, again.output
    assert history(project) == before
    assert imap_state(dovecot, imap_user, "INBOX") == inbox
    assert imap_state(dovecot, imap_user, "digest-processed") == processed

    status = run("status")
    assert "2025-11      11      0       2 18.18 %          1  9.09 %\n" in status.stdout
    # Off the list, and why: never counted as one-click unsubscribes.
    assert "2 addresses off the list (1 bounced, 1 complained): never sent again" in status.stdout

    text = (project / "items.yaml").read_text(encoding="utf-8")
    (project / "items.yaml").write_text(text.replace("date: 2025-11-", "date: 2025-12-"))
    smtp_server.recorder.messages.clear()
    assert run("send", "--month", "2025-12", "--yes").exit_code == 0
    got = sent_to(smtp_server)
    assert len(got) == 9
    assert HARD not in got
    assert COMPLAINED not in got


SAMPLES = Path(__file__).resolve().parent / "data" / "bounces"
# Each real-world shape (tests/data/bounces, i18-read's samples) and the subscriber it names.
SHAPES = {
    "postfix-dsn-hard.eml": ("h.okafor@physics.example.org", "bounced"),
    "exim-dsn-soft.eml": ("j.mbeki@chem.example.ac.uk", "active"),
    "gmail-dsn-hard.eml": ("departed.prof@gmail.com", "bounced"),
    "office365-ndr-hard.eml": ("emeritus@alumni.example.net", "bounced"),
    "aol-arf-complaint.eml": ("retired.dean@aol.com", "complained"),
    "yahoo-arf-complaint.eml": ("gardener42@yahoo.com", "complained"),
    "flufl-dsn_14.eml": ("userx@example.com.dk", "bounced"),
    "flufl-exim_01.eml": ("userx@its.example.nl", "bounced"),
    "flufl-microsoft_01.eml": ("userx@example.com", "bounced"),
    "flufl-postfix_02.eml": ("yyyyy@digicool.com", "bounced"),
    "flufl-qmail_03.eml": ("userx@example.jp", "bounced"),
    "flufl-yahoo_13.eml": ("bogus-address@example.net", "bounced"),
    "flufl-simple_03.eml": ("userx@example.za", "active"),
}


def test_real_world_bounce_shapes_each_find_their_subscriber(
    project: Path, run: Callable[..., Result]
) -> None:
    """Postfix, Exim, Exchange, Gmail, qmail, Yahoo and AOL bounces must each end (or count
    against) the subscription of the address they name, and the auto-replies touch nobody."""
    for address, _ in SHAPES.values():
        assert run("subscribers", "add", address).exit_code == 0
    box = project / "Maildir"
    maildir_with(box, [path.read_bytes() for path in sorted(SAMPLES.glob("*.eml"))])
    result = run("bounces", f"maildir:{box}")
    assert result.exit_code == 0, result.output
    for name, (address, status) in SHAPES.items():
        assert status_of(project, address) == status, name
        assert f": {address}, no month (" in result.stdout, name
    assert "1 message left where it was" in result.stdout  # the ordinary reply
