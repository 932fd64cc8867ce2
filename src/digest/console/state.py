"""The console's state: its settings, the sends it started, and the wrong passwords it counts.

`Config` is what cli.py read from the command line and the environment; `Console` holds what
the running application remembers between requests; a `Job` is one send running in a thread.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from digest.app.settings import Settings
from digest.console import present
from digest.errors import DigestError
from digest.months import Month
from digest.publish import catalogue as catalogues
from digest.send import delivery, transport, unsubscribe
from digest.send.ledger import Ledger, SendLock

log = logging.getLogger("digest.console")

# After this many wrong passwords within LOCKOUT from one client (a browser that has logged in
# before, or else an address), that client waits until the oldest is LOCKOUT old.
MAX_FAILURES = 10
LOCKOUT = timedelta(minutes=10)
# After this many wrong passwords within LOCKOUT from browsers that never logged in, however many
# addresses they come from, only browsers that have logged in before may try (see `Console`).
MAX_ACCOUNT_FAILURES = 50
# How many versions of the catalogue the editor keeps in memory to show a refused save's diff.
SEEN_VERSIONS = 8


@dataclass(frozen=True)
class Config:
    """Everything the console needs, read from the command line and environment by cli.py."""

    catalogue_path: Path
    state_path: Path
    feeds_dir: Path
    password: str = field(repr=False)
    secret_key: str = field(repr=False)
    clock: Callable[[], datetime]
    public_url: str | None = None
    smtp_url: str | None = field(default=None, repr=False)
    smtp_password: str | None = field(default=None, repr=False)
    smtp_token_command: str | None = field(default=None, repr=False)
    session_lifetime: timedelta = timedelta(hours=12)
    # How many reverse proxies in front append to X-Forwarded-For; 0 ignores the header.
    trusted_proxies: int = 0
    outbox: Path = Path("outbox")
    # DIGEST_EDITOR_GIT_COMMIT: each save of the editor is committed when the folder is in git.
    git_commit: bool = False
    # DIGEST_DATABASE_URL when it names PostgreSQL (None: the SQLite file `state_path`).
    database_url: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, settings: Settings, feeds_dir: Path, clock: Callable[[], datetime]) -> Config:
        """Return the console's configuration from the installation's settings, checked."""
        from digest.console.auth import check_password

        password = check_password(settings.console_password or "")
        if settings.secret_key or settings.public_url:
            secret = settings.secret("The console needs a secret key:")
        else:
            # Nothing signed with it outlives this process (no unsubscribe links go out without
            # DIGEST_PUBLIC_URL), so a key made now is safe; only logins end with a restart.
            secret = secrets.token_urlsafe(32)
        return cls(
            catalogue_path=settings.catalogue_path,
            state_path=settings.state_path,
            feeds_dir=feeds_dir,
            password=password,
            secret_key=secret,
            clock=clock,
            public_url=settings.public_url,
            smtp_url=settings.smtp_url,
            smtp_password=settings.smtp_password,
            smtp_token_command=settings.smtp_token_command,
            trusted_proxies=settings.trusted_proxies,
            outbox=settings.outbox,
            git_commit=settings.editor_git_commit,
            database_url=settings.database_url,
        )

    @property
    def settings(self) -> Settings:
        """Return the installation's settings, for the use cases the console runs."""
        return Settings(
            catalogue_path=self.catalogue_path,
            state_path=self.state_path,
            outbox=self.outbox,
            smtp_url=self.smtp_url,
            smtp_password=self.smtp_password,
            smtp_token_command=self.smtp_token_command,
            public_url=self.public_url,
            secret_key=self.secret_key,
            console_password=self.password,
            trusted_proxies=self.trusted_proxies,
            editor_git_commit=self.git_commit,
            database_url=self.database_url,
        )

    @property
    def https(self) -> bool:
        """Return whether staff reach the console over https (its cookies are then `Secure`)."""
        return self.public_url is not None and urlsplit(self.public_url).scheme == "https"

    def transport(self, month: Month, *, test: bool = False) -> transport.Transport:
        """Return where this console's messages go (the same choice as the CLI's)."""
        return transport.choose(
            self.smtp_url,
            self.smtp_password,
            str(month),
            test=test,
            outbox=self.outbox,
            token_command=self.smtp_token_command,
            workdir=self.catalogue_path.parent,
        )

    @property
    def links(self) -> unsubscribe.Links:
        """Return the unsubscribe token maker of this installation."""
        return unsubscribe.Links(self.secret_key, self.public_url)

    def one_click(self) -> Callable[[str], str] | None:
        """Return the one-click URL maker for emails, when the console is reachable publicly."""
        return self.links.url if self.public_url else None

    def writes_files_only(self, month: Month) -> bool:
        """Return whether a send of `month` only writes files to outbox/ (no mail server set)."""
        return isinstance(self.transport(month), transport.OutboxTransport)


