"""OAuth 2.0 for SMTP: the access token from `DIGEST_SMTP_TOKEN_COMMAND`, and `AUTH XOAUTH2`.

The office's own tool fetches the token (msal, oauth2l, a vault), the way msmtp's `passwordeval`
and git's credential helpers work: digest runs the command line through `/bin/sh`, in the
catalogue's folder, and reads the token from its standard output. One `TokenCommand` serves all
the connections of a transport: the token is kept until a server refuses it, and then the
command runs again, once, however many connections met the refusal.

The token is a secret like a password: it never appears in a message, a log, a repr or
`describe()`; errors name the command, its exit status and the first line of its stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

from digest.errors import DeliveryError

# How long the command may take: an msal or oauth2l refresh is a round trip or two, a vault
# lookup less; one that asks a person something (a device code) would wait here for ever.
TOKEN_TIMEOUT = 30.0

# RFC 6750's b64token: what an access token is made of (Microsoft's JWTs, Google's ya29.*).
_TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
# How much of the command's stderr line an error quotes.
_SHOWN = 200


class TokenError(DeliveryError):
    """DIGEST_SMTP_TOKEN_COMMAND failed, or printed something other than an access token."""


class AccessToken:
    """An access token and which run of the command printed it; shows itself as `<token N>`."""

    __slots__ = ("run", "secret")

    def __init__(self, secret: str, run: int) -> None:
        self.secret = secret
        self.run = run

    def __repr__(self) -> str:
        return f"<access token {self.run}>"

    __str__ = __repr__


class TokenCommand:
    """Runs DIGEST_SMTP_TOKEN_COMMAND when a token is needed, and shares what it printed.

    Thread-safe: connections opened at once wait for one run of the command, and a refusal met
    by several of them makes it run once (`renew` compares which run each was refused).
    """

    def __init__(
        self, command: str, *, workdir: Path | None = None, timeout: float = TOKEN_TIMEOUT
    ) -> None:
        self.command = command
        self.workdir = workdir
        self.timeout = timeout
        self.runs = 0  # how often the command ran, whether it printed a token or failed
        self._token: AccessToken | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenCommand({self.command!r}, runs={self.runs})"

    def current(self) -> AccessToken:
        """Return the token kept, running the command for one when there is none yet."""
        with self._lock:
            if self._token is None:
                self._token = self._run()
            return self._token

    def renew(self, refused: AccessToken) -> AccessToken:
        """Return a newer token than `refused`: the command runs again unless one already did."""
        with self._lock:
            if self._token is None or self._token.run <= refused.run:
                self._token = None  # a failing run must not leave the refused token in use
                self._token = self._run()
            return self._token

    def _run(self) -> AccessToken:
        self.runs += 1
        out = self._output()
        text = out.strip()
        if not text:
            raise self._error("printed nothing on its standard output")
        if not _TOKEN.fullmatch(text):
            # Not quoted: whatever it printed may hold the token.
            raise self._error(
                "printed something other than an access token alone (one line of letters, "
                "digits and -._~+/ as RFC 6750 has it); make it print only the token"
            )
        return AccessToken(text.decode("ascii"), self.runs)

    def _output(self) -> bytes:
        """Run the command; return its standard output, or raise a TokenError saying why not."""
        try:
            # The command line is the office's own configuration, run as msmtp runs passwordeval.
            proc = subprocess.Popen(  # noqa: S602 -- a shell command line by design
                self.command,
                shell=True,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, to end it whole on a timeout
            )
        except OSError as exc:
            raise self._error(f"cannot start: {exc.strerror or exc}") from None
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _end(proc)
            raise self._error(
                f"did not finish in {self.timeout:g} seconds (it must print a token without "
                "asking anyone anything: sign in once by hand so that it has a refresh token)"
            ) from None
        except BaseException:
            _end(proc)
            raise
        if proc.returncode != 0:
            raise self._error(f"{_status(proc.returncode)}{_first_line(err, out)}")
        return out

    def _error(self, what: str) -> TokenError:
        return TokenError(
            f"DIGEST_SMTP_TOKEN_COMMAND {self.command!r} {what}; run it by hand to see why: it "
            "must print an access token for the mailbox in DIGEST_SMTP_URL, and nothing else"
        )


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command and whatever it started, and reap it without waiting on their pipes."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _status(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"failed with exit status {code}"


def _first_line(err: bytes, out: bytes) -> str:
    """Return ": LINE", the first non-blank line of stderr, or a note that there was none."""
    for raw in err.splitlines():
        line = "".join(c for c in raw.decode("utf-8", "replace") if c.isprintable()).strip()
        if line:
            secret = out.strip().decode("utf-8", "replace")
            if len(secret) >= 8:  # a failing command may have printed its token all the same
                line = line.replace(secret, "***")
            return f": {line[:_SHOWN]}{'…' if len(line) > _SHOWN else ''}"
    return " and wrote nothing on stderr"


class Xoauth2:
    """The `authobject` of smtplib's `auth("XOAUTH2", ...)`, as Microsoft and Google document it.

    The initial response is `user={user}^Aauth=Bearer {token}^A^A` (smtplib base64-encodes it).
    A server that refuses the token may first send a 334 challenge carrying a JSON error (Google
    does); the answer is an empty line, and the server then replies 535. `error` keeps the JSON.
    """

    def __init__(self, user: str, token: AccessToken) -> None:
        self._initial = f"user={user}\x01auth=Bearer {token.secret}\x01\x01"
        self._secret = token.secret
        self.error: str | None = None

    def __repr__(self) -> str:
        return "Xoauth2(...)"

    def __call__(self, challenge: bytes | None = None) -> str:
        if challenge is None:
            return self._initial
        text = challenge.decode("utf-8", "replace").replace(self._secret, "***")
        self.error = "".join(c for c in text if c.isprintable()).strip()[:_SHOWN] or None
        return ""
