"""Where messages go: an SMTP server (`DIGEST_SMTP_URL`) or, with none configured, `outbox/`.

The only module that opens sockets. Every failure is sorted into one of three kinds that decide what
delivery does next: `Temporary` (4xx, a dropped connection: retry later), `Permanent` (5xx for
this recipient: record as failed) and `Fatal` (the whole run cannot go on, e.g. bad credentials).
"""

from __future__ import annotations

import binascii
import hashlib
import io
import re
import smtplib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from digest import files as staging
from digest.errors import DeliveryError
from digest.mail.message import Undotted
from digest.send.oauth import AccessToken, TokenCommand, Xoauth2


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
    """Opens connections; describes itself without secrets.

    `rehearsal`: whether what it carries reaches nobody (the outbox): a send through it is never
    recorded as delivered.
    """

    rehearsal: bool

    def open(self) -> Connection:
        """Return a new connection."""

    def describe(self) -> str:
        """Return where messages go, for people (never with a password)."""


# -- SMTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """A parsed `DIGEST_SMTP_URL`, with `DIGEST_SMTP_PASSWORD` or `DIGEST_SMTP_TOKEN_COMMAND`."""

    implicit_tls: bool
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    require_starttls: bool
    timeout: float = 60.0
    # False for a server that offers PIPELINING but mishandles it (`?pipelining=off`).
    pipelining: bool = True
    # "password" (LOGIN or PLAIN, as the server offers) or "xoauth2" (`?auth=xoauth2`: OAuth 2.0,
    # the access token printed by `token_command`).
    auth: str = "password"
    token_command: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}@" if self.username else ""
        tls = "" if self.implicit_tls else " (STARTTLS required)" if self.require_starttls else ""
        pipelining = "" if self.pipelining else " (no pipelining)"
        oauth = " (XOAUTH2)" if self.auth == XOAUTH2 else ""
        return f"{scheme}://{user}{self.host}:{self.port}{tls}{pipelining}{oauth}"


XOAUTH2 = "xoauth2"
_OPTIONS = "the options are ?starttls=required, ?pipelining=off and ?auth=xoauth2 (joined with &)"


def parse_url(
    url: str, password: str | None = None, token_command: str | None = None
) -> SmtpSettings:
    """Read `smtp://[user[:password]@]host[:port][?starttls=required&pipelining=off]`, `smtps://`.

    `?auth=xoauth2` signs in with OAuth 2.0: the user name is the mailbox's address
    (percent-encoded), the token comes from `token_command` (DIGEST_SMTP_TOKEN_COMMAND), and
    STARTTLS is required. `password` is DIGEST_SMTP_PASSWORD.
    """
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
    unknown = set(query) - {"starttls", "pipelining", "auth"}
    starttls = query.get("starttls", ["auto"])[-1]
    pipelining = query.get("pipelining", ["auto"])[-1]
    if unknown or starttls not in ("auto", "required") or pipelining not in ("auto", "off"):
        raise DeliveryError(f"DIGEST_SMTP_URL {shown!r}: {_OPTIONS}")
    auth = _auth(shown, query.get("auth", [None])[-1], token_command)
    username = unquote(user) if user else None
    if auth == XOAUTH2:
        _check_xoauth2(shown, username, in_url=bool(colon), apart=password is not None)
    implicit = parts.scheme == "smtps"
    return SmtpSettings(
        implicit_tls=implicit,
        host=parts.hostname,
        port=port or (465 if implicit else 25),
        username=username,
        password=password if password is not None else _url_password(secret),
        # An access token goes only over TLS, whether the URL says so or not.
        require_starttls=starttls == "required" or auth == XOAUTH2,
        pipelining=pipelining == "auto",
        auth=auth,
        token_command=token_command,
    )


