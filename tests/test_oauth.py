"""OAuth 2.0 for SMTP: ?auth=xoauth2, the token command, and AUTH XOAUTH2 against a real server."""

from __future__ import annotations

import os
import select
import ssl
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import MAILBOX, TOKEN, OAuthRecorder, OAuthServer, Recorder, TokenScript, free_port
from digest.errors import DeliveryError
from digest.send import transport
from digest.send.oauth import AccessToken, TokenCommand, TokenError, Xoauth2
from digest.send.transport import (
    Connection,
    Fatal,
    SmtpTransport,
    Temporary,
    parse_url,
)

OFFICE365 = "smtp://provost%40example.edu@smtp.office365.com:587?auth=xoauth2"
COMMAND = "oauth2l fetch --scope https://mail.google.com/"


# -- DIGEST_SMTP_URL with ?auth=xoauth2 ------------------------------------------------------------


def test_xoauth2_url_signs_in_as_the_percent_encoded_mailbox() -> None:
    """The Microsoft 365 URL from the guide is read as the mailbox, port 587, STARTTLS, XOAUTH2."""
    parsed = parse_url(OFFICE365, token_command=COMMAND)
    assert (parsed.host, parsed.port, parsed.username) == (
        "smtp.office365.com",
        587,
        "provost@example.edu",
    )
    assert (parsed.auth, parsed.token_command, parsed.password) == ("xoauth2", COMMAND, None)
    assert parsed.require_starttls  # a token goes over TLS only, even unasked
    assert parsed.describe() == (
        "smtp://provost@example.edu@smtp.office365.com:587 (STARTTLS required) (XOAUTH2)"
    )
    assert COMMAND not in repr(parsed)


def test_xoauth2_joins_the_other_options() -> None:
    """?auth=xoauth2 goes with ?starttls=required and ?pipelining=off, in any order and case."""
    url = "smtps://provost%40example.edu@smtp.gmail.com?pipelining=off&auth=XOAUTH2"
    parsed = parse_url(url, token_command=COMMAND)
    assert (parsed.implicit_tls, parsed.port, parsed.pipelining) == (True, 465, False)
    assert parsed.describe() == (
        "smtps://provost@example.edu@smtp.gmail.com:465 (no pipelining) (XOAUTH2)"
    )


SHOWN = "'smtp://provost%40example.edu@smtp.office365.com:587?auth=xoauth2'"
NO_COMMAND = (
    f"DIGEST_SMTP_URL {SHOWN} asks for ?auth=xoauth2, but DIGEST_SMTP_TOKEN_COMMAND is not set: "
    "set it to a command that prints an access token for the mailbox (see the IT guide, OAuth 2.0)"
)


