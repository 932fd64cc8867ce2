"""Where messages go: an SMTP server (`DIGEST_SMTP_URL`) or, with none configured, `outbox/`.

The only module that opens sockets. Every failure is sorted into one of three kinds that decide what
delivery does next: `Temporary` (4xx, a dropped connection: retry later), `Permanent` (5xx for
this recipient: record as failed) and `Fatal` (the whole run cannot go on, e.g. bad credentials).
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from digest.errors import DeliveryError


class SendError(Exception):
    """A message was not accepted."""

    def __init__(self, code: int | None, reply: str) -> None:
        super().__init__(f"{code} {reply}" if code else reply)
        self.code = code
        self.reply = reply


class Temporary(SendError):
    """Try again later: a 4xx reply or a lost connection. `maybe_sent`: DATA may have arrived."""

    def __init__(self, code: int | None, reply: str, *, maybe_sent: bool = False) -> None:
        super().__init__(code, reply)
        self.maybe_sent = maybe_sent


class Permanent(SendError):
    """The server refused this recipient for good (5xx)."""


class Fatal(DeliveryError):
    """The run cannot go on: the server refuses the sender, the login or the TLS handshake."""


class Connection(Protocol):
    """An open channel to the mail system."""

    def send(self, message: EmailMessage | bytes, sender: str, recipient: str) -> None:
        """Hand over one message for one recipient; raise a SendError if it is not accepted.

        `message` is an EmailMessage, or its bytes as SMTP carries them: ASCII, CRLF line ends.
        """

    def close(self) -> None:
        """Close the channel."""


class Transport(Protocol):
    """Opens connections; describes itself without secrets."""

    def open(self) -> Connection:
        """Return a new connection."""

    def describe(self) -> str:
        """Return where messages go, for people (never with a password)."""


# -- SMTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """A parsed `DIGEST_SMTP_URL`."""

    implicit_tls: bool
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    require_starttls: bool
    timeout: float = 60.0

    def describe(self) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}@" if self.username else ""
        tls = "" if self.implicit_tls else " (STARTTLS required)" if self.require_starttls else ""
        return f"{scheme}://{user}{self.host}:{self.port}{tls}"


def parse_url(url: str, password: str | None = None) -> SmtpSettings:
    """Read `smtp://[user[:password]@]host[:port][?starttls=required]` or `smtps://...`."""
    text = url.strip()
    prefix, slashes, rest = text.partition("://")
    if not slashes:
        prefix, rest = "", text
    # The user part is split off first, at the last @, and never reaches a message or the URL
    # parser (whose errors quote what they choke on): a password may hold any character.
    userinfo, at, location = rest.rpartition("@")
    user, colon, secret = userinfo.partition(":")
    shown = f"{prefix}{slashes}{user}{':***' if colon else ''}{at}{location}"
    try:
        parts = urlsplit(f"{prefix}{slashes}{location}")
        port = parts.port
    except ValueError as exc:
        raise DeliveryError(f"DIGEST_SMTP_URL {shown!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname or re.search(r"[/?#]", user):
        raise DeliveryError(
            f"DIGEST_SMTP_URL {shown!r} must look like smtp://user@mail.example.edu:587 "
            "or smtps://user@mail.example.edu:465"
        )
    if port == 0:
        raise DeliveryError(f"DIGEST_SMTP_URL {shown!r}: port 0 is not a port (use 1-65535)")
    query = parse_qs(parts.query, keep_blank_values=True)  # `?starttls` alone is a mistake too
    unknown = set(query) - {"starttls"}
    starttls = query.get("starttls", ["auto"])[-1]
    if unknown or starttls not in ("auto", "required"):
        raise DeliveryError(f"DIGEST_SMTP_URL {shown!r}: the only option is ?starttls=required")
    implicit = parts.scheme == "smtps"
    return SmtpSettings(
        implicit_tls=implicit,
        host=parts.hostname,
        port=port or (465 if implicit else 25),
        username=unquote(user) if user else None,
        password=password if password is not None else _url_password(secret),
        require_starttls=starttls == "required",
    )


def _url_password(raw: str | None) -> str | None:
    return unquote(raw) if raw else None


class SmtpTransport:
    """Sends over SMTP, verifying the server's certificate whenever TLS is used."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def describe(self) -> str:
        return self.settings.describe()

    def open(self) -> Connection:
        return _SmtpConnection(self.settings)


