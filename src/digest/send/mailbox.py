"""Reading a mailbox over IMAP: `imaps://user@host[:port]/FOLDER`, or `imap://` with STARTTLS.

`digest doctor --read` finds its test copy here, with the folder opened read-only (EXAMINE):
reading marks nothing as seen and deletes nothing. Certificates are verified whenever TLS is used,
as for SMTP.

The bounce reader's sources are here too (`open_source`): an IMAP folder, a Maildir or an mbox
file. Reading one changes nothing (BODY.PEEK over IMAP); only `processed(key)` touches a message:
it is flagged seen and moved to `digest-processed` (a folder over IMAP, a `.digest-processed`
Maildir++ subfolder, or the mbox file PATH.digest-processed). Over IMAP that is UID MOVE, or UID
COPY + UID STORE \\Deleted + UID EXPUNGE of that one UID: never a plain EXPUNGE, which would also
delete the mail someone else marked deleted in that folder.
"""

from __future__ import annotations

import abc
import contextlib
import imaplib
import mailbox as stdmailbox
import re
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

from digest.errors import MailboxError


@dataclass(frozen=True, slots=True)
class MailboxSettings:
    """A parsed mailbox URL."""

    implicit_tls: bool
    host: str
    port: int
    username: str
    password: str | None = field(repr=False)
    folder: str = "INBOX"
    require_starttls: bool = False
    timeout: float = 30.0

    def describe(self) -> str:
        scheme = "imaps" if self.implicit_tls else "imap"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.folder}"


