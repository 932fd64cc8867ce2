"""send/mailbox.py against a real IMAP server: Dovecot on loopback (tests/imapserver.py)."""

from __future__ import annotations

import ssl

import pytest
import trustme

from digest.errors import MailboxError
from digest.send.mailbox import Mailbox, parse_url, wait_for
from imapserver import Account, Dovecot

MESSAGE = (
    b"From: provost@example.edu\r\nTo: reader@example.org\r\nSubject: hello\r\n"
    b"Message-ID: <probe.1@example.edu>\r\n\r\nHello.\r\n"
)


def opened(
    dovecot: Dovecot, account: Account, folder: str = "INBOX", *, tls: bool = False
) -> Mailbox:
    """Open the account's folder over STARTTLS (or imaps://), trusting the server's test CA."""
    url = account.url(folder, tls=tls)
    return Mailbox(parse_url(url, account.password), context=dovecot.context)


def test_url_is_read_with_defaults() -> None:
    """An imaps:// URL without port or folder must reach port 993 and the inbox."""
    settings = parse_url("imaps://news%40example.edu@mail.example.edu", "pw")
    assert (settings.host, settings.port, settings.username, settings.folder) == (
        "mail.example.edu",
        993,
        "news@example.edu",
        "INBOX",
    )
    assert settings.implicit_tls
    assert settings.password == "pw"  # noqa: S105 -- the test's own
    plain = parse_url("imap://u:p%2F@h/Test%20Copies?starttls=required")
    assert (plain.port, plain.password, plain.folder, plain.require_starttls) == (
        143,
        "p/",
        "Test Copies",
        True,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://u@h/INBOX",
            "--read 'https://u@h/INBOX' must look like imaps://user@mail.example.edu/INBOX "
            "(or imap:// with STARTTLS)",
        ),
        (
            "imaps://h/INBOX",
            "--read 'imaps://h/INBOX' must look like imaps://user@mail.example.edu/INBOX "
            "(or imap:// with STARTTLS)",
        ),
        (
            "imaps://u:secret@h/?tls=no",
            "--read 'imaps://u:***@h/?tls=no': the one option is ?starttls=required",
        ),
    ],
)
def test_bad_url_is_explained_without_the_password(url: str, expected: str) -> None:
    """A mistyped mailbox URL says what it should look like and never shows the password."""
    with pytest.raises(MailboxError) as raised:
        parse_url(url)
    assert str(raised.value) == expected


def test_a_delivered_message_is_found_by_its_message_id(
    dovecot: Dovecot, imap_user: Account
) -> None:
    """The doctor must find its own test copy among the mailbox's other mail."""
    dovecot.deliver(imap_user, MESSAGE.replace(b"probe.1", b"other"))
    dovecot.deliver(imap_user, MESSAGE)
    with opened(dovecot, imap_user) as mailbox:
        assert len(mailbox.uids()) == 2
        found = mailbox.find("<probe.1@example.edu>")
        assert len(found) == 1
        assert mailbox.fetch(found[0]) == MESSAGE
        assert mailbox.find("<absent@example.edu>") == []


def test_reading_changes_nothing_in_the_mailbox(dovecot: Dovecot, imap_user: Account) -> None:
    """Reading a mailbox must leave every message there and unread, as the person left it."""
    dovecot.deliver(imap_user, MESSAGE)
    with opened(dovecot, imap_user) as mailbox:
        assert [raw for _, raw in mailbox.messages()] == [MESSAGE]
    with opened(dovecot, imap_user) as mailbox:
        assert mailbox.search("UNSEEN") == mailbox.uids() != []


def test_waiting_sees_a_message_that_arrives_later(dovecot: Dovecot, imap_user: Account) -> None:
    """A test copy that lands after the first look must still be found on a later one."""
    looks: list[float] = []

    def arrive(seconds: float) -> None:
        looks.append(seconds)
        dovecot.deliver(imap_user, MESSAGE)

    with opened(dovecot, imap_user) as mailbox:
        found = wait_for(mailbox, "<probe.1@example.edu>", within=60, every=5, pause=arrive)
    assert (found, looks) == (MESSAGE, [5])


def test_waiting_gives_up_after_the_bound(dovecot: Dovecot, imap_user: Account) -> None:
    """A copy that never comes must end the wait at its bound, not hang the doctor."""
    now = [0.0]
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    with opened(dovecot, imap_user) as mailbox:
        found = wait_for(
            mailbox, "<probe.1@example.edu>", within=5, every=2, clock=lambda: now[0], pause=pause
        )
    assert (found, pauses) == (None, [2, 2, 1])


def test_wrong_password_is_a_clear_error(dovecot: Dovecot, imap_user: Account) -> None:
    """A refused login names the mailbox and the server's reason, never the password."""
    with pytest.raises(MailboxError) as raised:
        Mailbox(parse_url(imap_user.url(), "wrong-password"), context=dovecot.context)
    assert str(raised.value) == (
        f"imap://{imap_user.user}@127.0.0.1:{imap_user.port}/INBOX: "
        "[AUTHENTICATIONFAILED] Authentication failed."
    )


def test_missing_folder_is_a_clear_error(dovecot: Dovecot, imap_user: Account) -> None:
    """A folder that does not exist names the folder and the server's reason."""
    with pytest.raises(MailboxError) as raised:
        opened(dovecot, imap_user, "Nowhere")
    assert str(raised.value).startswith(
        f"imap://{imap_user.user}@127.0.0.1:{imap_user.port}/Nowhere: "
    )
    assert "Nowhere" in str(raised.value)


def test_nothing_listening_is_a_clear_error() -> None:
    """A wrong port names the mailbox it could not reach."""
    from conftest import free_port

    port = free_port()
    with pytest.raises(MailboxError) as raised:
        Mailbox(parse_url(f"imap://u@127.0.0.1:{port}/INBOX", "pw"))
    assert str(raised.value).startswith(f"cannot connect to imap://u@127.0.0.1:{port}/INBOX: ")


def test_implicit_tls_reads_the_mailbox(dovecot: Dovecot, imap_user: Account) -> None:
    """imaps:// (port 993 style) reads the same mailbox, over TLS from the first byte."""
    dovecot.deliver(imap_user, MESSAGE)
    with opened(dovecot, imap_user, tls=True) as mailbox:
        assert mailbox.find("<probe.1@example.edu>") != []


@pytest.mark.parametrize("tls", [False, True], ids=["starttls", "imaps"])
def test_an_untrusted_certificate_is_refused(imap_user: Account, tls: bool) -> None:
    """A server whose certificate this machine does not trust is never sent the password."""
    other = trustme.CA()

    def context() -> ssl.SSLContext:
        trusting = ssl.create_default_context()
        other.configure_trust(trusting)
        return trusting

    url = imap_user.url(tls=tls)
    settings = parse_url(url, imap_user.password)
    with pytest.raises(MailboxError) as raised:
        Mailbox(settings, context=context)
    assert str(raised.value) == (
        f"{settings.describe()}: the certificate is not valid: unable to get local issuer "
        "certificate"
    )
