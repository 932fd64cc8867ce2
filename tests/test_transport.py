"""Where messages go: DIGEST_SMTP_URL, TLS that is verified, logins, and what each reply means."""

from __future__ import annotations

import dataclasses
import os
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Recorder, SmtpServer, free_port, greet
from digest.errors import DeliveryError
from digest.mail.message import Undotted
from digest.send import transport
from digest.send.transport import (
    Fatal,
    OutboxTransport,
    Permanent,
    SmtpTransport,
    Temporary,
    parse_url,
)
from helpers import NOW

PASSWORD = "hunter2"  # noqa: S105 -- a test password
FROM_ENV = "from-env"

ROOT = Path(__file__).resolve().parent.parent


# -- DIGEST_SMTP_URL -----------------------------------------------------------------------------


def test_plain_smtp_url_defaults_to_port_25() -> None:
    """`smtp://host` reaches the server's standard port, STARTTLS when offered, no login."""
    settings = parse_url("smtp://mail.example.edu")
    assert (settings.implicit_tls, settings.host, settings.port) == (False, "mail.example.edu", 25)
    assert (settings.username, settings.password, settings.require_starttls) == (None, None, False)
    assert settings.describe() == "smtp://mail.example.edu:25"


def test_smtps_url_defaults_to_port_465() -> None:
    """`smtps://host` speaks TLS from the first byte on the implicit-TLS port."""
    settings = parse_url("smtps://mail.example.edu")
    assert (settings.implicit_tls, settings.port) == (True, 465)
    assert settings.describe() == "smtps://mail.example.edu:465"


def test_user_and_password_are_percent_decoded() -> None:
    """An address as user name and a password with reserved characters work when encoded."""
    settings = parse_url("smtp://news%40example.edu:p%40ss%3Aw%2Fd%25@mail.example.edu:587")
    assert (settings.username, settings.password, settings.port) == (
        "news@example.edu",
        "p@ss:w/d%",
        587,
    )
    assert settings.describe() == "smtp://news@example.edu@mail.example.edu:587"


@pytest.mark.parametrize("secret", ["hun/ter2", "hun?ter2", "hun#ter2", "hun@ter2", "hun:ter2"])
def test_password_with_unencoded_reserved_characters_is_read_whole(secret: str) -> None:
    """A password typed without percent-encoding is still the password, not part of the host."""
    settings = parse_url(f"smtp://news:{secret}@mail.example.edu:587")
    assert (settings.username, settings.password) == ("news", secret)
    assert (settings.host, settings.port) == ("mail.example.edu", 587)


def test_password_variable_overrides_the_url() -> None:
    """DIGEST_SMTP_PASSWORD wins over a password in the URL, and works without one."""
    assert parse_url(f"smtp://news:{PASSWORD}@mail.example.edu", FROM_ENV).password == FROM_ENV
    assert parse_url("smtp://news@mail.example.edu", FROM_ENV).password == FROM_ENV
    assert parse_url("smtp://news@mail.example.edu").password is None


def test_starttls_required_option() -> None:
    """`?starttls=required` refuses to send in clear text, and says so when describing itself."""
    settings = parse_url("smtp://news@mail.example.edu:587?starttls=required")
    assert settings.require_starttls
    assert settings.describe() == "smtp://news@mail.example.edu:587 (STARTTLS required)"