@pytest.mark.parametrize(
    ("url", "password", "command", "message"),
    [
        (
            "smtp://news@mail.example.edu?auth=login",
            None,
            None,
            "DIGEST_SMTP_URL 'smtp://news@mail.example.edu?auth=login': auth='login' is not a "
            "sign-in method digest knows: write ?auth=xoauth2 for OAuth 2.0 (Microsoft 365, "
            "Google Workspace), or leave auth out to log in with a password",
        ),
        (
            "smtp://news@mail.example.edu?auth=password",
            None,
            None,
            "DIGEST_SMTP_URL 'smtp://news@mail.example.edu?auth=password': auth='password' is not "
            "a sign-in method digest knows: write ?auth=xoauth2 for OAuth 2.0 (Microsoft 365, "
            "Google Workspace), or leave auth out to log in with a password",
        ),
        (
            "smtp://news@mail.example.edu?auth",
            None,
            None,
            "DIGEST_SMTP_URL 'smtp://news@mail.example.edu?auth': auth='' is not a sign-in method "
            "digest knows: write ?auth=xoauth2 for OAuth 2.0 (Microsoft 365, Google Workspace), "
            "or leave auth out to log in with a password",
        ),
        (
            "smtp://smtp.office365.com:587?auth=xoauth2",
            None,
            COMMAND,
            "DIGEST_SMTP_URL 'smtp://smtp.office365.com:587?auth=xoauth2': ?auth=xoauth2 signs in "
            "as a mailbox, so the URL needs its address as the user name, with the @ "
            "percent-encoded: smtp://provost%40example.edu@smtp.office365.com:587?auth=xoauth2",
        ),
        (
            "smtp://provost%40example.edu:hunter2@smtp.office365.com:587?auth=xoauth2",
            None,
            COMMAND,
            "DIGEST_SMTP_URL 'smtp://provost%40example.edu:***@smtp.office365.com:587"
            "?auth=xoauth2' asks for ?auth=xoauth2, which signs in with the access token from "
            "DIGEST_SMTP_TOKEN_COMMAND, not a password: remove the password from the URL",
        ),
        (
            OFFICE365,
            "hunter2",
            COMMAND,
            f"DIGEST_SMTP_PASSWORD is set, but DIGEST_SMTP_URL {SHOWN} asks for ?auth=xoauth2, "
            "which signs in with the access token from DIGEST_SMTP_TOKEN_COMMAND, not a "
            "password: unset DIGEST_SMTP_PASSWORD",
        ),
        (OFFICE365, None, None, NO_COMMAND),
        (
            "smtp://provost%40example.edu@smtp.office365.com:587",
            None,
            COMMAND,
            "DIGEST_SMTP_TOKEN_COMMAND is set, but DIGEST_SMTP_URL "
            "'smtp://provost%40example.edu@smtp.office365.com:587' does not ask for "
            "?auth=xoauth2, so its token would never be used (a password login would be tried "
            "instead): add ?auth=xoauth2 to the URL, or unset DIGEST_SMTP_TOKEN_COMMAND",
        ),
        (
            "smtp://pr%C3%A9vost%40example.edu@smtp.office365.com?auth=xoauth2",
            None,
            COMMAND,
            "DIGEST_SMTP_URL 'smtp://pr%C3%A9vost%40example.edu@smtp.office365.com?auth=xoauth2': "
            "the user name for ?auth=xoauth2 must be the mailbox's address in ASCII, with no "
            "control characters",
        ),
        (
            "smtp://provost%01auth=x@smtp.office365.com?auth=xoauth2",
            None,
            COMMAND,
            "DIGEST_SMTP_URL 'smtp://provost%01auth=x@smtp.office365.com?auth=xoauth2': the user "
            "name for ?auth=xoauth2 must be the mailbox's address in ASCII, with no control "
            "characters",
        ),
    ],
    ids=[
        "unknown-auth",
        "password-auth",
        "blank-auth",
        "no-user",
        "password-in-url",
        "password-variable",
        "no-command",
        "command-without-xoauth2",
        "non-ascii-user",
        "control-character",
    ],
)
def test_xoauth2_set_up_mistakes_are_explained(
    url: str, password: str | None, command: str | None, message: str
) -> None:
    """Each half-made OAuth set-up stops with the variable named and the fix, never a password."""
    with pytest.raises(DeliveryError) as raised:
        parse_url(url, password, command)
    assert str(raised.value) == message
    assert "hunter2" not in str(raised.value)


def test_a_token_command_without_a_url_is_not_a_silent_rehearsal() -> None:
    """With no DIGEST_SMTP_URL a token command would go unused while mail went to outbox/."""
    with pytest.raises(DeliveryError) as raised:
        transport.choose(None, None, "2025-11", token_command=COMMAND)
    assert str(raised.value) == (
        "DIGEST_SMTP_TOKEN_COMMAND is set, but DIGEST_SMTP_URL is not, so messages would only be "
        "written to outbox/: set DIGEST_SMTP_URL (smtp://provost%40example.edu@"
        "smtp.office365.com:587?auth=xoauth2, say), or unset DIGEST_SMTP_TOKEN_COMMAND"
    )


# -- the token command ---------------------------------------------------------------------------


def failure(command: str, tmp_path: Path, timeout: float = 30.0) -> str:
    with pytest.raises(TokenError) as raised:
        TokenCommand(command, workdir=tmp_path, timeout=timeout).current()
    return str(raised.value)


FIX = (
    "; run it by hand to see why: it must print an access token for the mailbox in "
    "DIGEST_SMTP_URL, and nothing else"
)


def test_a_failing_command_gives_its_status_and_first_line_of_stderr(tmp_path: Path) -> None:
    """An expired sign-in shows the helper's own words and exit status, so IT knows what to fix."""
    command = "printf 'no cached credential\\nsign in with: msal-login\\n' >&2; exit 3"
    assert failure(command, tmp_path) == (
        f"DIGEST_SMTP_TOKEN_COMMAND {command!r} failed with exit status 3: no cached credential"
        + FIX
    )


