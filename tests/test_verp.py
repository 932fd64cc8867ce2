"""VERP return paths: each message's envelope sender names its month and recipient, unforgeably."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from conftest import SmtpServer
from digest.send.verp import TOKEN_LENGTH, Token, Verp

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s" * 40
PATHS = Verp(SECRET, "bounces@provost.example.edu")
NOV = "2025-11"
READERS = ["chan.taiman@example.org", "lee.kawai@example.org", "wong.siuming@example.org"]


def test_the_return_path_is_short_lower_case_and_names_the_month() -> None:
    """Servers must accept the envelope sender and keep it when they case-fold local parts."""
    sender = PATHS.sender(NOV, "Chan.TaiMan@Example.org")
    local, _, domain = sender.partition("@")
    assert domain == "provost.example.edu"
    assert local.startswith("bounces+202511-")
    assert sender == sender.lower()
    assert len(local) == len("bounces+") + TOKEN_LENGTH <= 64
    assert sender == PATHS.sender(NOV, "chan.taiman@example.org")  # the same for any letter case


def test_a_token_reads_back_to_its_recipient_among_the_month() -> None:
    """A bounce to the VERP address must be tied to the one recipient it was sent to."""
    for reader in READERS:
        token = PATHS.read(PATHS.sender(NOV, reader).upper())  # a server may upper-case it
        assert token is not None
        assert token.month == NOV
        assert PATHS.match(token, READERS) == reader


def test_the_same_recipient_gets_another_token_each_month() -> None:
    """A bounce of December's digest must not be counted against November's."""
    november = PATHS.read(PATHS.sender(NOV, READERS[0]))
    december = PATHS.read(PATHS.sender("2025-12", READERS[0]))
    assert november is not None
    assert december is not None
    assert november.code != december.code
    assert PATHS.match(Token(NOV, december.code), READERS) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda code: code[:-1] + ("a" if code[-1] != "a" else "b"),  # one letter changed
        lambda code: code[::-1],
        lambda code: "a" * len(code),
    ],
)
def test_a_tampered_token_matches_nobody(change: Callable[[str], str]) -> None:
    """Someone who forges a bounce address must not be able to end anyone's subscription."""
    token = PATHS.read(PATHS.sender(NOV, READERS[0]))
    assert token is not None
    assert PATHS.match(Token(token.month, change(token.code)), READERS) is None


def test_another_installations_key_matches_nobody() -> None:
    """A token made under another secret must not match any of this installation's recipients."""
    other = Verp("t" * 40, PATHS.address)
    token = PATHS.read(other.sender(NOV, READERS[0]))
    assert token is not None
    assert PATHS.match(token, READERS) is None


@pytest.mark.parametrize(
    "address",
    [
        "bounces@provost.example.edu",  # no token
        "bounces+202511-abcdefghij@other.example.edu",  # another domain
        "office+202511-abcdefghij@provost.example.edu",  # another mailbox
        "bounces+202513-abcdefghij@provost.example.edu",  # no such month
        "bounces+202511-abc@provost.example.edu",  # too short
        "bounces+202511-abcdefghi1@provost.example.edu",  # not base32
        "not an address",
    ],
)
def test_other_addresses_carry_no_token(address: str) -> None:
    """Mail to anything but a VERP form of the bounce address must not be read as one."""
    assert PATHS.read(address) is None


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled catalogue with newsletter.bounces set, and the bundled subscriber list."""
    for name in ("DIGEST_SMTP_URL", "DIGEST_SMTP_PASSWORD", "DIGEST_STATE", "DIGEST_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    text = (ROOT / "items.yaml").read_text(encoding="utf-8")
    marker = "  subscribers: subscribers.csv\n"
    assert marker in text
    text = text.replace(marker, marker + "  bounces: {address: bounces@provost.example.edu}\n")
    (tmp_path / "items.yaml").write_text(text, encoding="utf-8")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    return tmp_path


def test_digest_send_uses_a_verp_envelope_sender_per_recipient(
    project: Path,
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With newsletter.bounces set, each bounce must come back to an address naming its reader."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    result = run("send", "--month", NOV, "--yes")
    assert result.exit_code == 0, result.output
    received = smtp_server.recorder.messages
    assert len(received) == 11
    for message in received:
        (recipient,) = message.rcpt_tos
        assert message.mail_from == PATHS.sender(NOV, recipient)
        # Only the envelope changes: the headers still name the office.
        assert message.message["From"] == "Office of the Provost <provost@example.edu>"
        assert "Return-Path" not in message.message


def test_verp_without_a_secret_key_is_refused_before_sending(
    project: Path,
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A send that could not sign its return paths must stop with the variable to set."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    monkeypatch.delenv("DIGEST_SECRET_KEY", raising=False)
    result = run("send", "--month", NOV, "--yes")
    assert result.exit_code == 1
    assert "newsletter.bounces is set, and DIGEST_SECRET_KEY is not set" in result.stderr
    assert smtp_server.recorder.messages == []


def test_the_months_codes_map_each_token_to_its_reader() -> None:
    """Reading many bounces of one month must tie each to the reader `match` would."""
    codes = PATHS.codes(NOV, [reader.upper() for reader in READERS])
    for reader in READERS:
        token = PATHS.read(PATHS.sender(NOV, reader))
        assert token is not None
        assert codes[token.code] == reader == PATHS.match(token, READERS)
    assert len(codes) == len(READERS)


def test_a_test_copy_keeps_the_from_address_as_its_envelope_sender(
    project: Path,
    run: Callable[..., Result],
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bounce of a [TEST] copy must reach the staff member who sent it, not the bounce reader."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    result = run("send", "--month", NOV, "--to", "editor@example.edu")
    assert result.exit_code == 0, result.output
    (message,) = smtp_server.recorder.messages
    assert message.rcpt_tos == ["editor@example.edu"]
    assert message.mail_from == "provost@example.edu"