SHAPE = "must look like smtp://user@mail.example.edu:587 or smtps://user@mail.example.edu:465"
OPTION = "the options are ?starttls=required, ?pipelining=off and ?auth=xoauth2 (joined with &)"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"http://news:{PASSWORD}@mail.example.edu", f"'http://news:***@mail.example.edu' {SHAPE}"),
        (f"news:{PASSWORD}@mail.example.edu", f"'news:***@mail.example.edu' {SHAPE}"),
        (f"smtp://news:{PASSWORD}@", f"'smtp://news:***@' {SHAPE}"),
        ("smtp://mail.example.edu/x?a=b@c", f"'smtp://mail.example.edu/x?a=b@c' {SHAPE}"),
        (
            f"smtp://news:{PASSWORD}@mail.example.edu:99999",
            "'smtp://news:***@mail.example.edu:99999' is not a valid URL: "
            "Port out of range 0-65535",
        ),
        (
            f"smtp://news:{PASSWORD}@mail.example.edu:abc",
            "'smtp://news:***@mail.example.edu:abc' is not a valid URL: Port could not be cast to "
            "integer value as 'abc'",
        ),
        (
            f"smtp://news:{PASSWORD}@mail.example.edu:0",
            "'smtp://news:***@mail.example.edu:0': port 0 is not a port (use 1-65535)",
        ),
        (
            f"smtp://news:{PASSWORD}@mail.example.edu?tls=on",
            f"'smtp://news:***@mail.example.edu?tls=on': {OPTION}",
        ),
        (
            f"smtp://news:{PASSWORD}@mail.example.edu?starttls=maybe",
            f"'smtp://news:***@mail.example.edu?starttls=maybe': {OPTION}",
        ),
        (
            f"smtp://news:{PASSWORD}@mail.example.edu?starttls",
            f"'smtp://news:***@mail.example.edu?starttls': {OPTION}",
        ),
        (
            f"smtp://news:{PASSWORD}@mail.example.edu?pipelining=no",
            f"'smtp://news:***@mail.example.edu?pipelining=no': {OPTION}",
        ),
    ],
)
def test_bad_url_is_explained_without_the_password(url: str, expected: str) -> None:
    """A mistyped DIGEST_SMTP_URL is explained, and the password never reaches the screen."""
    with pytest.raises(DeliveryError) as raised:
        parse_url(url)
    assert str(raised.value) == f"DIGEST_SMTP_URL {expected}"
    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "smtp://news:hun/ter2@mail.example.edu:99x",
        "smtp://news:hun?ter2@mail.example.edu?tls=on",
        "smtp://news:hun#ter2@mail.example.edu:port",
        "smtp://news:hun@ter2@mail.example.edu?x=1",
        "smtp:news:hunter2@mail.example.edu",
    ],
)
def test_no_piece_of_an_unencoded_password_leaks(url: str) -> None:
    """Even a password with / ? # @ in it stays hidden when the rest of the URL is wrong."""
    with pytest.raises(DeliveryError) as raised:
        parse_url(url)
    for piece in ("hun", "ter2"):
        assert piece not in str(raised.value)


def test_settings_never_show_the_password() -> None:
    """Logs and summaries name the server and user, never the password."""
    settings = parse_url(f"smtps://news:{PASSWORD}@mail.example.edu")
    transport = SmtpTransport(settings)
    assert transport.describe() == "smtps://news@mail.example.edu:465"
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in transport.describe()


# -- servers -------------------------------------------------------------------------------------


@dataclass
class TlsRecorder(Recorder):
    """A Recorder that notes whether each message came over TLS, and can refuse MAIL and DATA."""

    tls: list[bool] = field(default_factory=list)
    mail_reply: str | None = None
    data_reply: str | None = None

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: Any
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.tls.append(server.transport.get_extra_info("ssl_object") is not None)
        return await super().handle_DATA(server, session, envelope)


@dataclass
class Server:
    port: int
    recorder: TlsRecorder

    def url(self, scheme: str = "smtp", user: str = "", query: str = "") -> str:
        return f"{scheme}://{user}localhost:{self.port}{query}"