@pytest.mark.parametrize(
    ("command", "what"),
    [
        ("exit 1", "failed with exit status 1 and wrote nothing on stderr"),
        ("true", "printed nothing on its standard output"),
        ("printf '\\n\\n'", "printed nothing on its standard output"),
        ("kill -KILL $$", "was killed by SIGKILL and wrote nothing on stderr"),
        (
            "no-such-token-helper",
            "failed with exit status 127: /bin/sh: 1: no-such-token-helper: not found",
        ),
    ],
    ids=["silent-failure", "no-output", "blank-lines", "killed", "not-installed"],
)
def test_every_way_a_command_fails_is_named(tmp_path: Path, command: str, what: str) -> None:
    """A helper that fails quietly still gets a sentence that says how it failed."""
    message = failure(command, tmp_path)
    assert message.startswith(f"DIGEST_SMTP_TOKEN_COMMAND {command!r} {what}")
    assert message.endswith(FIX)


@pytest.mark.parametrize(
    "output",
    [
        '{"access_token": "ya29.sekrit-9", "expires_in": 3599}',
        "Token: ya29.sekrit-9",
        "ya29.sekrit-9\nya29.sekrit-9",
    ],
    ids=["json", "labelled", "two-lines"],
)
def test_more_than_a_token_is_refused_without_quoting_it(tmp_path: Path, output: str) -> None:
    """A helper that prints JSON or a label is told to print only the token; none of it shows."""
    (tmp_path / "out.txt").write_text(f"{output}\n")
    message = failure("cat out.txt", tmp_path)
    assert "sekrit" not in message
    assert "printed something other than an access token alone" in message
    assert "make it print only the token" in message


def test_a_token_echoed_to_stderr_by_a_failing_command_is_hidden(tmp_path: Path) -> None:
    """Even a helper that prints its token in an error message never gets it shown."""
    command = "echo ya29.sekrit-9; echo 'refused ya29.sekrit-9 (expired)' >&2; exit 2"
    message = failure(command, tmp_path)
    assert message == (
        f"DIGEST_SMTP_TOKEN_COMMAND {command!r} failed with exit status 2: refused *** (expired)"
        + FIX
    )


def test_a_command_that_waits_for_someone_is_stopped(tmp_path: Path) -> None:
    """A helper stuck on a sign-in prompt ends the send with a reason, not a hang."""
    (tmp_path / "child").write_text("")
    # The shell and the sleep it started are both ended: the command's process group goes.
    command = "sleep 60 & echo $! > child; wait"
    message = failure(command, tmp_path, timeout=0.5)
    assert message.startswith(
        f"DIGEST_SMTP_TOKEN_COMMAND {command!r} did not finish in 0.5 seconds (it must print a "
        "token without asking anyone anything: sign in once by hand so that it has a refresh "
        "token)"
    )
    assert ended(int((tmp_path / "child").read_text()))


def ended(pid: int) -> bool:
    """Return whether process `pid` has ended, waiting (at most 10 s) for a kill to land."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([handle], [], [], 10)  # readable once it has exited
        return bool(readable)
    finally:
        os.close(handle)


def test_the_command_runs_in_the_catalogues_folder(tmp_path: Path) -> None:
    """`./token.sh` finds the office's script whatever folder the scheduler was started in."""
    (tmp_path / "token.txt").write_text("ya29.from-the-folder\n")
    tokens = TokenCommand("cat token.txt", workdir=tmp_path)
    assert tokens.current().secret == "ya29.from-the-folder"  # noqa: S105 -- a test token
    assert repr(tokens.current()) == "<access token 1>"
    assert "from-the-folder" not in repr(tokens)


def test_a_command_that_cannot_start_is_explained(tmp_path: Path) -> None:
    """A catalogue folder that vanished is named as the reason, not a traceback."""
    message = failure("true", tmp_path / "gone")
    assert message.startswith(
        "DIGEST_SMTP_TOKEN_COMMAND 'true' cannot start: No such file or directory"
    )


# -- AUTH XOAUTH2 against a real server ------------------------------------------------------------


def oauth_transport(server: OAuthServer, script: TokenScript) -> SmtpTransport:
    return SmtpTransport(parse_url(server.url, None, script.command), workdir=script.folder)


def send_one(connection: Connection) -> None:
    from email.message import EmailMessage

    email = EmailMessage()
    email["From"] = MAILBOX
    email["To"] = "chan@example.org"
    email["Subject"] = "What's Happening"
    email.set_content("Hello\n")
    try:
        connection.send(email, MAILBOX, "chan@example.org")
    finally:
        connection.close()


def test_xoauth2_initial_response_is_the_documented_format(
    oauth_server: OAuthServer, token_script: TokenScript
) -> None:
    """Microsoft 365 and Google accept the sign-in: user=...^Aauth=Bearer ...^A^A, over TLS."""
    oauth_server.recorder.tokens[TOKEN.format(1)] = 1
    send_one(oauth_transport(oauth_server, token_script).open())
    assert oauth_server.recorder.responses == [
        b"user=provost@example.edu\x01auth=Bearer ya29.sekrit-1\x01\x01"
    ]
    assert len(oauth_server.recorder.messages) == 1
    assert token_script.runs == 1


