"""send/mailbox.py's bounce sources: a real Dovecot (tests/imapserver.py), a Maildir, an mbox.

Each holds two DSNs, a complaint, an auto-reply and two ordinary messages, one read and one
unread: reading changes nothing, `processed` moves exactly the messages it is given, and a
second pass sees only what is left.
"""

from __future__ import annotations

import imaplib
import mailbox
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port
from digest.errors import MailboxError
from digest.mail.bounces import Kind, classify
from digest.send.mailbox import BounceSource, open_source
from imapserver import PASSWORD, Account, Dovecot

SAMPLES = Path(__file__).parent / "data" / "bounces"
BOUNCES = [
    "postfix-dsn-hard.eml",
    "exim-dsn-soft.eml",
    "yahoo-arf-complaint.eml",
    "vacation-autoreply.eml",
]
ORDINARY_READ = "ordinary-reply.eml"
ORDINARY_UNREAD = (
    b"From: Dean's Office <dean@example.edu>\r\nTo: bounces@provost.example.edu\r\n"
    b"Subject: Lunch on Friday?\r\nMessage-ID: <lunch.1@example.edu>\r\n\r\nAre you free?\r\n"
)
# Someone else's message, marked deleted and not yet expunged: a plain EXPUNGE would destroy it.
THEIRS_DELETED = (
    b"From: it@example.edu\r\nTo: bounces@provost.example.edu\r\nSubject: old notice\r\n"
    b"Message-ID: <theirs.1@example.edu>\r\n\r\nKept until the owner expunges it.\r\n"
)


def message_id(raw: bytes) -> str:
    """Return a message's own Message-ID, as the tests name messages by it."""
    found = re.search(rb"^Message-I[Dd]: *<([^>]+)>", raw, re.MULTILINE)
    assert found is not None
    return found.group(1).decode()


def read_all(source: BounceSource) -> dict[str, tuple[str, Kind]]:
    """Return each message's key and kind by its Message-ID, as one bounce run would see them."""
    return {message_id(m.raw): (m.key, classify(m.raw).kind) for m in source.messages()}


def process_recognised(source: BounceSource) -> set[str]:
    """Move every bounce, complaint and auto-reply away; return their Message-IDs."""
    moved = set()
    for mid, (key, kind) in read_all(source).items():
        if kind is not Kind.UNKNOWN:
            source.processed(key)
            moved.add(mid)
    return moved


BOUNCE_IDS = {message_id((SAMPLES / name).read_bytes()) for name in BOUNCES}
READ_ID = message_id((SAMPLES / ORDINARY_READ).read_bytes())
UNREAD_ID = "lunch.1@example.edu"


# --- IMAP ---------------------------------------------------------------------------------------


def imap_flags(server: Dovecot, account: Account, folder: str) -> dict[str, set[str]]:
    """Return each message's flags by Message-ID, looked at read-only (EXAMINE)."""
    with imaplib.IMAP4("127.0.0.1", server.port, timeout=10) as client:
        client.login(account.user, PASSWORD)
        status, _ = client.select(f'"{folder}"', readonly=True)
        if status != "OK":
            return {}
        _, found = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        flags: dict[str, set[str]] = {}
        for part in found:
            if isinstance(part, tuple):
                words = re.search(rb"FLAGS \(([^)]*)\)", part[0])
                assert words is not None
                flags[message_id(part[1])] = set(words.group(1).decode().split()) - {"\\Recent"}
        return flags


def fill_imap(server: Dovecot, account: Account) -> None:
    """Deliver the mixed mailbox of the module docstring (and someone's deleted message)."""
    for name in BOUNCES:
        server.deliver(account, (SAMPLES / name).read_bytes())
    server.deliver(account, (SAMPLES / ORDINARY_READ).read_bytes(), flags="(\\Seen)")
    server.deliver(account, ORDINARY_UNREAD)
    server.deliver(account, THEIRS_DELETED, flags="(\\Seen \\Deleted)")