@contextmanager
def serve(**options: Any) -> Iterator[Server]:
    recorder = TlsRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield Server(port, recorder)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def trusted(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the client's default verification trust the test CA."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


@pytest.fixture
def untrusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the client trust only some other CA."""
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


def sample() -> EmailMessage:
    email = EmailMessage()
    email["From"] = "provost@example.edu"
    email["To"] = "chan@example.org"
    email["Subject"] = "What's Happening"
    email.set_content("Hello\n")
    return email


def deliver(url: str) -> None:
    """Open a connection to `url`, send one message to chan@example.org and close."""
    connection = SmtpTransport(parse_url(url)).open()
    try:
        connection.send(sample(), "provost@example.edu", "chan@example.org")
    finally:
        connection.close()


def fatal(url: str) -> str:
    with pytest.raises(Fatal) as raised:
        SmtpTransport(parse_url(url)).open()
    return str(raised.value)


# -- STARTTLS and implicit TLS -------------------------------------------------------------------


@pytest.mark.usefixtures("trusted")
def test_starttls_with_a_trusted_certificate_sends_encrypted(
    server_context: ssl.SSLContext,
) -> None:
    """With ?starttls=required and a valid certificate the digest travels encrypted."""
    with serve(tls_context=server_context) as server:
        deliver(server.url(query="?starttls=required"))
        deliver(server.url())  # STARTTLS is used whenever offered, required or not
    assert server.recorder.tls == [True, True]
    assert [m.rcpt_tos for m in server.recorder.messages] == [["chan@example.org"]] * 2


@pytest.mark.usefixtures("untrusted")
def test_starttls_with_an_untrusted_certificate_is_refused(
    server_context: ssl.SSLContext,
) -> None:
    """A server whose certificate nobody vouches for never gets the list's mail."""
    with serve(tls_context=server_context) as server:
        message = fatal(server.url())
    assert message == f"smtp://localhost:{server.port}: TLS failed: CERTIFICATE_VERIFY_FAILED"
    assert server.recorder.messages == []


@pytest.mark.usefixtures("trusted")
def test_certificate_for_another_host_is_refused(ca: trustme.CA) -> None:
    """A valid certificate for a different host name is not good enough."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mail.example.edu").configure_cert(context)
    with serve(tls_context=context) as server:
        message = fatal(server.url())
    assert message == f"smtp://localhost:{server.port}: TLS failed: CERTIFICATE_VERIFY_FAILED"
    assert server.recorder.messages == []


def test_required_starttls_on_a_server_without_it_is_fatal() -> None:
    """?starttls=required never falls back to clear text."""
    with serve() as server:
        message = fatal(server.url(query="?starttls=required"))
    assert message == (
        f"smtp://localhost:{server.port} (STARTTLS required) does not offer STARTTLS, "
        "and the URL requires it"
    )
    assert server.recorder.messages == []


def test_without_starttls_offered_plain_smtp_sends_in_clear() -> None:
    """Without the option, a server that offers no STARTTLS still gets the mail (documented)."""
    with serve() as server:
        deliver(server.url())
    assert server.recorder.tls == [False]


@pytest.mark.usefixtures("trusted")
def test_implicit_tls_with_a_trusted_certificate(server_context: ssl.SSLContext) -> None:
    """smtps:// delivers over TLS from the first byte."""
    with serve(ssl_context=server_context) as server:
        deliver(server.url("smtps"))
    assert server.recorder.tls == [True]
    assert len(server.recorder.messages) == 1


@pytest.mark.usefixtures("trusted")
@pytest.mark.parametrize("scheme", ["smtps", "smtp"])
def test_a_whole_send_over_tls_on_several_connections(
    server_context: ssl.SSLContext, scheme: str, tmp_path: Path
) -> None:
    """The send loop reads TLS records as it reads plain replies: everyone gets their copy."""
    from digest.months import Month
    from digest.publish import catalogue
    from digest.send import delivery, subscribers
    from digest.send.ledger import Ledger

    bundled = catalogue.load(ROOT / "items.yaml")
    declared = [c.slug for c in bundled.publication.categories]
    listed = subscribers.load(ROOT / "subscribers.csv", declared)
    ledger = Ledger(tmp_path / "state.sqlite3")
    options = (
        {"ssl_context": server_context} if scheme == "smtps" else {"tls_context": server_context}
    )
    with serve(**options) as server:
        plan = delivery.prepare(bundled, listed, Month(2025, 11), ledger, NOW)
        assert plan is not None
        url = server.url(scheme, query="" if scheme == "smtps" else "?starttls=required")
        summary = plan.execute(SmtpTransport(parse_url(url)), clock=lambda: NOW, connections=3)
    ledger.close()
    assert (summary.sent, summary.deferred, summary.failed) == (11, 0, 0)
    assert server.recorder.tls == [True] * 11
    assert sorted(r for m in server.recorder.messages for r in m.rcpt_tos) == sorted(
        s.email for s in listed.subscribers if s.email != "smith.john@example.org"
    )


@pytest.mark.usefixtures("untrusted")
def test_implicit_tls_with_an_untrusted_certificate_is_refused(
    server_context: ssl.SSLContext,
) -> None:
    """smtps:// to a server with an unknown certificate sends nothing."""
    with serve(ssl_context=server_context) as server:
        message = fatal(server.url("smtps"))
    assert message == f"smtps://localhost:{server.port}: TLS failed: CERTIFICATE_VERIFY_FAILED"
    assert server.recorder.messages == []


@pytest.mark.usefixtures("trusted")
def test_implicit_tls_to_a_clear_text_server_is_fatal() -> None:
    """smtps:// pointed at a plain SMTP port fails at once with a TLS error, not a hang."""
    with serve() as server:
        message = fatal(server.url("smtps"))
    assert message.startswith(f"smtps://localhost:{server.port}: TLS failed: ")
    assert server.recorder.messages == []


# -- login ---------------------------------------------------------------------------------------


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"news",
        PASSWORD.encode(),
    )
    # handled=False lets aiosmtpd answer 535 itself.
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def login_server(server_context: ssl.SSLContext) -> Iterator[Server]:
    with serve(
        tls_context=server_context, authenticator=authenticator, auth_require_tls=True
    ) as server:
        yield server


