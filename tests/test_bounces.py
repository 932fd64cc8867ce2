"""mail/bounces.py: what comes back to the return path, read as real servers write it.

The samples are in tests/data/bounces/ (tests/data/bounces/README.md says where each came from).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.mail.bounces import Kind, Report, classify, plain

SAMPLES = Path(__file__).parent / "data" / "bounces"


def sample(name: str) -> bytes:
    """Return one sample message, byte for byte."""
    return (SAMPLES / name).read_bytes()


# (file, kind, recipients, status, quoted Message-ID)
SHAPES = [
    (
        "postfix-dsn-hard.eml",
        Kind.HARD,
        ("h.okafor@physics.example.org",),
        "5.1.1",
        "digest.2025-11.9f2c41@provost.example.edu",
    ),
    (
        "gmail-dsn-hard.eml",
        Kind.HARD,
        ("departed.prof@gmail.com",),
        "5.1.1",
        "digest.2025-11.77ab09@provost.example.edu",
    ),
    (
        "office365-ndr-hard.eml",
        Kind.HARD,
        ("emeritus@alumni.example.net",),
        "5.1.10",
        "digest.2025-11.c0ffee@provost.example.edu",
    ),
    (
        "exim-dsn-soft.eml",
        Kind.SOFT,
        ("j.mbeki@chem.example.ac.uk",),
        "4.2.2",
        "digest.2025-11.5e5e5e@provost.example.edu",
    ),
    (
        "yahoo-arf-complaint.eml",
        Kind.COMPLAINT,
        ("gardener42@yahoo.com",),
        "",
        "digest.2025-11.ab12ab@provost.example.edu",
    ),
    (
        "aol-arf-complaint.eml",
        Kind.COMPLAINT,
        ("retired.dean@aol.com",),
        "",
        "digest.2025-11.d00d00@provost.example.edu",
    ),
    (
        "flufl-postfix_02.eml",
        Kind.HARD,
        ("yyyyy@digicool.com",),
        "",
        "14915.64162.965657.699956@anthem.concentric.net",
    ),
    (
        "flufl-exim_01.eml",
        Kind.HARD,
        ("userx@its.example.nl",),
        "5.1.1",
        "19990920022322.A19735@stereo.rotzorg.org",
    ),
    ("flufl-microsoft_01.eml", Kind.HARD, ("userx@example.com",), "", None),
    ("flufl-qmail_03.eml", Kind.HARD, ("userx@example.jp",), "5.1.1", None),
    ("flufl-simple_03.eml", Kind.SOFT, ("userx@example.za",), "", None),
    (
        "flufl-dsn_14.eml",
        Kind.HARD,
        ("userx@example.com.dk",),
        "5.1.1",
        "mailman.2721.1143482819.1567.gpc-talk@grizz.org",
    ),
    (
        "flufl-yahoo_13.eml",
        Kind.HARD,
        ("bogus-address@example.net",),
        "5.1.1",
        "130907fb-848c-d154-8e59-ed1e08319fcf@yahoo.com",
    ),
    ("vacation-autoreply.eml", Kind.AUTOREPLY, (), "", None),
    ("outlook-autoreply.eml", Kind.AUTOREPLY, (), "", None),
    ("flufl-qmail_08.eml", Kind.AUTOREPLY, (), "", None),
    ("ordinary-reply.eml", Kind.UNKNOWN, (), "", None),
]


@pytest.mark.parametrize(
    ("name", "kind", "recipients", "status", "message_id"), SHAPES, ids=[s[0] for s in SHAPES]
)
def test_real_world_shapes_are_matched_to_their_recipient(
    name: str, kind: Kind, recipients: tuple[str, ...], status: str, message_id: str | None
) -> None:
    """Each server's way of bouncing must name the subscriber, the status and the sent message."""
    report = classify(sample(name))
    assert (report.kind, report.recipients, report.status, report.message_id) == (
        kind,
        recipients,
        status,
        message_id,
    )


def test_the_diagnostic_is_kept_as_one_plain_line() -> None:
    """Staff must read the remote server's reason, unfolded, in one line."""
    report = classify(sample("postfix-dsn-hard.eml"))
    assert report.detail == (
        "550 5.1.1 <h.okafor@physics.example.org>: Recipient address rejected: User unknown "
        "in local recipient table"
    )
    assert classify(sample("yahoo-arf-complaint.eml")).detail == (
        "Feedback-Type: abuse from Yahoo!-Mail-Feedback/2.0"
    )


def test_the_verp_address_shows_where_the_report_was_delivered() -> None:
    """A bounce must be matched by its return path even when the DSN is mangled."""
    report = classify(sample("gmail-dsn-hard.eml"))
    assert report.envelope_to == ("bounces+r2h8wq4c@provost.example.edu",)
    assert report.original_sender == "bounces+r2h8wq4c@provost.example.edu"
    exim = classify(sample("exim-dsn-soft.eml"))
    assert exim.envelope_to == ("bounces+a8fj3kq1@provost.example.edu",)


def test_a_complaint_names_the_verp_sender_of_the_original() -> None:
    """A feedback loop writes to its own address: the original's return path must still show."""
    yahoo = classify(sample("yahoo-arf-complaint.eml"))
    assert yahoo.envelope_to == ("fbl@provost.example.edu",)
    assert yahoo.original_sender == "bounces+p4w7zz2e@provost.example.edu"
    aol = classify(sample("aol-arf-complaint.eml"))
    assert aol.original_sender == "bounces+t5y6u7i8@provost.example.edu"