SERVERS = {
    "MOVE": "",
    "UIDPLUS": "imap_capability = IMAP4rev1 NAMESPACE UIDPLUS\n",
    # Folders below INBOX, as Courier and Cyrus keep them: digest-processed goes there too.
    "INBOX.": "namespace inbox {\n  inbox = yes\n  prefix = INBOX.\n  separator = .\n}\n",
}


@pytest.fixture(scope="module", params=list(SERVERS))
def imap_server(request: pytest.FixtureRequest) -> Iterator[Dovecot]:
    """Dovecot offering UID MOVE (as it does), offering only UIDPLUS, and with INBOX. folders."""
    extra = SERVERS[request.param]
    home = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
    server = Dovecot.start(home, free_port(), free_port(), extra)
    try:
        yield server
    finally:
        server.stop()
        server.remove()


def test_imap_bounces_move_and_nothing_else_is_touched(imap_server: Dovecot) -> None:
    """Reading bounces must not mark, move or delete the office's other mail in that folder."""
    account = imap_server.add_user()
    fill_imap(imap_server, account)
    before = imap_flags(imap_server, account, "INBOX")
    url = account.url(tls="INBOX." in imap_server.extra)  # imaps:// once, imap:// + STARTTLS
    with open_source(url, PASSWORD, context=imap_server.context) as source:
        assert {mid: kind for mid, (_, kind) in read_all(source).items()} == {
            "20251104141231.4QzK1m3Xb5z9vB@mx1.provost.example.edu": Kind.HARD,
            "E1vGk2P-00A1b2-2c@relay.chem.example.ac.uk": Kind.SOFT,
            "cfl.20251106180245.1a2b3c@arf.mail.yahoo.com": Kind.COMPLAINT,
            "vacation.20251104141830.77@history.example.edu": Kind.AUTOREPLY,
            READ_ID: Kind.UNKNOWN,
            UNREAD_ID: Kind.UNKNOWN,
            "theirs.1@example.edu": Kind.UNKNOWN,
        }
        assert imap_flags(imap_server, account, "INBOX") == before  # reading marked nothing
        assert process_recognised(source) == BOUNCE_IDS
    left = imap_flags(imap_server, account, "INBOX")
    assert left == {
        READ_ID: {"\\Seen"},
        UNREAD_ID: set(),
        "theirs.1@example.edu": {"\\Seen", "\\Deleted"},
    }
    processed = "INBOX.digest-processed" if "INBOX." in imap_server.extra else "digest-processed"
    assert imap_flags(imap_server, account, processed) == {mid: {"\\Seen"} for mid in BOUNCE_IDS}
    with open_source(url, PASSWORD, context=imap_server.context) as source:
        assert set(read_all(source)) == set(left)
        assert process_recognised(source) == set()
    assert imap_flags(imap_server, account, "INBOX") == left


def test_imap_without_move_or_uidplus_is_refused(tmp_path: Path) -> None:
    """A server digest cannot move one message on must stop the run, not expunge the folder."""
    home = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
    server = Dovecot.start(home, free_port(), free_port(), "imap_capability = IMAP4rev1\n")
    try:
        account = server.add_user()
        fill_imap(server, account)
        with open_source(account.url(), PASSWORD, context=server.context) as source:
            key = next(iter(source.messages())).key
            with pytest.raises(MailboxError) as raised:
                source.processed(key)
        assert str(raised.value) == (
            f"imap://{account.user}@127.0.0.1:{server.port}/INBOX: the server offers neither "
            "MOVE nor UIDPLUS, so digest cannot move one message without expunging others: use "
            "another folder type (maildir: or mbox:) or ask the mail administrators for UIDPLUS"
        )
        assert len(imap_flags(server, account, "INBOX")) == 7
    finally:
        server.stop()
        server.remove()