@pytest.mark.usefixtures("trusted")
def test_login_over_starttls(login_server: Server) -> None:
    """The right user name and password log in over TLS and the message goes out."""
    deliver(login_server.url(user=f"news:{PASSWORD}@", query="?starttls=required"))
    assert login_server.recorder.tls == [True]
    assert len(login_server.recorder.messages) == 1


@pytest.mark.usefixtures("trusted")
def test_password_from_the_environment_logs_in(login_server: Server) -> None:
    """A password given apart from the URL (DIGEST_SMTP_PASSWORD) is the one used."""
    connection = SmtpTransport(parse_url(login_server.url(user="news@"), PASSWORD)).open()
    connection.send(sample(), "provost@example.edu", "chan@example.org")
    connection.close()
    assert len(login_server.recorder.messages) == 1


@pytest.mark.usefixtures("trusted")
def test_wrong_password_is_refused_without_showing_it(login_server: Server) -> None:
    """A wrong password stops the send with 'login refused' and never prints the password."""
    message = fatal(login_server.url(user="news:wrong-hunter3@"))
    assert message == f"smtp://news@localhost:{login_server.port}: login refused (535)"
    assert "wrong-hunter3" not in message
    assert login_server.recorder.messages == []


@pytest.mark.usefixtures("trusted")
def test_non_ascii_password_is_explained(login_server: Server) -> None:
    """A password smtplib cannot send is a clear error, not a crash with a traceback."""
    message = fatal(login_server.url(user="news:s%C3%A9cret@"))
    assert message == (
        f"smtp://news@localhost:{login_server.port}: cannot log in: smtplib sends the user "
        "name and password as ASCII, and one of them is not"
    )
    assert "sécret" not in message
    assert login_server.recorder.messages == []


def test_login_is_never_offered_in_clear_text() -> None:
    """Without TLS the password is not sent: the server offers no login, the send stops."""
    with serve(authenticator=authenticator, auth_require_tls=True) as server:
        message = fatal(server.url(user=f"news:{PASSWORD}@"))
    assert message.startswith(f"smtp://news@localhost:{server.port}: the server does not support")
    assert PASSWORD not in message
    assert server.recorder.messages == []


# -- what replies mean ---------------------------------------------------------------------------


# Every reply is read the same way whether the message goes as an EmailMessage (send_message), as
# bytes with MAIL, RCPT and DATA pipelined (RFC 2920), or as bytes one command at a time.
WIRES = ("message", "pipelined", "stepwise")


@pytest.fixture(params=WIRES)
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def payload(wire: str) -> EmailMessage | bytes:
    return sample() if wire == "message" else sample().as_bytes(policy=policy.SMTP)


def send_to(
    server: SmtpServer | Server, recipient: str = "chan@example.org", wire: str = "message"
) -> None:
    """Open a connection, send one message to `recipient` the `wire` way, and close."""
    server.recorder.pipelining = wire != "stepwise"
    port = server.port
    connection = SmtpTransport(parse_url(f"smtp://127.0.0.1:{port}")).open()
    try:
        connection.send(payload(wire), "provost@example.edu", recipient)
    finally:
        connection.close()