class _SmtpConnection:
    def __init__(self, settings: SmtpSettings) -> None:
        where = settings.describe()
        # smtplib verifies nothing unless given a context: this one checks chain and host name.
        context = ssl.create_default_context()
        client: smtplib.SMTP | None = None
        try:
            try:
                if settings.implicit_tls:
                    client = smtplib.SMTP_SSL(
                        settings.host, settings.port, timeout=settings.timeout, context=context
                    )
                else:
                    client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
                    client.ehlo()
                    if client.has_extn("starttls"):
                        client.starttls(context=context)
                        client.ehlo()
                    elif settings.require_starttls:
                        raise Fatal(f"{where} does not offer STARTTLS, and the URL requires it")
                if settings.username:
                    try:
                        client.login(settings.username, settings.password or "")
                    except UnicodeEncodeError:
                        # Not chained: the error's text quotes a character of the password.
                        raise Fatal(
                            f"{where}: cannot log in: smtplib sends the user name and password "
                            "as ASCII, and one of them is not"
                        ) from None
            except BaseException:
                if client is not None:
                    client.close()  # not left open, logged in or not, until garbage collection
                raise
        except ssl.SSLError as exc:
            raise Fatal(f"{where}: TLS failed: {exc.reason or exc}") from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise Fatal(f"{where}: login refused ({exc.smtp_code})") from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise Fatal(f"{where}: the server does not support login: {exc}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise Temporary(None, f"cannot connect to {where}: {exc}") from exc
        assert client is not None  # noqa: S101 -- set above, or an exception was raised
        self._client = client
        try:
            client.ehlo_or_helo_if_needed()
        except (OSError, smtplib.SMTPException) as exc:
            client.close()
            raise Temporary(None, f"cannot connect to {where}: {exc}") from exc
        self._pipelining = client.has_extn("pipelining")

    def send(self, message: EmailMessage | bytes, sender: str, recipient: str) -> None:
        try:
            if isinstance(message, EmailMessage):
                refused = self._client.send_message(message, from_addr=sender, to_addrs=[recipient])
            elif self._pipelining:
                self._pipelined(message, sender, recipient)
                return
            else:
                refused = self._client.sendmail(sender, [recipient], message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(recipient, (None, b"refused"))
            raise _classify(code, reply) from exc
        except smtplib.SMTPSenderRefused as exc:
            if 400 <= exc.smtp_code < 500:
                raise _classify(exc.smtp_code, exc.smtp_error) from exc
            raise Fatal(
                f"the server refuses the sender {exc.sender}: {exc.smtp_code} "
                f"{_text(exc.smtp_error)}"
            ) from exc
        except smtplib.SMTPDataError as exc:
            raise _classify(exc.smtp_code, exc.smtp_error) from exc
        except smtplib.SMTPServerDisconnected as exc:
            # Whether the server kept a message whose DATA it got but never answered is unknown.
            raise Temporary(None, f"connection lost: {exc}", maybe_sent=True) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise Temporary(None, f"connection failed: {exc}", maybe_sent=True) from exc
        # With one recipient per message a refusal raises; this is the partial-refusal channel.
        if recipient in refused:
            code, reply = refused[recipient]
            raise _classify(code, reply)

    def _pipelined(self, data: bytes, sender: str, recipient: str) -> None:
        """Send MAIL, RCPT and DATA in one go, then the message (RFC 2920): two round trips.

        Raises what smtplib's sendmail raises for the same replies, after reading every reply the
        commands sent have coming, so that the dialogue stays in step.
        """
        client = self._client
        size = f" SIZE={len(data)}" if client.has_extn("size") else ""
        client.send(
            f"MAIL FROM:{_path(sender)}{size}\r\nRCPT TO:{_path(recipient)}\r\nDATA\r\n".encode()
        )
        mail, rcpt, ready = client.getreply(), client.getreply(), client.getreply()
        accepted = mail[0] == 250 and rcpt[0] in (250, 251)
        if ready[0] == 354 and not accepted:
            # A server must refuse DATA without a recipient; one that does not gets an empty
            # message it has no one to deliver to, and the dialogue goes on in step.
            client.send(b".\r\n")
            client.getreply()
        if mail[0] != 250:
            self._reset()
            raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
        if rcpt[0] not in (250, 251):
            self._reset()
            raise smtplib.SMTPRecipientsRefused({recipient: rcpt})
        if ready[0] != 354:
            self._reset()
            raise smtplib.SMTPDataError(*ready)
        # Dot-stuffing (RFC 5321 4.5.2), then the end of the data.
        stuff = data[:1] == b"." or _DOT_AFTER_NEWLINE.search(data)  # 3x quicker than `in`
        body = _LEADING_DOT.sub(b"..", data) if stuff else data
        client.send(body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"))
        code, reply = client.getreply()
        if code != 250:
            self._reset()
            raise smtplib.SMTPDataError(code, reply)

    def _reset(self) -> None:
        # A server that hung up is found out, and reconnected to, by the next send.
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self._client.rset()

    def close(self) -> None:
        try:
            self._client.quit()
        except (OSError, smtplib.SMTPException):
            self._client.close()


_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_DOT_AFTER_NEWLINE = re.compile(rb"\n\.")
_PLAIN_PATH = re.compile(r"[^\s<>()\[\]\\,;:@\"]+@[^\s<>()\[\]\\,;:@\"]+")


def _path(address: str) -> str:
    """Return `address` in angle brackets for MAIL FROM and RCPT TO, as smtplib writes it."""
    return f"<{address}>" if _PLAIN_PATH.fullmatch(address) else smtplib.quoteaddr(address)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _classify(code: int | None, reply: bytes | str) -> SendError:
    text = _text(reply)
    if code == 421:
        # The server is closing the channel, and smtplib has closed it: no code, so that delivery
        # opens a new connection instead of retrying on the dead one.
        return Temporary(None, f"the server closed the connection: 421 {text}")
    if code is not None and 500 <= code < 600:
        return Permanent(code, text)
    return Temporary(code, text)


def choose(url: str | None, password: str | None, month: str, *, test: bool = False) -> Transport:
    """Return the SMTP transport `url` names (DIGEST_SMTP_URL), or the outbox when it is empty.

    The CLI and the console both call this with the values the CLI read from the environment.
    """
    if not (url or "").strip():
        # A [TEST] copy gets its own file name, so it never replaces a subscriber's real message.
        return OutboxTransport(Path("outbox"), f"{month}-test" if test else month)
    return SmtpTransport(parse_url(str(url), password))


# -- outbox --------------------------------------------------------------------------------------


class OutboxTransport:
    """Writes each message as an .eml file, for a look before any real sending."""

    def __init__(self, directory: Path, month: str) -> None:
        self.directory = directory
        self.month = month

    def describe(self) -> str:
        return f"{self.directory}/"

    def open(self) -> Connection:
        return _OutboxConnection(self.directory, self.month)


class _OutboxConnection:
    def __init__(self, directory: Path, month: str) -> None:
        self.directory = directory
        self.month = month

    def send(self, message: EmailMessage | bytes, sender: str, recipient: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9@._+-]", "_", recipient)
        target = self.directory / f"digest-{self.month}-{safe}.eml"
        temporary = target.with_name(f".{target.name}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(message if isinstance(message, bytes) else bytes(message))
            os.replace(temporary, target)
        except OSError as exc:
            raise Fatal(f"{target}: cannot write ({exc.strerror or exc})") from exc

    def close(self) -> None:
        pass