def _auth(shown: str, value: str | None, token_command: str | None) -> str:
    """Return the sign-in method `?auth=` asks for, checked against DIGEST_SMTP_TOKEN_COMMAND."""
    if value is None:
        value = "password"  # LOGIN or PLAIN, with a user name; nothing without one
    elif value.lower() == XOAUTH2:
        value = XOAUTH2
    else:
        raise DeliveryError(
            f"DIGEST_SMTP_URL {shown!r}: auth={value!r} is not a sign-in method digest knows: "
            "write ?auth=xoauth2 for OAuth 2.0 (Microsoft 365, Google Workspace), or leave auth "
            "out to log in with a password"
        )
    if value == XOAUTH2 and not token_command:
        raise DeliveryError(
            f"DIGEST_SMTP_URL {shown!r} asks for ?auth=xoauth2, but DIGEST_SMTP_TOKEN_COMMAND "
            "is not set: set it to a command that prints an access token for the mailbox (see "
            "the IT guide, OAuth 2.0)"
        )
    if value != XOAUTH2 and token_command:
        raise DeliveryError(
            f"DIGEST_SMTP_TOKEN_COMMAND is set, but DIGEST_SMTP_URL {shown!r} does not ask for "
            "?auth=xoauth2, so its token would never be used (a password login would be tried "
            "instead): add ?auth=xoauth2 to the URL, or unset DIGEST_SMTP_TOKEN_COMMAND"
        )
    return value


def _check_xoauth2(shown: str, username: str | None, *, in_url: bool, apart: bool) -> None:
    if not username:
        raise DeliveryError(
            f"DIGEST_SMTP_URL {shown!r}: ?auth=xoauth2 signs in as a mailbox, so the URL needs "
            "its address as the user name, with the @ percent-encoded: "
            "smtp://provost%40example.edu@smtp.office365.com:587?auth=xoauth2"
        )
    if not (username.isascii() and username.isprintable()):
        raise DeliveryError(
            f"DIGEST_SMTP_URL {shown!r}: the user name for ?auth=xoauth2 must be the mailbox's "
            "address in ASCII, with no control characters"
        )
    # A password beside a token is a left-over that would never be used: said, not ignored.
    if in_url:
        raise DeliveryError(
            f"DIGEST_SMTP_URL {shown!r} asks for ?auth=xoauth2, which signs in with the access "
            "token from DIGEST_SMTP_TOKEN_COMMAND, not a password: remove the password from the URL"
        )
    if apart:
        raise DeliveryError(
            f"DIGEST_SMTP_PASSWORD is set, but DIGEST_SMTP_URL {shown!r} asks for ?auth=xoauth2, "
            "which signs in with the access token from DIGEST_SMTP_TOKEN_COMMAND, not a "
            "password: unset DIGEST_SMTP_PASSWORD"
        )


def _url_password(raw: str | None) -> str | None:
    return unquote(raw) if raw else None


class SmtpTransport:
    """Sends over SMTP, verifying the server's certificate whenever TLS is used.

    With `?auth=xoauth2`, its connections share one `TokenCommand`, run in `workdir` (the
    catalogue's folder).
    """

    rehearsal = False

    def __init__(self, settings: SmtpSettings, *, workdir: Path | None = None) -> None:
        self.settings = settings
        self._context: ssl.SSLContext | None = None
        self.tokens = _tokens(settings, workdir)

    def describe(self) -> str:
        return self.settings.describe()

    def open(self) -> Connection:
        return SmtpConnection(self.settings, self.context, self.tokens)

    def context(self) -> ssl.SSLContext:
        """Return the TLS context, made on first use and shared by every connection.

        smtplib verifies nothing unless given a context: this one checks chain and host name.
        Loading the system's certificates takes 15 ms, which a server without TLS never needs.
        """
        if self._context is None:
            self._context = ssl.create_default_context()
        return self._context


def _tokens(settings: SmtpSettings, workdir: Path | None = None) -> TokenCommand | None:
    if settings.auth != XOAUTH2:
        return None
    if not settings.token_command:
        raise DeliveryError("?auth=xoauth2 needs DIGEST_SMTP_TOKEN_COMMAND")
    return TokenCommand(settings.token_command, workdir=workdir)