def test_connections_share_one_token(oauth_server: OAuthServer, token_script: TokenScript) -> None:
    """Several connections of one send ask the helper for a token once, not once each."""
    oauth_server.recorder.tokens[TOKEN.format(1)] = 3
    sender = oauth_transport(oauth_server, token_script)
    for _ in range(3):
        send_one(sender.open())
    assert token_script.runs == 1
    assert oauth_server.recorder.signins == [(TOKEN.format(1), True)] * 3


@pytest.mark.parametrize("style", ["google", "microsoft"])
def test_a_refused_token_is_fetched_again_once(
    oauth_server: OAuthServer, token_script: TokenScript, style: str
) -> None:
    """An expired token costs one more run of the helper, and the send goes on with the new one."""
    oauth_server.recorder.style = style
    oauth_server.recorder.tokens[TOKEN.format(2)] = 3
    sender = oauth_transport(oauth_server, token_script)
    for _ in range(3):
        send_one(sender.open())
    assert token_script.runs == 2
    assert oauth_server.recorder.signins == [
        (TOKEN.format(1), False),
        (TOKEN.format(2), True),
        (TOKEN.format(2), True),
        (TOKEN.format(2), True),
    ]
    assert len(oauth_server.recorder.messages) == 3


def test_connections_opened_at_once_refresh_a_refused_token_once(
    oauth_server: OAuthServer, token_script: TokenScript
) -> None:
    """Four connections meeting one expired token run the helper once more, not four times."""
    oauth_server.recorder.tokens[TOKEN.format(2)] = 4
    sender = oauth_transport(oauth_server, token_script)
    start = threading.Barrier(4)
    opened: list[Connection] = []

    def open_one() -> None:
        start.wait()
        opened.append(sender.open())

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for connection in opened:
        connection.close()
    assert len(opened) == 4
    assert token_script.runs == 2
    tried = oauth_server.recorder.signins
    assert sorted(tried) == [(TOKEN.format(1), False)] * 4 + [(TOKEN.format(2), True)] * 4


@pytest.mark.parametrize(
    ("style", "reply"),
    [
        (
            "google",
            '535 5.7.8 Username and Password not accepted; {"status": "401", "schemes": '
            '"bearer", "scope": "https://mail.google.com/"}',
        ),
        ("microsoft", "535 5.7.3 Authentication unsuccessful"),
    ],
)
def test_a_refused_fresh_token_stops_the_run(
    oauth_server: OAuthServer, token_script: TokenScript, style: str, reply: str
) -> None:
    """A token the server refuses even fresh stops with what to check, and no token shown."""
    oauth_server.recorder.style = style
    oauth_server.recorder.tokens[TOKEN.format(1)] = 1
    sender = oauth_transport(oauth_server, token_script)
    send_one(sender.open())
    with pytest.raises(Fatal) as raised:
        sender.open()
    assert str(raised.value) == (
        f"{oauth_server.shown}: the server refused a fresh access token from "
        f"DIGEST_SMTP_TOKEN_COMMAND too ({reply}): check that the token is for "
        "provost@example.edu, with the SMTP.Send permission (Microsoft 365) or the "
        "https://mail.google.com/ scope (Google), and that SMTP AUTH is enabled for the mailbox "
        "(see the IT guide, OAuth 2.0)"
    )
    assert token_script.runs == 2
    assert "sekrit" not in str(raised.value)
    assert len(oauth_server.recorder.messages) == 1


def test_a_failing_command_stops_the_connection(oauth_server: OAuthServer, tmp_path: Path) -> None:
    """A helper that fails when a connection opens is the error shown; nothing is sent."""
    command = "echo 'no cached credential' >&2; exit 3"
    sender = SmtpTransport(parse_url(oauth_server.url, None, command), workdir=tmp_path)
    with pytest.raises(TokenError) as raised:
        sender.open()
    assert str(raised.value).startswith(
        f"DIGEST_SMTP_TOKEN_COMMAND {command!r} failed with exit status 3: no cached credential;"
    )
    assert oauth_server.recorder.signins == []