@dataclass
class Job:
    """A send of one month started from the console, running in a background thread."""

    month: Month
    started_by: str
    transport: str
    started_at: datetime
    state: str = "starting"  # starting, sending, done, failed
    kind: str = ""  # how a finished send_month ended: "sent", "already sent", "no readers", ...
    rehearsal: bool = False  # written to outbox/ only: nobody was emailed
    total: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    already: int = 0
    message: str = ""
    problems: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Return whether the send has not finished yet."""
        return self.state in ("starting", "sending")

    @property
    def done(self) -> int:
        """Return how many recipients this run has dealt with so far."""
        return self.sent + self.failed + self.deferred

    @property
    def verdict(self) -> present.Verdict:
        """Return how the send is going or came out, in the words every page uses."""
        if self.running:
            return present.SENDING
        if self.state == "failed":
            return present.STOPPED
        if self.kind in ("no readers", "no items"):
            return present.NOTHING_TO_SEND
        if self.rehearsal:
            return present.REHEARSED
        waiting = max(0, self.total - self.done)  # stopped part-way by Ctrl-C
        return present.verdict(failed=self.failed, deferred=self.deferred, waiting=waiting)

    def record(self, outcome: delivery.Outcome) -> None:
        """Count one recipient's outcome (called from the sending thread)."""
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)
        if outcome.status != "sent":
            code = f"{outcome.code} " if outcome.code else ""
            self.problems.append(f"{outcome.status}: {outcome.address}: {code}{outcome.reply}")