class SmtpConnection:
    """One SMTP session: smtplib opens it (TLS, EHLO, login); its `pipe` carries the messages."""

    def __init__(
        self,
        settings: SmtpSettings,
        context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
        tokens: TokenCommand | None = None,
    ) -> None:
        where = settings.describe()
        client: smtplib.SMTP | None = None
        try:
            try:
                if settings.implicit_tls:
                    client = smtplib.SMTP_SSL(
                        settings.host, settings.port, timeout=settings.timeout, context=context()
                    )
                else:
                    client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
                    client.ehlo()
                    if client.has_extn("starttls"):
                        client.starttls(context=context())
                        client.ehlo()
                    elif settings.require_starttls:
                        why = (
                            "an access token goes only over TLS"
                            if settings.auth == XOAUTH2
                            else "the URL requires it"
                        )
                        raise Fatal(f"{where} does not offer STARTTLS, and {why}")
                if settings.auth == XOAUTH2:
                    _sign_in(client, settings, tokens or _tokens(settings), where)
                elif settings.username:
                    _log_in(client, settings, where)
                client.ehlo_or_helo_if_needed()
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
        assert client.sock is not None  # noqa: S101 -- open once connected
        self._client = client
        self.pipe = Pipe(
            client.sock,
            pipelining=settings.pipelining and client.has_extn("pipelining"),
            size=client.has_extn("size"),
            timeout=settings.timeout,
        )

    def send(self, message: EmailMessage | bytes, sender: str, recipient: str) -> None:
        job = Job(message, sender, recipient)
        pipe = self.pipe
        pipe.begin(job)
        pipe.flush()
        pipe.settle(job)
        if job.stage == "ready":
            pipe.carry(job)
            pipe.flush()
            pipe.settle(job)
        if job.error is not None:
            raise job.error

    def close(self) -> None:
        self.pipe.close()
        self._client.close()


def _log_in(client: smtplib.SMTP, settings: SmtpSettings, where: str) -> None:
    """Log in with the user name and password, by whichever of LOGIN or PLAIN the server offers."""
    try:
        client.login(settings.username or "", settings.password or "")
    except UnicodeEncodeError:
        # Not chained: the error's text quotes a character of the password.
        raise Fatal(
            f"{where}: cannot log in: smtplib sends the user name and password "
            "as ASCII, and one of them is not"
        ) from None


def _sign_in(
    client: smtplib.SMTP, settings: SmtpSettings, tokens: TokenCommand | None, where: str
) -> None:
    """Sign in with AUTH XOAUTH2: the token kept, else a fresh one, else stop the run.

    A refused token is taken for an expired one: the command runs again (once, for every
    connection that met the refusal), and a refusal of the fresh token stops the run.
    """
    assert tokens is not None  # noqa: S101 -- made by _tokens for every xoauth2 transport
    user = settings.username or ""
    token = tokens.current()
    if _xoauth2(client, user, token, where) is None:
        return
    fresh = tokens.renew(token)
    refused = _xoauth2(client, user, fresh, where)
    if refused is None:
        return
    raise Fatal(
        f"{where}: the server refused a fresh access token from DIGEST_SMTP_TOKEN_COMMAND too "
        f"({refused}): check that the token is for {user}, with the SMTP.Send permission "
        "(Microsoft 365) or the https://mail.google.com/ scope (Google), and that SMTP AUTH is "
        "enabled for the mailbox (see the IT guide, OAuth 2.0)"
    )


def _xoauth2(client: smtplib.SMTP, user: str, token: AccessToken, where: str) -> str | None:
    """Try AUTH XOAUTH2 with `token`; return None once signed in, or the server's refusal."""
    answer = Xoauth2(user, token)
    try:
        client.auth("XOAUTH2", answer)
    except smtplib.SMTPAuthenticationError as exc:
        code, text = exc.smtp_code, _text(exc.smtp_error).replace(token.secret, "***")
        reply = " ".join(f"{code} {text}".split())
        if answer.error:
            reply += f"; {answer.error}"
        if 400 <= code < 500:
            raise Temporary(None, f"{where}: cannot sign in now: {reply}") from exc
        if code in (502, 504):
            raise Fatal(f"{where}: the server does not offer AUTH XOAUTH2 ({reply})") from exc
        if code == 538:  # RFC 4954: encryption required
            raise Fatal(f"{where}: the server wants encryption to sign in ({reply})") from exc
        return reply
    except binascii.Error as exc:
        raise Fatal(f"{where}: the server's AUTH XOAUTH2 challenge is not base64") from exc
    return None