def test_recipient_5xx_is_permanent(smtp_server: SmtpServer, wire: str) -> None:
    """A 550 for an address means 'record it as failed', with the server's words."""
    smtp_server.recorder.refuse["chan@example.org"] = "550 5.1.1 no such user"
    with pytest.raises(Permanent) as raised:
        send_to(smtp_server, wire=wire)
    assert (raised.value.code, raised.value.reply) == (550, "5.1.1 no such user")


def test_recipient_4xx_is_temporary_and_the_connection_goes_on(
    smtp_server: SmtpServer, wire: str
) -> None:
    """A 451 means 'later'; the same connection can carry the next message."""
    smtp_server.recorder.refuse_once["chan@example.org"] = "451 4.3.0 try later"
    smtp_server.recorder.pipelining = wire != "stepwise"
    connection = SmtpTransport(parse_url(smtp_server.url)).open()
    with pytest.raises(Temporary) as raised:
        connection.send(payload(wire), "provost@example.edu", "chan@example.org")
    assert (raised.value.code, raised.value.reply) == (451, "4.3.0 try later")
    connection.send(payload(wire), "provost@example.edu", "chan@example.org")
    connection.close()
    assert len(smtp_server.recorder.messages) == 1


def test_421_means_the_connection_is_gone(smtp_server: SmtpServer, wire: str) -> None:
    """A 421 closes the channel: it is reported as a lost connection, to be opened afresh."""
    smtp_server.recorder.refuse_once["chan@example.org"] = "421 4.3.2 shutting down"
    with pytest.raises(Temporary) as raised:
        send_to(smtp_server, wire=wire)
    assert (raised.value.code, raised.value.reply) == (
        None,
        "the server closed the connection: 421 4.3.2 shutting down",
    )
    send_to(smtp_server, wire=wire)
    assert len(smtp_server.recorder.messages) == 1


def test_sender_refused_permanently_is_fatal(wire: str) -> None:
    """If the server refuses our From address nobody can get the digest: stop the run."""
    with serve() as server:
        server.recorder.mail_reply = "553 5.7.1 sender not allowed"
        with pytest.raises(Fatal) as raised:
            send_to(server, wire=wire)
    assert str(raised.value) == (
        "the server refuses the sender provost@example.edu: 553 5.7.1 sender not allowed"
    )


def test_sender_refused_for_now_is_temporary(wire: str) -> None:
    """A 451 to MAIL FROM is a 'later', not the end of the run."""
    with serve() as server:
        server.recorder.mail_reply = "451 4.3.0 try later"
        with pytest.raises(Temporary) as raised:
            send_to(server, wire=wire)
    assert (raised.value.code, raised.value.reply) == (451, "4.3.0 try later")


@pytest.mark.parametrize(
    ("reply", "kind", "code"),
    [("554 5.6.0 message rejected", Permanent, 554), ("452 4.3.1 out of space", Temporary, 452)],
)
def test_data_refusal_is_classified(
    reply: str, kind: type[Exception], code: int, wire: str
) -> None:
    """A refusal after the message body is failed for good (5xx) or retried later (4xx)."""
    with serve() as server:
        server.recorder.data_reply = reply
        with pytest.raises(kind) as raised:
            send_to(server, wire=wire)
    assert getattr(raised.value, "code", None) == code
    assert server.recorder.messages == []


def test_nothing_listening_is_temporary() -> None:
    """A server that is down is a 'try later', with where it tried."""
    url = f"smtp://127.0.0.1:{free_port()}"
    with pytest.raises(Temporary) as raised:
        SmtpTransport(parse_url(url)).open()
    assert raised.value.code is None
    assert raised.value.reply.startswith(f"cannot connect to {url}: ")


def test_closing_after_the_server_hung_up_is_quiet(smtp_server: SmtpServer, wire: str) -> None:
    """Closing a connection the server already dropped raises nothing."""
    smtp_server.recorder.drop_before_reply = 1
    smtp_server.recorder.pipelining = wire != "stepwise"
    connection = SmtpTransport(parse_url(smtp_server.url)).open()
    with pytest.raises(Temporary) as raised:
        connection.send(payload(wire), "provost@example.edu", "chan@example.org")
    assert raised.value.code is None
    assert raised.value.maybe_sent
    connection.close()