def test_a_token_never_goes_in_clear_text(token_script: TokenScript) -> None:
    """A server without STARTTLS gets no token: the helper is not even run."""
    recorder = OAuthRecorder(tokens={TOKEN.format(1): 1})
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, auth_require_tls=False)
    controller.start()
    try:
        url = f"smtp://provost%40example.edu@127.0.0.1:{port}?auth=xoauth2"
        with pytest.raises(Fatal) as raised:
            SmtpTransport(parse_url(url, None, token_script.command)).open()
    finally:
        controller.stop()
    assert str(raised.value) == (
        f"smtp://provost@example.edu@127.0.0.1:{port} (STARTTLS required) (XOAUTH2) does not "
        "offer STARTTLS, and an access token goes only over TLS"
    )
    assert token_script.runs == 0
    assert recorder.signins == []


def test_a_server_without_xoauth2_is_named(
    tls_server_context: ssl.SSLContext,
    trust_test_ca: None,
    token_script: TokenScript,
    tmp_path: Path,
) -> None:
    """A relay that takes only passwords says so, instead of a token refused twice."""
    port = free_port()
    # A plain Recorder offers aiosmtpd's own LOGIN and PLAIN only.
    controller = Controller(
        Recorder(), hostname="127.0.0.1", port=port, tls_context=tls_server_context
    )
    controller.start()
    try:
        url = f"smtp://provost%40example.edu@localhost:{port}?auth=xoauth2"
        sender = SmtpTransport(parse_url(url, None, token_script.command), workdir=tmp_path)
        with pytest.raises(Fatal) as raised:
            sender.open()
    finally:
        controller.stop()
    assert str(raised.value) == (
        f"smtp://provost@example.edu@localhost:{port} (STARTTLS required) (XOAUTH2): the "
        "server does not offer AUTH XOAUTH2 (504 5.5.4 Unrecognized authentication type)"
    )
    assert token_script.runs == 1


def test_a_busy_server_is_a_temporary_failure(
    oauth_server: OAuthServer, token_script: TokenScript
) -> None:
    """'Too many sign-ins, try later' (454) is retried later, not taken for a bad token."""
    oauth_server.recorder.reply = "454 4.7.0 Too many login attempts, please try again later."
    with pytest.raises(Temporary) as raised:
        oauth_transport(oauth_server, token_script).open()
    assert raised.value.reply == (
        f"{oauth_server.shown}: cannot sign in now: 454 4.7.0 Too many login attempts, please "
        "try again later."
    )
    assert token_script.runs == 1


def test_the_token_is_in_no_description(
    oauth_server: OAuthServer, token_script: TokenScript
) -> None:
    """What a send prints about its transport names the mailbox and XOAUTH2, never the token."""
    oauth_server.recorder.tokens[TOKEN.format(1)] = 1
    sender = oauth_transport(oauth_server, token_script)
    connection = sender.open()
    shown = [sender.describe(), repr(sender.settings), repr(sender.tokens), repr(connection)]
    shown.append(repr(sender.tokens.current() if sender.tokens else None))
    connection.close()
    assert sender.describe() == oauth_server.shown
    assert not [text for text in shown if "sekrit" in text]


def test_every_front_end_hands_the_command_to_the_transport(tmp_path: Path) -> None:
    """The console and the scheduler sign in as `digest send` does, in the catalogue's folder."""
    from digest.app import sending
    from digest.app import settings as configuration
    from digest.console.state import Config
    from digest.months import Month
    from helpers import NOW

    environ = {
        "DIGEST_SMTP_URL": OFFICE365,
        "DIGEST_SMTP_TOKEN_COMMAND": COMMAND,
        "DIGEST_CONSOLE_PASSWORD": "four random words here",
    }
    found = configuration.load(tmp_path / "items.yaml", environ)
    month = Month.parse("2025-11")
    console = Config.of(found, tmp_path / "feeds", lambda: NOW)
    for sender in (sending.settings_transport(found, month), console.transport(month)):
        assert isinstance(sender, SmtpTransport)
        assert sender.tokens is not None
        assert (sender.tokens.command, sender.tokens.workdir) == (COMMAND, tmp_path)
        assert sender.tokens.runs == 0  # nothing runs before a connection opens
    assert console.settings.smtp_token_command == COMMAND


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1))
@settings(max_examples=200)
def test_any_printable_user_name_reaches_the_server_exactly(user: str) -> None:
    """Whatever the mailbox's name, percent-encoded, it is the user= the server reads."""
    url = f"smtp://{quote(user, safe='')}@smtp.office365.com:587?auth=xoauth2"
    parsed = parse_url(url, token_command=COMMAND)
    assert parsed.username == user
    token = AccessToken("ya29.sekrit-1", 1)
    assert Xoauth2(user, token)() == f"user={user}\x01auth=Bearer ya29.sekrit-1\x01\x01"
    assert "sekrit" not in parsed.describe()