@dataclass(frozen=True, slots=True)
class Step:
    """One step of opening an SMTP session, as `probe` saw it.

    `step` is "connect", "tls" or "login"; `passed` is None for a step that was not taken (no
    TLS offered, no user name to log in with, or an earlier step failed).
    """

    step: str
    passed: bool | None
    detail: str


def probe(
    settings: SmtpSettings,
    context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
    workdir: Path | None = None,
) -> tuple[Step, ...]:
    """Open a session as `SmtpConnection` does, step by step, send no mail, and say how each went.

    The same smtplib steps: connect (implicit TLS for smtps://), EHLO, STARTTLS when offered
    (its certificate checked by `context`), login when the URL names a user, or AUTH XOAUTH2
    with a token from DIGEST_SMTP_TOKEN_COMMAND (run in `workdir`); then QUIT.
    """
    steps: list[Step] = []
    client = _probe_connect(settings, context, steps)
    if client is None:
        return tuple(steps)
    try:
        steps.append(_probe_login(settings, client, workdir))
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    return tuple(steps)


def _probe_connect(
    settings: SmtpSettings, context: Callable[[], ssl.SSLContext], steps: list[Step]
) -> smtplib.SMTP | None:
    """Connect and start TLS, noting each step; return the client, or None if it went no further."""
    where = f"{settings.host}:{settings.port}"
    connected = Step("connect", True, f"connected to {where}")
    client: smtplib.SMTP | None = None
    try:
        if settings.implicit_tls:
            client = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout, context=context()
            )
            steps += [connected, Step("tls", True, f"implicit TLS ({_tls_version(client)})")]
            return client
        client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        steps.append(connected)
        client.ehlo()
        if client.has_extn("starttls"):
            client.starttls(context=context())
            client.ehlo()
            steps.append(Step("tls", True, f"STARTTLS ({_tls_version(client)})"))
            return client
        if not settings.require_starttls and settings.auth != XOAUTH2:
            steps.append(Step("tls", None, "the server does not offer STARTTLS"))
            return client
        why = "an access token goes only over TLS" if settings.auth == XOAUTH2 else "the URL"
        failed = Step("tls", False, f"the server does not offer STARTTLS, and {why} requires it")
    except ssl.SSLCertVerificationError as exc:
        failed = Step("tls", False, f"the certificate is not valid: {exc.verify_message}")
    except ssl.SSLError as exc:
        failed = Step("tls", False, f"TLS failed: {exc.reason or exc}")
    except (OSError, smtplib.SMTPException) as exc:
        failed = Step("connect", False, f"cannot connect to {where}: {exc}")
    if client is not None:
        client.close()
    if failed.step == "tls" and connected not in steps:  # implicit TLS: the TCP part worked
        steps.append(connected)
    steps.append(failed)
    return None


def _probe_login(settings: SmtpSettings, client: smtplib.SMTP, workdir: Path | None) -> Step:
    if settings.auth == XOAUTH2:
        where = f"{settings.host}:{settings.port}"
        try:
            _sign_in(client, settings, _tokens(settings, workdir), where)
        except (DeliveryError, SendError) as exc:  # a refused token, a failing token command
            return Step("login", False, str(exc))
        except (OSError, smtplib.SMTPException) as exc:
            return Step("login", False, f"signing in as {settings.username} failed: {exc}")
        return Step("login", True, f"signed in as {settings.username} with AUTH XOAUTH2")
    if not settings.username:
        return Step("login", None, "no user name in the URL: the relay must accept this host")
    try:
        client.login(settings.username, settings.password or "")
    except UnicodeEncodeError:
        return Step("login", False, "smtplib sends the user name and password as ASCII")
    except smtplib.SMTPAuthenticationError as exc:
        return Step("login", False, f"login as {settings.username} refused ({exc.smtp_code})")
    except smtplib.SMTPNotSupportedError:
        return Step("login", False, "the server offers no login (AUTH) on this connection")
    except (OSError, smtplib.SMTPException) as exc:
        return Step("login", False, f"login as {settings.username} failed: {exc}")
    return Step("login", True, f"logged in as {settings.username}")