def test_the_report_is_keyed_by_its_message_id_else_by_its_bytes() -> None:
    """Reading the same report twice must count it once, with or without a Message-ID."""
    raw = sample("postfix-dsn-hard.eml")
    assert classify(raw).report_id == "20251104141231.4QzK1m3Xb5z9vB@mx1.provost.example.edu"
    without = raw.replace(b"Message-Id: <20251104141231", b"X-Was: <20251104141231")
    assert classify(without).report_id == hashlib.sha256(without).hexdigest()


def dsn(action: str, status: str, diagnostic: str = "smtp; 550 no") -> bytes:
    """Return a minimal RFC 3464 report for reader@example.org."""
    return (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: bounces@provost.example.edu\r\n"
        "Subject: Delivery report\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nReport.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; Reader@Example.org\r\nAction: {action}\r\n"
        f"Status: {status}\r\nDiagnostic-Code: {diagnostic}\r\n\r\n--b--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [
        ("failed", "5.2.2", Kind.HARD),
        ("failed", "4.4.7", Kind.SOFT),
        ("delayed", "4.4.1", Kind.SOFT),
        ("delayed", "", Kind.SOFT),
        ("failed", "", Kind.HARD),
        ("delivered", "2.0.0", Kind.UNKNOWN),
        ("relayed", "2.0.0", Kind.UNKNOWN),
    ],
)
def test_the_status_code_decides_hard_or_soft(action: str, status: str, kind: Kind) -> None:
    """A full mailbox must not end a subscription; a gone one must; a success is no bounce."""
    report = classify(dsn(action, status))
    assert report.kind == kind
    assert report.recipients == (() if kind is Kind.UNKNOWN else ("reader@example.org",))


def test_text_from_the_report_never_breaks_a_line() -> None:
    """A hostile diagnostic must not smuggle a header or a second line into what staff see."""
    hostile = "smtp; 550 gone\x00\x1b[31m\u2028Bcc: victim@example.org\u202e" + "x" * 300
    report = classify(dsn("failed", "5.1.1", hostile))
    assert report.kind is Kind.HARD
    assert report.detail.isprintable()
    assert len(report.detail) == 200
    assert report.detail.startswith("550 gone [31m Bcc: victim@example.org x")


def test_a_bounce_without_a_from_address_is_still_read(capfd: pytest.CaptureFixture[str]) -> None:
    """A qmail bounce whose From line is empty must still count, and print no traceback."""
    raw = sample("flufl-qmail_03.eml")
    for stripped in (
        re.sub(rb"^From:[^\n]*\n", b"From: \n", raw, count=1, flags=re.MULTILINE),
        re.sub(rb"^From:[^\n]*\n", b"", raw, count=1, flags=re.MULTILINE),
    ):
        assert stripped != raw
        report = classify(stripped)
        assert (report.kind, report.recipients) == (Kind.HARD, ("userx@example.jp",))
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("subject", "kind"),
    [
        ("Automatic reply: Provost's digest", Kind.AUTOREPLY),
        ("Out of Office: Provost's digest", Kind.AUTOREPLY),
        ("Abwesenheitsnotiz: Provost's digest", Kind.AUTOREPLY),
        ("Vacation policy for 2026", Kind.UNKNOWN),
        ("Re: Out of office hours at the library", Kind.UNKNOWN),
    ],
)
def test_only_a_responder_s_subject_makes_an_autoreply(subject: str, kind: Kind) -> None:
    """A person's mail that talks about vacations must stay in the mailbox, unread."""
    raw = (
        f"From: someone@example.org\r\nTo: bounces@provost.example.edu\r\n"
        f"Subject: {subject}\r\nMessage-ID: <m.1@example.org>\r\n\r\nHello.\r\n"
    ).encode()
    assert classify(raw).kind is kind


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno parts",
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n--b--',
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n--b--",
    ],
)
def test_junk_is_unknown(raw: bytes) -> None:
    """A malformed message in the mailbox must be left alone, not stop the run."""
    report = classify(raw)
    assert report == Report(Kind.UNKNOWN, (), (), None, "", "", report.report_id)


@given(st.binary(max_size=2000))
def test_any_bytes_are_classified_without_raising(raw: bytes) -> None:
    """Whatever lands in the bounce mailbox, reading it must go on to the next message."""
    report = classify(raw)
    assert report.detail == plain(report.detail)
    assert all("\n" not in a and "\r" not in a for a in report.recipients + report.envelope_to)


@given(st.text(max_size=400))
def test_plain_is_one_printable_line(text: str) -> None:
    """No text taken from a report can span lines or hide characters when shown to staff."""
    line = plain(text)
    assert len(line) <= 200
    assert line.isprintable()
    assert line == line.strip()


def test_a_send_never_imports_the_bounce_detectors() -> None:
    """A send imports the bounce modules for its VERP return paths, never flufl.bounce's detectors
    (about 40 ms of every send); classifying a bounce is what imports them."""
    script = (
        "import sys\n"
        "from digest.app import bounces, sending\n"
        "from digest.send import delivery\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'flufl'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout == "[]\n"
