"""Shared fixtures: catalogues written to temporary directories, and the CLI run in-process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from click.testing import CliRunner, Result
from hypothesis import settings
from playwright.sync_api import Browser, sync_playwright

from digest.cli import cli
from digest.send.ledger import Ledger
from dnsserver import DnsServer, Zone
from imapserver import Account, Dovecot
from pgserver import PostgreSQL, running

# Property tests check behaviour, not speed (the benchmarks under bench/ measure that): no
# per-example deadline, which a loaded machine (CI, or several test runs at once) would miss.
settings.register_profile("digest", deadline=None)
settings.load_profile("digest")

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        help="Rewrite the golden files under tests/golden/ from the current output.",
    )


@pytest.fixture(autouse=True)
def _no_token_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own DIGEST_SMTP_TOKEN_COMMAND out of every test; some set their own."""
    monkeypatch.delenv("DIGEST_SMTP_TOKEN_COMMAND", raising=False)


@pytest.fixture(autouse=True)
def _no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own DIGEST_DATABASE_URL out of every test: tests choose the engine."""
    monkeypatch.delenv("DIGEST_DATABASE_URL", raising=False)


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Result]:
    """Run `digest ARGS...` in tmp_path and return click's result (stdout, stderr, exit code)."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write text (or bytes) to a file in tmp_path, by default items.yaml, and return its path."""

    def write_file(content: str | bytes, name: str = "items.yaml") -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write_file


@pytest.fixture
def bundled() -> Path:
    """The catalogue shipped in the repository."""
    return ROOT / "items.yaml"


CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's package, which .ci/run installs), driven by Playwright."""
    if not CHROMIUM.exists():
        pytest.fail("browser tests need Debian's chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            # Running as root needs --no-sandbox; the rest keep Chromium off the network.
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture
def artifacts() -> Path:
    """A directory for screenshots that a person looks at after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@dataclass
class Received:
    """One message the test server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class Recorder:
    """An aiosmtpd handler that records every accepted message and injects faults on request.

    - `refuse[address] = "550 5.1.1 no such user"`: reply to RCPT TO for that address, always;
    - `refuse_once[address] = "451 4.3.0 try later"`: reply once, then accept;
    - `drop_after`: close the connection right after accepting that many messages in total;
    - `drop_before_reply`: close the connection after receiving DATA of that many messages in
      total, before replying (the message is recorded: the client cannot know it arrived);
    - `delay`: seconds to wait before answering DATA;
    - `slow[address] = 1.0`: seconds to wait before answering DATA for that address instead;
    - `pipelining`: whether EHLO offers PIPELINING (RFC 2920), as most servers do;
    - `hold`: once a message is accepted, DATA replies wait until this event is set (at most 60 s),
      so a test can act while a send is surely under way, however slowly processes start.

    `peak_sessions`: the most connections open at once (from EHLO to QUIT).
    """

    messages: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    refuse_once: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None
    drop_before_reply: int | None = None
    delay: float = 0.0
    slow: dict[str, float] = field(default_factory=dict)
    pipelining: bool = True
    hold: threading.Event | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: set[int] = field(default_factory=set)
    peak_sessions: int = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.sessions.add(id(session))
        self.peak_sessions = max(self.peak_sessions, len(self.sessions))
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.sessions.discard(id(session))
        return "221 Bye"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        if address in self.refuse_once:
            return self.refuse_once.pop(address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hold is not None and self.messages:
            await asyncio.get_running_loop().run_in_executor(None, self.hold.wait, 60)
        delay = max([self.slow.get(r, self.delay) for r in envelope.rcpt_tos], default=self.delay)
        if delay:
            await asyncio.sleep(delay)
        with self.lock:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
            count = len(self.messages)
        if self.drop_before_reply is not None and count == self.drop_before_reply:
            server.transport.close()
            return "250 OK"
        if self.drop_after is not None and count == self.drop_after:
            # At the next turn of the loop: the reply goes out (close flushes it), and nothing
            # the client pipelines after it is read, however slowly this machine runs.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 OK"

    def by_recipient(self) -> dict[str, list[Received]]:
        """Return the messages grouped by recipient."""
        grouped: dict[str, list[Received]] = {}
        for received in self.messages:
            for rcpt in received.rcpt_tos:
                grouped.setdefault(rcpt, []).append(received)
        return grouped


@dataclass
class SmtpServer:
    """A running test SMTP server."""

    host: str
    port: int
    recorder: Recorder

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"


def greet(peer: socket.socket, lines: BinaryIO) -> None:
    """Play a scripted server's opening: the greeting, then a reply to EHLO offering PIPELINING."""
    peer.sendall(b"220 scripted\r\n")
    lines.readline()  # EHLO
    peer.sendall(b"250-scripted\r\n250 PIPELINING\r\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def smtp_serving(recorder: Recorder) -> Iterator[SmtpServer]:
    """Run `recorder` as a real SMTP server (aiosmtpd) on a free loopback port, until the end."""
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, recorder)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free loopback port, recording what it accepts."""
    with smtp_serving(Recorder()) as server:
        yield server


DIGEST = shutil.which("digest") or str(Path(sys.executable).parent / "digest")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `digest ARGS...` as a real process in tmp_path; kill any left running at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, log: Path | None = None) -> subprocess.Popen[str]:
        """Start the process; its stderr goes to `log` when given, to read while it runs."""
        with contextlib.ExitStack() as files:
            stderr = files.enter_context(log.open("w")) if log else subprocess.PIPE
            proc = subprocess.Popen(
                [DIGEST, *args],
                cwd=tmp_path,
                env=dict(os.environ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


DIGEST = shutil.which("digest") or str(Path(sys.executable).parent / "digest")


@contextlib.contextmanager
def serving(folder: Path, env: dict[str, str]) -> Iterator[str]:
    """Run `digest serve` in `folder` on a free loopback port; yield its URL once it answers.

    `env` is the whole environment of the server (the caller leaves out the DIGEST_* it does
    not want). The server is stopped when the block ends.
    """
    port = free_port()
    proc = subprocess.Popen(
        [DIGEST, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/login", timeout=1):  # noqa: S310 -- loopback
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out, err = proc.communicate(timeout=5) if proc.poll() is not None else ("", "")
                    pytest.fail(f"digest serve did not start:\n{out}{err}")
                time.sleep(0.05)  # polling a port that is not open yet: nothing to await
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen[str], what: str, seconds: float = 15
) -> None:
    """Poll until `condition` holds; fail (not hang) if the process ends first or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"digest exited {proc.returncode} before {what}:\n{out}{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Wait (at most 30 s) for a process; return its exit status, stdout and stderr."""
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


# -- OAuth 2.0: an XOAUTH2 server and a token command ----------------------------------------------


MAILBOX = "provost@example.edu"
# What the test token command prints on its Nth run; the server accepts what `tokens` says.
TOKEN = "ya29.sekrit-{}"  # noqa: S105 -- a test token
GOOGLE_ERROR = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
_XOAUTH2 = re.compile(rb"user=([^\x01]*)\x01auth=Bearer ([^\x01]*)\x01\x01")


@dataclass
class OAuthRecorder(Recorder):
    """A Recorder that signs in AUTH XOAUTH2 as Microsoft 365 and Google document it.

    - `tokens[token] = 2`: accept that token for two more sign-ins of `MAILBOX`; refuse others;
    - `style`: how a refusal goes: "google" sends a 334 challenge with a JSON error first and
      answers the client's empty line with 535; "microsoft" answers 535 at once;
    - `reply`: answer every AUTH XOAUTH2 with that reply instead;
    - `signins`: every token tried, with whether it was accepted; `responses`: the decoded
      initial responses, byte for byte.
    """

    tokens: dict[str, int] = field(default_factory=dict)
    style: str = "google"
    reply: str | None = None  # answer every AUTH XOAUTH2 with this, whatever the token
    signins: list[tuple[str, bool]] = field(default_factory=list)
    responses: list[bytes] = field(default_factory=list)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        if len(args) != 2:  # digest always sends an initial response
            return AuthResult(success=False, handled=False, message="501 5.5.2 no response")
        response = base64.b64decode(args[1], validate=True)
        self.responses.append(response)
        if self.reply is not None:
            return AuthResult(success=False, handled=False, message=self.reply)
        match = _XOAUTH2.fullmatch(response)
        if match is None:
            return AuthResult(success=False, handled=False, message="501 5.5.2 malformed")
        user, token = match[1].decode(), match[2].decode()
        ok = user == MAILBOX and self.tokens.get(token, 0) > 0
        self.signins.append((token, ok))
        if ok:
            self.tokens[token] -= 1
            return AuthResult(success=True, auth_data=user)
        if self.style == "google":
            answer = await server.challenge_auth(json.dumps(GOOGLE_ERROR))
            assert answer == b"", answer  # the client's empty line
            reply = "535 5.7.8 Username and Password not accepted"
        else:
            reply = "535 5.7.3 Authentication unsuccessful"
        return AuthResult(success=False, handled=False, message=reply)


@dataclass
class OAuthServer:
    """A running XOAUTH2 test server behind STARTTLS, whose certificate the client trusts."""

    port: int
    recorder: OAuthRecorder

    @property
    def url(self) -> str:
        return f"smtp://provost%40example.edu@localhost:{self.port}?auth=xoauth2"

    @property
    def shown(self) -> str:
        """How digest describes this server."""
        return f"smtp://{MAILBOX}@localhost:{self.port} (STARTTLS required) (XOAUTH2)"


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A certificate authority made for the test run."""
    return trustme.CA()


@pytest.fixture
def trust_test_ca(
    tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make the client's default certificate verification trust `tls_ca` (SSL_CERT_FILE)."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


@pytest.fixture(scope="session")
def tls_server_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A server's TLS context with a certificate from `tls_ca` for localhost and 127.0.0.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def oauth_server(tls_server_context: ssl.SSLContext, trust_test_ca: None) -> Iterator[OAuthServer]:
    """A real SMTP server (aiosmtpd) with STARTTLS and AUTH XOAUTH2, on a free loopback port."""
    recorder = OAuthRecorder()
    port = free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        tls_context=tls_server_context,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield OAuthServer(port, recorder)
    finally:
        controller.stop()


# Prints TOKEN with the number of its run, and counts its runs in the file `runs` beside it.
COUNTING_SCRIPT = """\
n=$(( $(cat runs 2>/dev/null || echo 0) + 1 ))
echo "$n" > runs
printf 'ya29.sekrit-%s\\n' "$n"
"""


@dataclass
class TokenScript:
    """The test token command, written into a folder it runs in."""

    folder: Path
    command: str = "sh token.sh"

    @property
    def runs(self) -> int:
        """Return how often the command ran."""
        path = self.folder / "runs"
        return int(path.read_text()) if path.exists() else 0


@pytest.fixture
def token_script(tmp_path: Path) -> TokenScript:
    """`sh token.sh` in tmp_path: prints ya29.sekrit-1, then ya29.sekrit-2, ... on its runs."""
    (tmp_path / "token.sh").write_text(COUNTING_SCRIPT, encoding="utf-8")
    return TokenScript(tmp_path)


@pytest.fixture
def dns_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Zone]:
    """A real authoritative DNS server on loopback (tests/dnsserver.py), named in DIGEST_DNS_SERVER.

    Yields the Zone it serves: the test adds records (`zone.txt(name, text)`, `zone.add(...)`)
    before or while the code under test asks. `zone.port` is where it listens.
    """
    zone = Zone()
    server = DnsServer(zone)
    server.start()
    zone.port = server.port
    monkeypatch.setenv("DIGEST_DNS_SERVER", server.address)
    try:
        yield zone
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A real IMAP server (Dovecot, tests/imapserver.py) on a free loopback port, for the run.

    Its directory is made with mkdtemp in /tmp rather than by pytest, whose folders only their
    owner may enter: Dovecot's own processes run as other users.
    """
    home = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
    port = free_port()
    tls_port = free_port()
    while tls_port == port:
        tls_port = free_port()
    server = Dovecot.start(home, port, tls_port)
    try:
        yield server
    finally:
        server.stop()
        server.remove()


@pytest.fixture
def imap_user(dovecot: Dovecot) -> Account:
    """A fresh, empty mailbox on the session's Dovecot."""
    return dovecot.add_user()


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgreSQL]:
    """A real PostgreSQL cluster (tests/pgserver.py: initdb, pg_ctl) on loopback, for the run."""
    with running(free_port()) as server:
        yield server


# The engines every ledger and store test runs on.
ENGINES = ("sqlite", "postgresql")


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (the SQLite file beside the catalogue), or the URL of a new, empty PostgreSQL one."""
    if request.param == "sqlite":
        return None
    server: PostgreSQL = request.getfixturevalue("postgresql")
    return server.database()


@pytest.fixture
def open_ledger(tmp_path: Path, database_url: str | None) -> Callable[..., Ledger]:
    """Open the test's state database (the same one each call) on the engine of the run."""

    def opener(path: Path | None = None, **options: Any) -> Ledger:
        return Ledger(path or tmp_path / "state" / "state.sqlite3", url=database_url, **options)

    return opener