def _tls_version(client: smtplib.SMTP) -> str:
    sock = client.sock
    version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    return f"{version}, certificate verified" if version else "certificate verified"


def wire_bytes(message: EmailMessage | bytes) -> bytes:
    """Return a message as SMTP carries it: what smtplib's send_message writes for it."""
    if isinstance(message, bytes):
        return message
    with io.BytesIO() as out:
        BytesGenerator(out).flatten(message, linesep="\r\n")
        return out.getvalue()


class Job:
    """One message for one recipient, on its way through a Pipe.

    `stage` goes from "envelope" (MAIL, RCPT and DATA written, their replies awaited) to "ready"
    (the server waits for the message) to "content" (the message written, its reply awaited) to
    "done", with `error` set when it was not accepted. `tag` is the caller's.
    """

    __slots__ = ("_mail", "_rcpt", "error", "message", "recipient", "sender", "stage", "tag")

    def __init__(
        self, message: EmailMessage | bytes, sender: str, recipient: str, tag: object = None
    ) -> None:
        self.message = message
        self.sender = sender
        self.recipient = recipient
        self.tag = tag
        self.stage = "envelope"
        self.error: SendError | Fatal | None = None
        self._mail: tuple[int, str] = (0, "")
        self._rcpt: tuple[int, str] = (0, "")

    def _fail(self, error: SendError | Fatal) -> None:
        self.stage = "done"
        self.error = error