def test_a_refused_message_leaves_the_dialogue_in_step(smtp_server: SmtpServer, wire: str) -> None:
    """After a refusal at MAIL, RCPT or DATA the next message on the connection still goes."""
    recorder = smtp_server.recorder
    recorder.pipelining = wire != "stepwise"
    recorder.refuse["gone@example.org"] = "550 5.1.1 no such user"
    connection = SmtpTransport(parse_url(smtp_server.url)).open()
    for recipient in (
        "gone@example.org",
        "chan@example.org",
        "gone@example.org",
        "lee@example.org",
    ):
        try:
            connection.send(payload(wire), "provost@example.edu", recipient)
        except Permanent:
            assert recipient == "gone@example.org"
    connection.close()
    assert [m.rcpt_tos for m in recorder.messages] == [["chan@example.org"], ["lee@example.org"]]


def test_lines_that_start_with_a_dot_arrive_whole(smtp_server: SmtpServer, wire: str) -> None:
    """Dot-stuffing: a line of '.' or '.x' in the message is not the end of the data."""
    smtp_server.recorder.pipelining = wire != "stepwise"
    email = sample()
    email.set_content("Hello\n.\n..\n.hidden\nend\n")
    data = email if wire == "message" else email.as_bytes(policy=policy.SMTP)
    connection = SmtpTransport(parse_url(smtp_server.url)).open()
    connection.send(data, "provost@example.edu", "chan@example.org")
    connection.close()
    [received] = smtp_server.recorder.messages
    text = received.message.get_content().replace("\r\n", "\n")
    assert text == "Hello\n.\n..\n.hidden\nend\n"


def test_undotted_bytes_are_written_as_they_are(smtp_server: SmtpServer) -> None:
    """Bytes a Stencil marks Undotted (no line starts with a dot) go out unstuffed; any other
    bytes are still looked through, so a line of '.' never ends a message early."""
    email = sample()
    email.set_content("Hello\nend\n")
    plain = email.as_bytes(policy=policy.SMTP)
    dotted = plain.replace(b"Hello", b".Hello")
    connection = SmtpTransport(parse_url(smtp_server.url)).open()
    connection.send(Undotted(plain), "provost@example.edu", "chan@example.org")
    connection.send(dotted, "provost@example.edu", "lee@example.org")
    connection.close()
    first, second = smtp_server.recorder.messages
    assert first.message.get_content().replace("\r\n", "\n") == "Hello\nend\n"
    assert second.message.get_content().replace("\r\n", "\n") == ".Hello\nend\n"


def test_pipelining_sends_the_envelope_before_any_reply() -> None:
    """With PIPELINING offered, MAIL, RCPT and DATA go out before the client waits for a reply.

    The server here answers nothing until it has all three: a client that waited after MAIL would
    time out.
    """
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    seen: list[bytes] = []

    def serve_one() -> None:
        peer, _ = listener.accept()
        with peer, peer.makefile("rb") as lines:
            greet(peer, lines)
            envelope = [lines.readline() for _ in range(3)]
            seen.extend(envelope)
            peer.sendall(b"250 sender ok\r\n250 recipient ok\r\n354 go on\r\n")
            while lines.readline() not in (b".\r\n", b""):
                pass
            peer.sendall(b"250 queued\r\n")
            lines.readline()  # QUIT
            peer.sendall(b"221 bye\r\n")

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    settings = dataclasses.replace(parse_url(f"smtp://127.0.0.1:{port}"), timeout=5.0)
    connection = SmtpTransport(settings).open()
    connection.send(payload("pipelined"), "provost@example.edu", "chan@example.org")
    connection.close()
    thread.join(5)
    listener.close()
    assert seen == [
        b"MAIL FROM:<provost@example.edu>\r\n",
        b"RCPT TO:<chan@example.org>\r\n",
        b"DATA\r\n",
    ]


