"""A real IMAP server for tests: Dovecot (Debian's dovecot-imapd) with a throwaway configuration.

`Dovecot.start(directory, port, tls_port)` writes `dovecot.conf` into `directory` and runs
`dovecot -F -c` on two free ports of 127.0.0.1: IMAP on `port` (STARTTLS offered, plain-text
login allowed too: loopback only) and IMAP over TLS on `tls_port`, with a certificate for
127.0.0.1 from a throwaway CA (trustme) whose certificate is `ca_file` (`context()` trusts it);
users from a passwd-file, Maildir mail under `directory/mail/USER`, and every path it writes
(base_dir, state_dir, logs) under `directory` too; nothing of the system's configuration is
read. As root it runs its login processes as `dovenull` and its internal ones as `dovecot` (both
made by the Debian package), and mail is owned by `nobody`; as another user, everything runs as
that user.

Users `reader1` ... `reader200` (password `secret-for-tests`) are made at start; `add_user`
hands each test the next, so each test has an empty mailbox of its own. `deliver` puts a
message into a mailbox with IMAP APPEND, as a mail server's delivery agent would; `kick` breaks
off an account's sessions. The
session-scoped `dovecot` fixture in tests/conftest.py starts one for the whole run; `imap_user`
gives a test a fresh user.
"""

from __future__ import annotations

import getpass
import imaplib
import itertools
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import trustme

DOVECOT = Path("/usr/sbin/dovecot")
USERS = 200  # readers made at start; each test that needs a mailbox takes the next
PASSWORD = "secret-for-tests"  # noqa: S105 -- the tests' own

CONFIG = """\
# Written by tests/imapserver.py: a throwaway Dovecot on loopback, nothing of the system's read.
instance_name = digest-test-{port}
base_dir = {home}/run
state_dir = {home}/state
log_path = {home}/dovecot.log
info_log_path = {home}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{home}/cert.pem
ssl_key = <{home}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
# A refused login is answered at once (tests refuse some on purpose).
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_location = maildir:{home}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {home}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {home}/users
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
  # No penalty for refused logins: later logins from 127.0.0.1 are not slowed down.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


@dataclass(frozen=True, slots=True)
class Account:
    """A mailbox on the test server."""

    user: str
    password: str
    port: int
    tls_port: int

    def url(self, folder: str = "INBOX", *, tls: bool = False) -> str:
        """Return the account as `digest doctor --read` takes it (the password left out).

        imap:// (STARTTLS) by default; `tls` for imaps://.
        """
        if tls:
            return f"imaps://{self.user}@127.0.0.1:{self.tls_port}/{folder}"
        return f"imap://{self.user}@127.0.0.1:{self.port}/{folder}"


class Dovecot:
    """One running Dovecot; `stop()` ends it and leaves its directory to the caller."""

    def __init__(self, home: Path, port: int, tls_port: int, extra: str = "") -> None:
        self.home = home
        self.extra = extra
        self.port = port
        self.tls_port = tls_port
        self.ca = trustme.CA()
        self.ca_file = home / "ca.pem"
        self._numbers = itertools.count(1)
        self.process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            mail = pwd.getpwnam("nobody")
            self.internal, self.login = "dovecot", "dovenull"
        else:
            mail = pwd.getpwuid(os.getuid())
            self.internal = self.login = getpass.getuser()
        self.uid, self.gid = mail.pw_uid, mail.pw_gid

    @classmethod
    def start(cls, home: Path, port: int, tls_port: int, extra: str = "") -> Dovecot:
        """Configure and start Dovecot in `home`; return once it accepts connections.

        `extra` is added to the configuration (`imap_capability = ...`, say).
        """
        if not DOVECOT.exists():
            raise RuntimeError("the IMAP tests need Dovecot: apt-get install dovecot-imapd")
        server = cls(home, port, tls_port, extra)
        server._configure()
        server.process = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(home / "dovecot.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(home / "stderr.log").open("wb"),
        )
        server._await_listening()
        return server

    def _configure(self) -> None:
        home = self.home
        # Dovecot's processes run as other users: they must reach what is below home.
        home.chmod(0o755)
        (home / "mail").mkdir()
        os.chown(home / "mail", self.uid, self.gid)
        # Made at start, all at once: Dovecot notices a changed passwd-file by its mtime, whole
        # seconds, so a user added within a second of the last lookup would stay unknown.
        (home / "users").write_text(
            "".join(
                f"reader{n}:{{PLAIN}}{PASSWORD}:{self.uid}:{self.gid}::{home}/mail/reader{n}::\n"
                for n in range(1, USERS + 1)
            )
        )
        group = pwd.getpwnam(self.internal).pw_gid
        text = CONFIG.format(
            home=home,
            port=self.port,
            tls_port=self.tls_port,
            internal=self.internal,
            internal_group=_group_name(group),
            login=self.login,
            uid=self.uid,
            gid=self.gid,
        )
        (home / "dovecot.conf").write_text(text + self.extra)
        certificate = self.ca.issue_cert("127.0.0.1", "localhost")
        certificate.cert_chain_pems[0].write_to_path(str(home / "cert.pem"))
        certificate.private_key_pem.write_to_path(str(home / "key.pem"))
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def _await_listening(self) -> None:
        """Wait (at most 15 s) until the IMAP port answers; fail with Dovecot's log if it died."""
        deadline = time.monotonic() + 15
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited {self.process.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    if probe.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not listen on {self.port}:\n{self.logs()}")
            time.sleep(0.02)

    def logs(self) -> str:
        """Return what Dovecot logged, for a failing test's message."""
        found = [p.read_text(errors="replace") for p in sorted(self.home.glob("*.log"))]
        return "\n".join(found)

    def add_user(self) -> Account:
        """Return a user of their own: each call the next of the users made at start."""
        number = next(self._numbers)
        if number > USERS:
            raise RuntimeError(f"tests/imapserver.py makes {USERS} users: raise USERS")
        return Account(f"reader{number}", PASSWORD, self.port, self.tls_port)

    def context(self) -> ssl.SSLContext:
        """Return a client TLS context that trusts the server's certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def deliver(
        self, account: Account, message: bytes, folder: str = "INBOX", flags: str | None = None
    ) -> None:
        """Put `message` into the account's folder (IMAP APPEND), with `flags` ("(\\Seen)")."""
        with imaplib.IMAP4("127.0.0.1", self.port, timeout=10) as client:
            client.login(account.user, account.password)
            status, reply = client.append(folder, flags, None, message)
            if status != "OK":
                raise RuntimeError(f"APPEND to {account.user}/{folder} failed: {reply!r}")

    def kick(self, account: Account) -> None:
        """Disconnect every session of the account (`doveadm kick`), as a server restart would."""
        subprocess.run(
            ["/usr/bin/doveadm", "-c", str(self.home / "dovecot.conf"), "kick", account.user],
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def remove(self) -> None:
        """Delete the server's directory (after stop)."""
        shutil.rmtree(self.home, ignore_errors=True)


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name