def test_imap_errors_name_the_source_without_the_password(
    dovecot: Dovecot, imap_user: Account
) -> None:
    """A wrong password or folder must say which mailbox failed, and never show the password."""
    with pytest.raises(MailboxError) as refused:
        open_source(imap_user.url(tls=True), "wrong-password", context=dovecot.context)
    assert str(refused.value) == (
        f"imaps://{imap_user.user}@127.0.0.1:{dovecot.tls_port}/INBOX: "
        "[AUTHENTICATIONFAILED] Authentication failed."
    )
    with pytest.raises(MailboxError) as missing:
        open_source(imap_user.url("Bounces"), PASSWORD, context=dovecot.context)
    assert str(missing.value).startswith(
        f"imap://{imap_user.user}@127.0.0.1:{dovecot.port}/Bounces: cannot open the folder: "
    )
    port = free_port()
    with pytest.raises(MailboxError) as unreachable:
        open_source(f"imap://someone:hunter2@127.0.0.1:{port}/INBOX", None)
    assert str(unreachable.value).startswith(
        f"cannot connect to imap://someone@127.0.0.1:{port}/INBOX: "
    )
    assert "hunter2" not in str(unreachable.value) + str(refused.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "pop3://u:secret@h/",
            "the bounce source 'pop3://...' must be one of imap://user@host/FOLDER, "
            "imaps://user@host/FOLDER, maildir:PATH or mbox:PATH",
        ),
        (
            "maildir:",
            "the bounce source 'maildir:' must be one of imap://user@host/FOLDER, "
            "imaps://user@host/FOLDER, maildir:PATH or mbox:PATH",
        ),
        (
            "imaps://h/INBOX",
            "the bounce source 'imaps://h/INBOX' must look like "
            "imaps://user@mail.example.edu/INBOX (or imap:// with STARTTLS)",
        ),
    ],
)
def test_a_mistyped_source_is_explained(url: str, expected: str) -> None:
    """A source in no known form must say which forms there are, without the password."""
    with pytest.raises(MailboxError) as raised:
        open_source(url, None)
    assert str(raised.value) == expected


# --- Maildir ------------------------------------------------------------------------------------


def fill_maildir(path: Path) -> None:
    """Write the mixed mailbox into a new Maildir at `path` (the read message in cur/, S)."""
    box = mailbox.Maildir(path, create=True)
    for name in BOUNCES:
        box.add((SAMPLES / name).read_bytes())
    read = mailbox.MaildirMessage((SAMPLES / ORDINARY_READ).read_bytes())
    read.set_subdir("cur")
    read.add_flag("S")
    box.add(read)
    box.add(ORDINARY_UNREAD)
    box.close()


def maildir_state(path: Path) -> dict[str, tuple[str, str]]:
    """Return each message's (subdir, flags) by Message-ID."""
    box = mailbox.Maildir(path, create=False)
    found = {message_id(box.get_bytes(k)): (m.get_subdir(), m.get_flags()) for k, m in box.items()}
    box.close()
    return found


def test_maildir_bounces_move_and_nothing_else_is_touched(tmp_path: Path) -> None:
    """A Maildir must keep its other mail where and as it was; bounces go to .digest-processed."""
    path = tmp_path / "Maildir"
    fill_maildir(path)
    before = maildir_state(path)
    files_before = sorted(p.relative_to(path) for p in path.rglob("*") if p.is_file())
    with open_source(f"maildir:{path}", None) as source:
        kinds = {mid: kind for mid, (_, kind) in read_all(source).items()}
        assert sorted(kinds.values()) == sorted(
            [Kind.HARD, Kind.SOFT, Kind.COMPLAINT, Kind.AUTOREPLY, Kind.UNKNOWN, Kind.UNKNOWN]
        )
        assert sorted(p.relative_to(path) for p in path.rglob("*") if p.is_file()) == files_before
        assert process_recognised(source) == BOUNCE_IDS
    assert maildir_state(path) == {READ_ID: before[READ_ID], UNREAD_ID: before[UNREAD_ID]}
    assert before[UNREAD_ID] == ("new", "")
    assert maildir_state(path / ".digest-processed") == {mid: ("cur", "S") for mid in BOUNCE_IDS}
    moved = mailbox.Maildir(path / ".digest-processed", create=False)
    assert sorted(moved.get_bytes(k) for k in moved.iterkeys()) == sorted(
        (SAMPLES / name).read_bytes() for name in BOUNCES
    )
    with open_source(f"maildir:{path}", None) as source:
        assert set(read_all(source)) == {READ_ID, UNREAD_ID}
        assert process_recognised(source) == set()