def test_pipelining_off_waits_for_each_reply() -> None:
    """`?pipelining=off` talks one command at a time to a server that offers but mishandles it.

    The server offers PIPELINING and then answers each command only after reading it alone: a
    client that pipelined would have sent RCPT and DATA in the same segment as MAIL.
    """
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    chunks: list[bytes] = []

    def serve_one() -> None:
        peer, _ = listener.accept()
        with peer, peer.makefile("rb") as lines:
            greet(peer, lines)
            for reply in (b"250 sender ok\r\n", b"250 recipient ok\r\n", b"354 go on\r\n"):
                chunks.append(peer.recv(4096))  # the client waits for `reply` before its next
                peer.sendall(reply)
            with peer.makefile("rb") as rest:
                while rest.readline() not in (b".\r\n", b""):
                    pass
                peer.sendall(b"250 queued\r\n")
                rest.readline()  # QUIT
                peer.sendall(b"221 bye\r\n")

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    settings = dataclasses.replace(
        parse_url(f"smtp://127.0.0.1:{port}?pipelining=off"), timeout=5.0
    )
    assert settings.describe() == f"smtp://127.0.0.1:{port} (no pipelining)"
    connection = SmtpTransport(settings).open()
    connection.send(payload("pipelined"), "provost@example.edu", "chan@example.org")
    connection.close()
    thread.join(5)
    listener.close()
    assert chunks == [
        b"MAIL FROM:<provost@example.edu>\r\n",
        b"RCPT TO:<chan@example.org>\r\n",
        b"DATA\r\n",
    ]


# -- outbox --------------------------------------------------------------------------------------


def note(recipient: str) -> bytes:
    """Return a small message that says whom it is for."""
    return f"To: <{recipient}>\r\nSubject: For {recipient}\r\n\r\nHello\r\n".encode()


def outbox_send(outbox: OutboxTransport, *recipients: str) -> dict[str, bytes]:
    """Send `note(r)` to each recipient through `outbox`; return every file in it by name."""
    connection = outbox.open()
    for recipient in recipients:
        connection.send(note(recipient), "provost@example.edu", recipient)
    connection.close()
    return {p.name: p.read_bytes() for p in outbox.directory.iterdir()}


def test_outbox_names_files_safely(tmp_path: Path) -> None:
    """Odd characters in an address never make the outbox write outside its folder."""
    outbox = OutboxTransport(tmp_path / "outbox", "2025-11")
    assert outbox.describe() == f"{tmp_path / 'outbox'}/"
    [name] = outbox_send(outbox, "o'brien/../x@example.org")
    assert re.fullmatch(r"digest-2025-11-o_brien_\.\._x@example\.org~[0-9a-f]{16}\.eml", name)


def test_outbox_gives_each_recipient_a_file_of_its_own(tmp_path: Path) -> None:
    """Addresses that a file name cannot tell apart still get one .eml each, never one for two."""
    recipients = ("a=b@example.org", "a_b@example.org", "a/b@example.org", "a%b@example.org")
    written = outbox_send(OutboxTransport(tmp_path / "outbox", "2025-11"), *recipients)
    assert sorted(written.values()) == sorted(note(r) for r in recipients)
    assert "digest-2025-11-a_b@example.org.eml" in written


def test_outbox_name_of_a_long_address_is_bounded(tmp_path: Path) -> None:
    """A 64-character local part on a 200-character domain is written, under a readable name."""
    local = "l" * 64
    domain = f"{'d' * 63}.{'e' * 63}.{'f' * 60}.example.org"
    assert len(domain) == 200
    recipients = (f"{local}@{domain}", f"{local}@{domain[:-3]}net")
    written = outbox_send(OutboxTransport(tmp_path / "outbox", "2025-11"), *recipients)
    assert sorted(written.values()) == sorted(note(r) for r in recipients)
    for name in written:
        assert name.startswith(f"digest-2025-11-{local}@ddd")
        assert len(name) <= 150


def test_outbox_is_one_file_per_recipient_whatever_the_case(tmp_path: Path) -> None:
    """An address in another case is the same subscriber: its message is replaced, not doubled."""
    outbox = OutboxTransport(tmp_path / "outbox", "2025-11")
    written = outbox_send(outbox, "Chan.TaiMan@Example.ORG", "chan.taiman@example.org")
    assert written == {
        "digest-2025-11-chan.taiman@example.org.eml": note("chan.taiman@example.org")
    }
    assert outbox_send(outbox, "CHAN.TAIMAN@EXAMPLE.ORG").keys() == written.keys()


