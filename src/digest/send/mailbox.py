"""Reading a mailbox over IMAP: `imaps://user@host[:port]/FOLDER`, or `imap://` with STARTTLS.

`digest doctor --read` finds its test copy here; the bounce reader reads DSNs the same way. The
folder is opened read-only (EXAMINE): reading marks nothing as seen and deletes nothing.
Certificates are verified whenever TLS is used, as for SMTP.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
    ) -> None:
        self.settings = settings
        where = settings.describe()
        client: imaplib.IMAP4 | None = None
        try:
            try:
                client = self._connect(context)
                client.login(settings.username, settings.password or "")
                status, reply = client.select(_quoted(settings.folder), readonly=True)
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
        try:
            status, reply = self._client.uid("FETCH", str(uid), "(BODY.PEEK[])")
        except (imaplib.IMAP4.error, OSError, EOFError) as exc:
            raise MailboxError(f"{self.settings.describe()}: fetch failed: {exc}") from exc
        for part in reply if status == "OK" else ():
            if isinstance(part, tuple) and len(part) == 2 and isinstance(part[1], bytes):
                return part[1]
        raise MailboxError(f"{self.settings.describe()}: message {uid} is gone: {_said(reply)}")

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """Yield every message of the folder with its UID, oldest first."""
        for uid in self.uids():
            yield uid, self.fetch(uid)

    def close(self) -> None:
        _close(self._client)


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