class Console:
    """The console's state: its configuration, the sends it started and recent wrong passwords.

    Wrong passwords are counted per client: a browser that logged in before (it carries a signed
    known-browser cookie) is counted by itself, any other by its address. MAX_FAILURES within
    LOCKOUT lock that client alone. There is one account, the shared password (the name is free
    text, so it is no account: counting per name would let an attacker lock out "Ada" by name and
    guess freely under other names). For it, wrong passwords from strangers (browsers that never
    logged in) are counted together: at MAX_ACCOUNT_FAILURES within LOCKOUT, strangers are refused
    without their password being checked, whatever their address, until the count falls back.
    Browsers that have logged in before still log in, so an attacker with many addresses gets at
    most MAX_ACCOUNT_FAILURES guesses per LOCKOUT and still cannot lock the staff out; behind a
    proxy whose address every client shares, the staff's browsers keep working too.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.jobs: dict[Month, Job] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.failures: dict[str, list[datetime]] = {}
        self.stranger_failures: list[datetime] = []
        # Held while a login is checked and counted, so that parallel guesses all count.
        self.guesses = threading.Lock()
        self.retry_policy: delivery.RetryPolicy | None = None  # None: delivery's default
        self._zone: tuple[tuple[int, int], tzinfo] | None = None
        # The catalogue's recent versions, by SHA-256, as the editor's forms were opened on them:
        # a save refused because the file changed shows the diff from the one its form saw.
        self._seen: dict[str, bytes] = {}
        # The site's URL for the editor's preview, with the catalogue's (mtime, size) it is of.
        self.site_url: tuple[tuple[int, int], str] | None = None
        # Sessions logged out before they expired: a copy of the cookie opens nothing. Kept in the
        # ledger too, so that a restart with the same key does not bring them back.
        ledger = open_ledger(config.state_path, config.database_url)
        try:
            self.logged_out = ledger.logouts(config.clock()) if ledger else set()
        finally:
            if ledger is not None:
                ledger.close()

    def remember(self, version: str, raw: bytes) -> None:
        """Keep the catalogue's bytes of `version`, the last few only."""
        with self.lock:
            self._seen.pop(version, None)
            self._seen[version] = raw
            while len(self._seen) > SEEN_VERSIONS:
                del self._seen[next(iter(self._seen))]

    def seen(self, version: str) -> bytes | None:
        """Return the catalogue's bytes of `version`, if a form was opened on it lately."""
        with self.lock:
            return self._seen.get(version)

    def log_out(self, session_id: str) -> None:
        """End `session_id` for good, here and in the ledger."""
        self.logged_out.add(session_id)
        ledger = Ledger(self.config.state_path, url=self.config.database_url)
        try:
            now = self.config.clock()
            ledger.record_logout(session_id, now, now + self.config.session_lifetime)
        finally:
            ledger.close()

    def start(self, month: Month, started_by: str) -> Job:
        """Start sending `month` in the background; raise DigestError if it cannot start now."""
        with self.lock:
            running = self.jobs.get(month)
            if running is not None and running.running:
                raise DigestError(
                    f"A send of {month.label} is already running, started by "
                    f"{running.started_by} at "
                    f"{present.local_time(running.started_at, self.zone())}; "
                    "wait for it to finish."
                )
            # A send from the CLI or the scheduler holds the same lock: say so now, not later.
            self._probe(month, started_by)
            chosen = self.config.transport(month)
            job = Job(month, started_by, chosen.describe(), self.config.clock())
            job.thread = threading.Thread(
                target=self._run, args=(job,), name=f"send-{month}", daemon=True
            )
            self.jobs[month] = job
            job.thread.start()
            return job

    def _probe(self, month: Month, started_by: str) -> None:
        """Raise SendBusyError if another send of `month` runs, here or on another host."""
        ledger = open_ledger(self.config.state_path, self.config.database_url)
        try:
            probe = SendLock(self.config.state_path, str(month), ledger)
            probe.acquire(f"digest serve, checked by {started_by}")
            probe.release()
        finally:
            if ledger is not None:
                ledger.close()

    def _run(self, job: Job) -> None:
        """Send `job.month` through the one send every front end runs (`app.sending`)."""
        from digest.app import sending

        config = self.config

        def confirm(briefing: sending.Briefing) -> bool:
            job.total = briefing.to_send
            job.already = briefing.already
            job.state = "sending"
            return True  # the person confirmed on the page before this thread started

        options = sending.SendOptions(
            holder=f"digest serve, started by {job.started_by}",
            confirm=confirm,
            progress=job.record,
            stop=self.stop,
            warn=lambda line: log.warning("%s: %s", job.month, line),
            execute={"policy": self.retry_policy},
        )
        try:
            sent = sending.send_month(
                config.settings, job.month, config.clock(), config.clock, options
            )
        except DigestError as exc:
            job.message = str(exc)
            job.state = "failed"
            return
        except Exception as exc:  # a bug: the page must say so rather than spin for ever
            log.exception("the send of %s failed", job.month)
            job.message = f"The send stopped on an unexpected error: {exc!r}"
            job.state = "failed"
            return
        job.kind = sent.result.kind
        job.rehearsal = sent.result.rehearsal
        job.message = self._ending(job, sent)
        job.state = "failed" if sent.halted is not None else "done"

    def _ending(self, job: Job, sent: Any) -> str:
        """Return how a finished send is told on the progress page."""
        from digest.app import wording

        label, result = job.month.label, sent.result
        if result.kind == "already sent":
            return f"{label} was already sent to everyone: nothing to send."
        if result.kind == "no readers":
            return f"No subscriber has items in {label}: nothing to send."
        if result.kind == "no items":
            return f"No items in {label}: nothing to send."
        summary = result.summary
        if summary is None:
            return ""
        message = wording.result_line(label, summary, job.transport, rehearsal=result.rehearsal)
        if sent.halted is not None:
            message += f" {sent.halted}"
        if summary.held and summary.held_until is not None:
            message += (
                f" {summary.held} held by the relay's daily limit: they can go from "
                f"{present.local_time(summary.held_until, self.zone())}; send again then."
            )
        if result.rehearsal:
            message += f" Written to {self.config.outbox}/ only: a rehearsal, nobody was emailed."
        return message

    def zone(self) -> tzinfo:
        """Return the publication's time zone, in which every page shows its times.

        Read again only when the catalogue file changes; while it does not load, the zone it last
        had (UTC if it never loaded), so that times do not change zone under a typo.
        """
        try:
            found = self.config.catalogue_path.stat()
        except OSError:
            return self._zone[1] if self._zone else UTC
        key = (found.st_mtime_ns, found.st_size)
        if self._zone is None or self._zone[0] != key:
            try:
                tz = catalogues.load(self.config.catalogue_path).publication.tz
            except DigestError:
                tz = self._zone[1] if self._zone else UTC
            self._zone = (key, tz)
        return self._zone[1]

    def shutdown(self, timeout: float = 60.0) -> list[Month]:
        """Stop running sends after their message in flight, wait for them; return their months."""
        running = [job for job in self.jobs.values() if job.running]
        self.stop.set()
        for job in running:
            if job.thread is not None:
                job.thread.join(timeout)
        return [job.month for job in running]

    def locked_out(self, client: str, now: datetime) -> bool:
        """Return whether `client` has guessed wrong too often lately."""
        recent = [t for t in self.failures.pop(client, []) if now - t < LOCKOUT]
        if recent:
            self.failures[client] = recent
        return len(recent) >= MAX_FAILURES

    def strangers_refused(self, now: datetime) -> bool:
        """Return whether browsers that never logged in have guessed wrong too often lately."""
        self.stranger_failures = [t for t in self.stranger_failures if now - t < LOCKOUT]
        return len(self.stranger_failures) >= MAX_ACCOUNT_FAILURES

    def count_failure(self, client: str, now: datetime, *, known: bool) -> None:
        """Count a wrong password from `client` (`known`: a browser that has logged in before)."""
        self.failures.setdefault(client, []).append(now)
        if not known:
            self.stranger_failures.append(now)
            if len(self.stranger_failures) == MAX_ACCOUNT_FAILURES:
                log.warning(
                    "%d wrong passwords from browsers that never logged in within %d minutes: "
                    "until they age out, only browsers that have logged in before may try",
                    MAX_ACCOUNT_FAILURES,
                    LOCKOUT.seconds // 60,
                )
        if len(self.failures[client]) == MAX_FAILURES:
            log.warning(
                "%d wrong passwords within %d minutes from %s: refused until they age out",
                MAX_FAILURES,
                LOCKOUT.seconds // 60,
                client,
            )
        if len(self.failures) > 1000:  # many addresses: forget those whose failures aged out
            for other in list(self.failures):
                self.locked_out(other, now)


def open_ledger(path: Path, url: str | None = None) -> Ledger | None:
    """Open the ledger if it exists: looking at the console never creates one.

    `url`: DIGEST_DATABASE_URL when it names PostgreSQL, which is there whenever it is set.
    """
    return Ledger(path, url=url) if url is not None or path.exists() else None