def test_outbox_test_copies_never_take_a_real_message_s_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A [TEST] copy for chan@ never replaces the real message of a subscriber test-chan@."""
    monkeypatch.chdir(tmp_path)
    real = transport.choose(None, None, "2025-11")
    test = transport.choose("", None, "2025-11", test=True)
    assert isinstance(real, OutboxTransport)
    assert isinstance(test, OutboxTransport)
    outbox_send(real, "test-chan@example.org")
    written = outbox_send(test, "chan@example.org")
    assert sorted(written.values()) == [note("chan@example.org"), note("test-chan@example.org")]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300), st.booleans())
def test_outbox_names_are_safe_unique_and_stable(one: str, other: str, test: bool) -> None:
    """Any address gets a name inside the outbox, its own, and the same one on every run."""
    outbox = OutboxTransport(Path("outbox"), "2025-11", test=test)
    name = outbox.filename(one)
    assert name == outbox.filename(one)
    assert (name == outbox.filename(other)) == (one.lower() == other.lower())
    assert name == Path(name).name
    assert "\0" not in name
    assert not name.startswith(".")
    assert name.endswith(".eml")
    assert len(name.encode()) <= 150
    assert name != OutboxTransport(Path("outbox"), "2025-11", test=not test).filename(one)


def test_outbox_does_not_write_through_a_planted_symlink(tmp_path: Path) -> None:
    """Someone who can write to outbox/ cannot make a send overwrite another file."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "outbox").mkdir()
    name = "digest-2025-11-chan@example.org.eml"
    # The old code's temporary name, one with its pid, and the target's own name.
    for guess in (f".{name}.tmp", f".{name}.{os.getpid()}.tmp", name):
        (tmp_path / "outbox" / guess).symlink_to(victim)
    outbox_send(OutboxTransport(tmp_path / "outbox", "2025-11"), "chan@example.org")
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "outbox" / name).is_symlink()
    assert (tmp_path / "outbox" / name).read_bytes() == note("chan@example.org")


def test_outbox_that_cannot_be_written_is_fatal(tmp_path: Path) -> None:
    """An outbox path that is a file stops the run with the path named."""
    (tmp_path / "outbox").write_text("not a folder")
    connection = OutboxTransport(tmp_path / "outbox", "2025-11").open()
    with pytest.raises(Fatal) as raised:
        connection.send(sample(), "provost@example.edu", "chan@example.org")
    target = tmp_path / "outbox" / "digest-2025-11-chan@example.org.eml"
    assert str(raised.value) == f"{target}: cannot write (File exists)"


@pytest.mark.usefixtures("trusted")
def test_refused_login_closes_the_connection(
    login_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed login hangs up at once instead of leaving the socket to the garbage collector."""
    closed: list[bool] = []
    close = smtplib.SMTP.close

    def recording_close(self: smtplib.SMTP) -> None:
        closed.append(self.sock is not None)
        close(self)

    monkeypatch.setattr(smtplib.SMTP, "close", recording_close)
    fatal(login_server.url(user="news:wrong-hunter3@"))
    assert closed == [True]


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("ab.+-_'!#$%&*=?^`{|}~@ \"<>()[],;:\\é"), max_size=20))
def test_envelope_addresses_are_written_as_smtplib_writes_them(address: str) -> None:
    """The pipelined MAIL FROM and RCPT TO carry the address exactly as sendmail would."""
    assert transport._path(address) == smtplib.quoteaddr(address)


def test_a_server_that_never_ends_its_reply_line_is_left() -> None:
    """A reply without end is not read into memory for ever: the connection is given up."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        peer, _ = listener.accept()
        with peer, peer.makefile("rb") as lines:
            greet(peer, lines)
            lines.readline()  # MAIL
            peer.sendall(b"250 " + b"x" * 20_000)
            lines.read()  # until the client hangs up

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    settings = dataclasses.replace(parse_url(f"smtp://127.0.0.1:{port}"), timeout=5.0)
    connection = SmtpTransport(settings).open()
    with pytest.raises(Temporary) as raised:
        connection.send(payload("pipelined"), "provost@example.edu", "chan@example.org")
    connection.close()
    thread.join(5)
    listener.close()
    assert raised.value.code is None
    assert raised.value.reply == "the server sent a line longer than 8192 bytes"
    assert not raised.value.maybe_sent