class Pipe:
    """An open SMTP session that carries messages without waiting on every reply.

    When the server offers PIPELINING (RFC 2920) the next message's MAIL, RCPT and DATA go out in
    the same write as the end of the current one: one round trip a message. Otherwise commands go
    one at a time. Replies are matched to commands in order, and every reply a command has coming
    is read, so that after any refusal the dialogue stays in step. Reads wait on the socket's
    timeout; `receive` is for a caller that knows data is there (select).
    """

    def __init__(
        self, sock: socket.socket, *, pipelining: bool, size: bool, timeout: float = 60.0
    ) -> None:
        self._sock = sock
        self._timeout = timeout
        self._heard = time.monotonic()  # when the server last said something, or was asked
        self.pipelining = pipelining
        self._size = size
        self._out: list[tuple[bytes, str, Job | None]] = []  # to write: data, reply kind, job
        self._waiting: deque[tuple[str, Job | None]] = deque()  # replies due, in order
        self._in = b""
        self._lines: list[bytes] = []  # of a reply that goes on
        self._reset = False  # RSET before the next envelope
        self.jobs: list[Job] = []  # not done
        self.alive = True

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def free(self) -> bool:
        """Whether a new message may begin: open, and none waits for its DATA reply."""
        return self.alive and all(job.stage == "content" for job in self.jobs)

    @property
    def expecting(self) -> bool:
        """Whether a reply is due from the server."""
        return bool(self._waiting)

    @property
    def buffered(self) -> bool:
        """Whether bytes already received wait to be read (TLS keeps decrypted records)."""
        pending = getattr(self._sock, "pending", None)
        return bool(pending and pending())

    def begin(self, job: Job) -> None:
        """Queue the envelope of `job`."""
        if self._reset:
            self._reset = False
            self._out.append((b"RSET\r\n", "rset", None))
        job.message = data = wire_bytes(job.message)
        size = f" SIZE={len(data)}" if self._size else ""
        self._out.append((f"MAIL FROM:{_path(job.sender)}{size}\r\n".encode(), "mail", job))
        self._out.append((f"RCPT TO:{_path(job.recipient)}\r\n".encode(), "rcpt", job))
        self._out.append((b"DATA\r\n", "data", job))
        self.jobs.append(job)
        if not self.alive:
            self._lost("the connection is closed", [job])

    def carry(self, job: Job) -> None:
        """Queue the message of a `ready` job: it goes before any command queued behind it."""
        data = wire_bytes(job.message)
        # Dot-stuffing (RFC 5321 4.5.2), then the end of the data. A Stencil's message says
        # whether a line starts with a dot (Undotted: none does); any other is looked through.
        stuff = not isinstance(data, Undotted) and (
            data[:1] == b"." or _DOT_AFTER_NEWLINE.search(data)  # 3x quicker than `in`
        )
        body = _LEADING_DOT.sub(b"..", data) if stuff else data
        body += b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"
        self._out.insert(0, (body, "dot", job))
        job.stage = "content"

    def flush(self) -> None:
        """Write what may go now; nothing while a server waits for a message not yet queued."""
        if not self.alive or not self._out or any(job.stage == "ready" for job in self.jobs):
            return
        if self.pipelining:
            batch, self._out = self._out, []
        elif self._waiting:
            return
        else:
            batch, self._out = self._out[:1], self._out[1:]
        if not self._waiting:
            self._heard = time.monotonic()
        self._waiting.extend((kind, job) for _, kind, job in batch)
        try:
            self._sock.sendall(b"".join(data for data, _, _ in batch))
        except OSError as exc:
            self._lost(f"connection lost: {exc}")

    def expire(self, now: float) -> bool:
        """Give up on a server silent for longer than the timeout; return whether it was."""
        if self._waiting and now - self._heard > self._timeout:
            self._lost(f"connection lost: no reply in {self._timeout:g} seconds")
            return True
        return False

    def receive(self) -> None:
        """Read what the server sent and act on each whole reply."""
        try:
            data = self._sock.recv(65536)
        except OSError as exc:  # a timeout too
            self._lost(f"connection lost: {exc}")
            return
        if not data:
            self._lost("connection lost: the server closed it")
            return
        self._heard = time.monotonic()
        self._in += data
        *lines, self._in = self._in.split(b"\n")
        if len(self._in) > _LONGEST_LINE:
            self._lost(f"the server sent a line longer than {_LONGEST_LINE} bytes")
            return
        for line in lines:
            self._lines.append(line.rstrip(b"\r"))
            if line[3:4] == b"-":
                continue
            reply, self._lines = self._lines, []
            try:
                code = int(reply[-1][:3])
            except ValueError:
                code = -1
            text = b"\n".join(r[4:].strip() for r in reply).decode("utf-8", "replace")
            self._answer(code, text)
            if not self.alive:
                return
        self.flush()

    def settle(self, job: Job) -> None:
        """Read replies until `job` is ready for its message or done."""
        while job.stage in ("envelope", "content") and self.alive:
            self.flush()
            self.receive()

    def _answer(self, code: int, text: str) -> None:
        if not self._waiting:
            self._lost(f"the server said {code} {text} unasked")
            return
        kind, job = self._waiting.popleft()
        if job is None or code == 421:
            if code == 421:
                closed = f"the server closed the connection: 421 {text}"
                if job is not None:
                    job._fail(Temporary(None, closed))
                    self.jobs.remove(job)
                self._lost(closed)
            return
        if kind == "mail":
            job._mail = (code, text)
        elif kind == "rcpt":
            job._rcpt = (code, text)
        elif kind == "data":
            self._envelope(job, code, text)
        else:  # "dot"
            self._finish(job, None if code == 250 else _classify(code, text))

    def _envelope(self, job: Job, code: int, text: str) -> None:
        (mail, mail_text), (rcpt, rcpt_text) = job._mail, job._rcpt
        if code == 354 and (mail != 250 or rcpt not in (250, 251)):
            # A server must refuse DATA without a recipient; one that does not gets an empty
            # message it has no one to deliver to, and the dialogue goes on in step.
            self._out.insert(0, (b".\r\n", "discard", None))
        if mail != 250:
            if 400 <= mail < 500:
                self._finish(job, _classify(mail, mail_text))
            else:
                error = f"the server refuses the sender {job.sender}: {mail} {mail_text}"
                self._finish(job, Fatal(error))
        elif rcpt not in (250, 251):
            self._finish(job, _classify(rcpt, rcpt_text))
        elif code != 354:
            self._finish(job, _classify(code, text))
        else:
            job.stage = "ready"

    def _finish(self, job: Job, error: SendError | Fatal | None) -> None:
        job.stage = "done"
        job.error = error
        self.jobs.remove(job)
        if error is not None:
            self._reset = True

    def _lost(self, reason: str, jobs: list[Job] | None = None) -> None:
        """The session is over: every job on it that is not done is a lost connection."""
        self.alive = False
        for job in list(self.jobs if jobs is None else jobs):
            # Whether the server kept a message whose data it got but never answered is unknown.
            job._fail(Temporary(None, reason, maybe_sent=job.stage == "content"))
            self.jobs.remove(job)
        self._out.clear()
        self._waiting.clear()
        self._sock.close()

    def close(self) -> None:
        """End the session: QUIT when it is between messages; just hang up in mid-message."""
        if self.alive and not self.jobs:
            try:
                self._sock.sendall(b"QUIT\r\n")
                self._sock.recv(1024)
            except OSError:
                pass
        self.alive = False
        self._sock.close()