def parse_url(url: str, password: str | None = None, *, name: str = "--read") -> MailboxSettings:
    """Read `imaps://user[:password]@host[:port]/FOLDER` (`imap://`, `?starttls=required`).

    `password` (DIGEST_IMAP_PASSWORD) wins over one in the URL; `name` is what the URL was given
    as, for messages. The user name and folder are percent-decoded; the folder defaults to INBOX.
    """
    text = url.strip()
    prefix, slashes, rest = text.partition("://")
    userinfo, at, location = rest.rpartition("@")
    user, colon, secret = userinfo.partition(":")
    shown = f"{prefix}{slashes}{user}{':***' if colon else ''}{at}{location}"
    example = "imaps://user@mail.example.edu/INBOX"
    try:
        parts = urlsplit(f"{prefix}{slashes}{location}")
        port = parts.port
    except ValueError as exc:
        raise MailboxError(f"{name} {shown!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("imap", "imaps") or not parts.hostname or not user:
        raise MailboxError(f"{name} {shown!r} must look like {example} (or imap:// with STARTTLS)")
    if parts.query not in ("", "starttls=required") or parts.fragment:
        raise MailboxError(f"{name} {shown!r}: the one option is ?starttls=required")
    folder = unquote(parts.path.strip("/")) or "INBOX"
    if not folder.isascii() or re.search(r"[\x00-\x1f\x7f]", folder):
        raise MailboxError(
            f"{name} {shown!r}: the folder name must be printable ASCII (IMAP spells other "
            "names in modified UTF-7: give the folder as your mail client's server settings show)"
        )
    implicit = parts.scheme == "imaps"
    return MailboxSettings(
        implicit_tls=implicit,
        host=parts.hostname,
        port=port or (993 if implicit else 143),
        username=unquote(user),
        password=password if password is not None else (unquote(secret) if secret else None),
        folder=folder,
        require_starttls=parts.query == "starttls=required",
    )


class Mailbox:
    """One IMAP session on one folder, opened read-only. Use it as a context manager."""

    def __init__(
        self,
        settings: MailboxSettings,
        context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
        *,
        readonly: bool = True,
    ) -> None:
        self.settings = settings
        where = settings.describe()
        client: imaplib.IMAP4 | None = None
        try:
            try:
                client = self._connect(context)
                client.login(settings.username, settings.password or "")
                status, reply = client.select(_quoted(settings.folder), readonly=readonly)
                if status != "OK":
                    raise MailboxError(f"{where}: cannot open the folder: {_said(reply)}")
            except BaseException:
                if client is not None:
                    _close(client)
                raise
        except ssl.SSLCertVerificationError as exc:
            raise MailboxError(
                f"{where}: the certificate is not valid: {exc.verify_message}"
            ) from exc
        except ssl.SSLError as exc:
            raise MailboxError(f"{where}: TLS failed: {exc.reason or exc}") from exc
        except imaplib.IMAP4.error as exc:
            raise MailboxError(f"{where}: {_first_line(exc)}") from exc
        except (OSError, EOFError) as exc:
            raise MailboxError(f"cannot connect to {where}: {exc}") from exc
        self._client = client
        self._capabilities: frozenset[str] | None = None
        self._folders: dict[str, str] = {}  # a folder's name: its name on the server, made

    def _connect(self, context: Callable[[], ssl.SSLContext]) -> imaplib.IMAP4:
        s = self.settings
        if s.implicit_tls:
            return imaplib.IMAP4_SSL(s.host, s.port, ssl_context=context(), timeout=s.timeout)
        client = imaplib.IMAP4(s.host, s.port, timeout=s.timeout)
        if "STARTTLS" in client.capabilities:
            client.starttls(ssl_context=context())
        elif s.require_starttls:
            client.shutdown()
            raise MailboxError(f"{s.describe()} does not offer STARTTLS, and the URL requires it")
        return client

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def search(self, *criteria: str) -> list[int]:
        """Return the UIDs of the messages matching IMAP search `criteria`, new mail included."""
        try:
            self._client.noop()  # the server tells of messages that arrived since
            status, reply = self._client.uid("SEARCH", *criteria)
        except (imaplib.IMAP4.error, OSError, EOFError) as exc:
            raise MailboxError(f"{self.settings.describe()}: search failed: {exc}") from exc
        if status != "OK":
            raise MailboxError(f"{self.settings.describe()}: search failed: {_said(reply)}")
        found = reply[0] if reply and isinstance(reply[0], bytes) else b""
        return [int(uid) for uid in found.split()]

    def uids(self) -> list[int]:
        """Return the UIDs of every message in the folder."""
        return self.search("ALL")

    def find(self, message_id: str) -> list[int]:
        """Return the UIDs of the messages whose Message-ID header is `message_id`."""
        if not re.fullmatch(r"<[!-~]+>", message_id) or '"' in message_id or "\\" in message_id:
            raise MailboxError(f"{message_id!r} is not a Message-ID digest can search for")
        return self.search("HEADER", "Message-ID", f'"{message_id}"')

    def fetch(self, uid: int) -> bytes:
        """Return the message with `uid`, byte for byte as the server holds it (nothing marked)."""
        found = self.fetch_if_there(uid)
        if found is None:
            raise MailboxError(f"{self.settings.describe()}: message {uid} is gone")
        return found

    def fetch_if_there(self, uid: int) -> bytes | None:
        """Return the message with `uid` as `fetch` does; None if it is no longer there."""
        status, reply = self._command("fetch", "FETCH", str(uid), "(BODY.PEEK[])")
        for part in reply if status == "OK" else ():
            if isinstance(part, tuple) and len(part) == 2 and isinstance(part[1], bytes):
                return part[1]
        if status != "OK":
            raise MailboxError(f"{self.settings.describe()}: fetch failed: {_said(reply)}")
        return None

    def move(self, uid: int, folder: str) -> None:
        """Flag message `uid` seen and move it to `folder` (made if missing).

        UID MOVE (RFC 6851) where the server has it, else UID COPY, UID STORE \\Deleted and UID
        EXPUNGE (RFC 4315) of that one UID. A server with neither is refused: a plain EXPUNGE
        would delete every message anyone marked deleted in the folder.
        """
        capabilities = self.capabilities()
        if "MOVE" not in capabilities and "UIDPLUS" not in capabilities:
            raise MailboxError(
                f"{self.settings.describe()}: the server offers neither MOVE nor UIDPLUS, so "
                "digest cannot move one message without expunging others: use another folder "
                "type (maildir: or mbox:) or ask the mail administrators for UIDPLUS"
            )
        target = self.folder(folder)
        self._checked("store", "STORE", str(uid), "+FLAGS.SILENT", "(\\Seen)")
        if "MOVE" in capabilities:
            self._checked("move", "MOVE", str(uid), _quoted(target))
            return
        self._checked("copy", "COPY", str(uid), _quoted(target))
        self._checked("store", "STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
        self._checked("expunge", "EXPUNGE", str(uid))

    def capabilities(self) -> frozenset[str]:
        """Return what the server offers once logged in (it may offer more than at connect)."""
        if self._capabilities is None:
            status, reply = self._plain("capability", self._client.capability)
            said = reply[-1] if status == "OK" and reply and isinstance(reply[-1], bytes) else b""
            self._capabilities = frozenset(said.decode("ascii", "replace").upper().split())
        return self._capabilities

    def folder(self, name: str) -> str:
        """Return `name` in the personal namespace (made and subscribed to if missing)."""
        if name not in self._folders:
            self._folders[name] = self._make_folder(name)
        return self._folders[name]

    def _make_folder(self, name: str) -> str:
        prefix = ""
        if "NAMESPACE" in self.capabilities():
            status, reply = self._plain("namespace", self._client.namespace)
            said = reply[0] if status == "OK" and reply and isinstance(reply[0], bytes) else b""
            found = re.match(rb'\(\("([^"\\]*)"', said)
            prefix = found.group(1).decode("ascii", "replace") if found else ""
        full = prefix + name
        status, reply = self._plain("list", lambda: self._client.list('""', _quoted(full)))
        if status == "OK" and any(isinstance(line, bytes) for line in reply):
            return full
        status, reply = self._plain("create", lambda: self._client.create(_quoted(full)))
        if status != "OK" and b"ALREADYEXISTS" not in b" ".join(
            line for line in reply if isinstance(line, bytes)
        ):
            raise MailboxError(
                f"{self.settings.describe()}: cannot make the folder {full!r}: {_said(reply)}"
            )
        self._plain("subscribe", lambda: self._client.subscribe(_quoted(full)))  # for mail clients
        return full

    def _command(self, what: str, *args: str) -> tuple[str, list[object]]:
        """Run `UID args...`; wrap the library's errors."""
        try:
            status, reply = self._client.uid(*args)
        except (imaplib.IMAP4.error, OSError, EOFError) as exc:
            raise MailboxError(f"{self.settings.describe()}: {what} failed: {exc}") from exc
        return status, list(reply)

    def _checked(self, what: str, *args: str) -> None:
        status, reply = self._command(what, *args)
        if status != "OK":
            raise MailboxError(f"{self.settings.describe()}: {what} failed: {_said(reply)}")

    def _plain(
        self, what: str, call: Callable[[], tuple[str, Sequence[object]]]
    ) -> tuple[str, list[object]]:
        """Run one imaplib command not under UID; wrap the library's errors."""
        try:
            status, reply = call()
        except (imaplib.IMAP4.error, OSError, EOFError) as exc:
            raise MailboxError(f"{self.settings.describe()}: {what} failed: {exc}") from exc
        return str(status), list(reply)

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """Yield every message of the folder with its UID, oldest first."""
        for uid in self.uids():
            yield uid, self.fetch(uid)

    def close(self) -> None:
        _close(self._client)


PROCESSED = "digest-processed"
SOURCE_FORMS = "imap://user@host/FOLDER, imaps://user@host/FOLDER, maildir:PATH or mbox:PATH"


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message in a bounce source: its key there, and its bytes as the source holds them."""

    key: str
    raw: bytes = field(repr=False)


class BounceSource(abc.ABC):
    """Where bounces arrive; reading changes nothing, `processed` moves one message away."""

    where: str  # the source as the user named it, without a password

    @abc.abstractmethod
    def messages(self) -> Iterator[Incoming]:
        """Yield every message of the source, oldest first, marking nothing."""

    @abc.abstractmethod
    def processed(self, key: str) -> None:
        """Flag the message `key` seen and move it to digest-processed (made if missing)."""

    @abc.abstractmethod
    def close(self) -> None:
        """End the session (and release any lock); nothing is expunged or rewritten here."""

    def __enter__(self) -> BounceSource:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_source(
    url: str,
    password: str | None,
    *,
    context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
    base: Path | None = None,
) -> BounceSource:
    """Open the bounce source `url`: imap://, imaps://user@host[:port]/FOLDER, maildir:, mbox:.

    `password` (DIGEST_BOUNCE_PASSWORD) is for IMAP; `context` makes the TLS context; `base`,
    when given, is the folder a relative maildir: or mbox: path is read from (else the current
    one).
    """
    text = url.strip()
    if text.startswith(("imap://", "imaps://")):
        return ImapSource(parse_url(text, password, name="the bounce source"), context)
    scheme, _, path = text.partition(":")
    if scheme in ("maildir", "mbox") and path:
        where = Path(path).expanduser()
        where = base / where if base is not None else where  # an absolute path stays
        return MaildirSource(where) if scheme == "maildir" else MboxSource(where)
    shown = text if "://" not in text else text.split("://", 1)[0] + "://..."
    raise MailboxError(f"the bounce source {shown!r} must be one of {SOURCE_FORMS}")


class ImapSource(BounceSource):
    """An IMAP folder, opened read-write; messages are read with BODY.PEEK (nothing marked)."""

    def __init__(self, settings: MailboxSettings, context: Callable[[], ssl.SSLContext]) -> None:
        self.where = settings.describe()
        self._mailbox = Mailbox(settings, context, readonly=False)

    def messages(self) -> Iterator[Incoming]:
        for uid in self._mailbox.uids():
            raw = self._mailbox.fetch_if_there(uid)
            if raw is not None:  # moved or deleted by someone else meanwhile
                yield Incoming(str(uid), raw)

    def processed(self, key: str) -> None:
        self._mailbox.move(int(key), PROCESSED)

    def close(self) -> None:
        self._mailbox.close()


class MaildirSource(BounceSource):
    """A Maildir folder; processed messages go to its `.digest-processed` Maildir++ subfolder."""

    def __init__(self, path: Path) -> None:
        self.where = f"maildir:{path}"
        if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise MailboxError(
                f"the bounce source {self.where} is not a maildir: give the folder that holds "
                "cur/, new/ and tmp/ (maildir:/home/bounces/Maildir, say)"
            )
        self._path = path
        self._box = stdmailbox.Maildir(path, factory=None, create=False)
        self._target: Path | None = None

    def messages(self) -> Iterator[Incoming]:
        try:
            keys = sorted(self._box.keys())
        except OSError as exc:
            raise MailboxError(f"cannot read the bounce source {self.where}: {exc}") from exc
        for key in keys:
            try:
                raw = self._box.get_bytes(key)
            except (KeyError, FileNotFoundError):  # moved or deleted by someone else meanwhile
                continue
            except OSError as exc:
                raise MailboxError(f"cannot read {key} in {self.where}: {exc}") from exc
            yield Incoming(key, raw)

    def processed(self, key: str) -> None:
        # The file itself is renamed into the subfolder, as a mail client moves it: its bytes and
        # its modification time (the "received" date Dovecot and Courier show) stay as they were.
        colon = self._box.colon
        try:
            source = self._file_of(key)
            if source is None:
                raise MailboxError(f"{self.where}: message {key} is gone")
            _, _, info = source.name.partition(colon)
            flags = set(info[2:]) if info.startswith("2,") else set()
            name = f"{key}{colon}2,{''.join(sorted(flags | {'S'}))}"
            source.rename(self._folder() / "cur" / name)
        except OSError as exc:
            raise MailboxError(f"cannot move {key} in {self.where}: {exc}") from exc

    def _file_of(self, key: str) -> Path | None:
        for sub in ("new", "cur"):
            for entry in (self._path / sub).iterdir():
                if entry.name.split(self._box.colon)[0] == key:
                    return entry
        return None

    def _folder(self) -> Path:
        if self._target is None:
            try:
                self._box.get_folder(PROCESSED)
            except stdmailbox.NoSuchMailboxError:
                self._box.add_folder(PROCESSED)
            self._target = self._path / f".{PROCESSED}"
        return self._target

    def close(self) -> None:
        self._box.close()


class MboxSource(BounceSource):
    """An mbox file, locked while open; processed messages go to the mbox PATH.digest-processed."""

    def __init__(self, path: Path) -> None:
        self.where = f"mbox:{path}"
        self._archive_path = path.with_name(f"{path.name}.{PROCESSED}")
        try:
            with path.open("rb") as file:
                head = file.read(5)
        except OSError as exc:
            raise MailboxError(f"cannot open the bounce source {self.where}: {exc}") from exc
        if head and head != b"From ":
            raise MailboxError(
                f"the bounce source {self.where} is not an mbox file (an mbox starts with a "
                "'From ' line): give the mail file itself, or maildir:PATH for a Maildir"
            )
        self._box = stdmailbox.mbox(path, factory=None, create=False)
        self._keys: dict[str, str] = {}
        try:
            self._box.lock()
        except (stdmailbox.ExternalClashError, OSError) as exc:
            self._box.close()
            raise MailboxError(
                f"the bounce source {self.where} is locked by another program (the mail "
                f"server delivering, say): try again in a minute ({exc})"
            ) from exc

    def messages(self) -> Iterator[Incoming]:
        for key in list(self._box.keys()):
            try:
                raw = self._box.get_bytes(key)
            except KeyError:
                continue
            self._keys[str(key)] = key  # the library's own key (a number, kept as it is)
            yield Incoming(str(key), raw)

    def processed(self, key: str) -> None:
        try:
            found = self._keys.pop(key)
            message = self._box.get_message(found)
        except KeyError as exc:
            raise MailboxError(f"{self.where}: message {key} is gone") from exc
        message.add_flag("RO")
        try:
            archive = stdmailbox.mbox(self._archive_path, factory=None, create=True)
            archive.lock()
            try:
                archive.add(message)
                archive.flush()
            finally:
                archive.unlock()
                archive.close()
            self._box.remove(found)
            self._box.flush()  # at once: a run cut short leaves no message in both files
        except (stdmailbox.ExternalClashError, OSError) as exc:
            raise MailboxError(f"cannot move message {key} of {self.where}: {exc}") from exc

    def close(self) -> None:
        try:
            self._box.unlock()
        finally:
            self._box.close()


def wait_for(
    mailbox: Mailbox,
    message_id: str,
    *,
    within: float = 60.0,
    every: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> bytes | None:
    """Return the message with `message_id` once it is in the folder; None after `within` s.

    Asks every `every` seconds (the first time at once).
    """
    deadline = clock() + within
    while True:
        found = mailbox.find(message_id)
        if found:
            return mailbox.fetch(found[-1])
        left = deadline - clock()
        if left <= 0:
            return None
        pause(min(every, left))


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _said(reply: Sequence[object] | None) -> str:
    for part in reply or ():
        if isinstance(part, bytes):
            return part.decode("utf-8", "replace")
    return "no reason given"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if text.startswith("b'") or text.startswith('b"'):  # imaplib shows the server's bytes
        text = text[2:-1]
    return text.splitlines()[0]


def _close(client: imaplib.IMAP4) -> None:
    # LOGOUT, never CLOSE: CLOSE would expunge messages someone else marked deleted.
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError, EOFError):
        with contextlib.suppress(OSError):
            client.shutdown()