def test_a_folder_that_is_no_maildir_is_refused(tmp_path: Path) -> None:
    """Pointing at the wrong folder must say what a Maildir looks like, and touch nothing."""
    with pytest.raises(MailboxError) as raised:
        open_source(f"maildir:{tmp_path}", None)
    assert str(raised.value) == (
        f"the bounce source maildir:{tmp_path} is not a maildir: give the folder that holds "
        "cur/, new/ and tmp/ (maildir:/home/bounces/Maildir, say)"
    )
    assert list(tmp_path.iterdir()) == []


# --- mbox ---------------------------------------------------------------------------------------


def fill_mbox(path: Path) -> None:
    """Write the mixed mailbox into a new mbox file (the read message with Status: RO)."""
    box = mailbox.mbox(path, create=True)
    for name in BOUNCES:
        box.add((SAMPLES / name).read_bytes())
    read = mailbox.mboxMessage((SAMPLES / ORDINARY_READ).read_bytes())
    read.set_flags("RO")
    box.add(read)
    box.add(ORDINARY_UNREAD)
    box.close()


def mbox_state(path: Path) -> dict[str, str]:
    """Return each message's mbox flags by Message-ID."""
    box = mailbox.mbox(path, create=False)
    found = {message_id(box.get_bytes(k)): m.get_flags() for k, m in box.items()}
    box.close()
    return found


def test_mbox_bounces_move_and_nothing_else_is_touched(tmp_path: Path) -> None:
    """An mbox must keep its other mail as it was; bounces go to PATH.digest-processed."""
    path = tmp_path / "bounces"
    fill_mbox(path)
    before = mbox_state(path)
    bytes_before = path.read_bytes()
    with open_source(f"mbox:{path}", None) as source:
        assert len(read_all(source)) == 6
        assert path.read_bytes() == bytes_before
        assert process_recognised(source) == BOUNCE_IDS
    assert mbox_state(path) == {READ_ID: "RO", UNREAD_ID: ""}
    assert before[READ_ID] == "RO"
    assert mbox_state(tmp_path / "bounces.digest-processed") == {mid: "RO" for mid in BOUNCE_IDS}
    with open_source(f"mbox:{path}", None) as source:
        assert set(read_all(source)) == {READ_ID, UNREAD_ID}
        assert process_recognised(source) == set()


def test_a_locked_mbox_is_refused(tmp_path: Path) -> None:
    """While the mail server delivers into the mbox, a run must wait its turn, not corrupt it."""
    path = tmp_path / "bounces"
    fill_mbox(path)
    holder = mailbox.mbox(path, create=False)
    holder.lock()
    try:
        with pytest.raises(MailboxError) as raised:
            open_source(f"mbox:{path}", None)
    finally:
        holder.unlock()
        holder.close()
    assert str(raised.value).startswith(
        f"the bounce source mbox:{path} is locked by another program (the mail server "
        "delivering, say): try again in a minute ("
    )


def test_a_file_that_is_no_mbox_is_refused(tmp_path: Path) -> None:
    """Pointing at the wrong file must say so, and leave it as it was."""
    path = tmp_path / "items.yaml"
    path.write_text("title: not mail\n")
    with pytest.raises(MailboxError) as raised:
        open_source(f"mbox:{path}", None)
    assert str(raised.value) == (
        f"the bounce source mbox:{path} is not an mbox file (an mbox starts with a 'From ' "
        "line): give the mail file itself, or maildir:PATH for a Maildir"
    )
    assert path.read_text() == "title: not mail\n"
    with pytest.raises(MailboxError) as missing:
        open_source(f"mbox:{tmp_path / 'absent'}", None)
    assert str(missing.value).startswith(f"cannot open the bounce source mbox:{tmp_path}/absent: ")