# RFC 5321 allows 512 bytes a reply line; smtplib accepts 8192, and so does a Pipe.
_LONGEST_LINE = 8192
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


def choose(
    url: str | None,
    password: str | None,
    month: str,
    *,
    test: bool = False,
    outbox: Path = Path("outbox"),
    token_command: str | None = None,
    workdir: Path | None = None,
) -> Transport:
    """Return the SMTP transport `url` names (DIGEST_SMTP_URL), or `outbox` when it is empty.

    `token_command` is DIGEST_SMTP_TOKEN_COMMAND, run in `workdir` (the catalogue's folder).
    """
    if not (url or "").strip():
        if token_command:
            raise DeliveryError(
                "DIGEST_SMTP_TOKEN_COMMAND is set, but DIGEST_SMTP_URL is not, so messages would "
                "only be written to outbox/: set DIGEST_SMTP_URL (smtp://provost%40example.edu@"
                "smtp.office365.com:587?auth=xoauth2, say), or unset DIGEST_SMTP_TOKEN_COMMAND"
            )
        return OutboxTransport(outbox, month, test=test)
    return SmtpTransport(parse_url(str(url), password, token_command), workdir=workdir)


# -- outbox --------------------------------------------------------------------------------------


# The characters an address keeps in its file name; the rest become "_".
_UNSAFE = re.compile(r"[^a-z0-9@._+-]")
# How much of the address a name shows: a 64-character local part on a long domain would not fit.
_SHOWN = 100


class OutboxTransport:
    """Writes each message as an .eml file, for a look before any real sending.

    Each recipient has one file a month, `digest-YYYY-MM-ADDRESS.eml` (a [TEST] copy
    `test-digest-YYYY-MM-ADDRESS.eml`, so it never replaces a real message): sending again
    replaces it. ADDRESS is the address in lower case, as the subscriber list compares addresses;
    one with characters a file name should not hold (or longer than 100) shows them as `_`, cut
    to 100, and ends in `~` and 16 hex digits of its hash, so that no two addresses share a file.

    A rehearsal: the files are for a person to open, and the ledger records nobody as sent.
    """

    rehearsal = True

    def __init__(self, directory: Path, month: str, *, test: bool = False) -> None:
        self.directory = directory
        self.month = month
        self.test = test

    def describe(self) -> str:
        return f"{self.directory}/"

    def filename(self, recipient: str) -> str:
        """Return the name of `recipient`'s file: readable, safe, theirs alone, always the same."""
        address = recipient.lower()
        shown = _UNSAFE.sub("_", address)[:_SHOWN]
        if shown != address:
            # "~" is never in a name left as it was, so no two addresses can meet here.
            hashed = hashlib.sha256(address.encode("utf-8", "surrogatepass")).hexdigest()
            shown = f"{shown}~{hashed[:16]}"
        return f"{'test-' if self.test else ''}digest-{self.month}-{shown}.eml"

    def open(self) -> Connection:
        return _OutboxConnection(self)


class _OutboxConnection:
    def __init__(self, outbox: OutboxTransport) -> None:
        self.outbox = outbox

    def send(self, message: EmailMessage | bytes, sender: str, recipient: str) -> None:
        target = self.outbox.directory / self.outbox.filename(recipient)
        try:
            self.outbox.directory.mkdir(parents=True, exist_ok=True)
            staging.replace(target, message if isinstance(message, bytes) else bytes(message))
        except OSError as exc:
            raise Fatal(f"{target}: cannot write ({exc.strerror or exc})") from exc

    def close(self) -> None:
        pass
