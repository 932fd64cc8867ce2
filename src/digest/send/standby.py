"""One active scheduler among several on one PostgreSQL database; the others stand by.

The active scheduler holds a session advisory lock, on a connection of its own (a send's
connection comes and goes; this one stays). A standby tries for the lock every `poll` seconds
and takes over as soon as it is free. It is freed when the active one's session ends:

- at once when the active process exits, however it exits (kill -9 included: its kernel closes
  the socket, and the server ends the session);
- within about half a minute when its host or network vanishes without a word, by the TCP
  keepalives every connection sets on the server's end (`database.SERVER_KEEPALIVES`);
- after `stale` seconds in any case: the active scheduler runs a statement on its connection
  every few seconds (`check`), so a session idle for longer than that has no client behind it,
  whatever the network between says; the standby ends it (`pg_terminate_backend`, allowed on the
  sessions of one's own role) and takes over.

The lock decides who fires; it never decides what is sent. A month is still sent once because
each send takes the month's own lock and the ledger says who has it, so even two schedulers that
both believed themselves active (a paused virtual machine waking up, say) send nothing twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

from digest.errors import DigestError
from digest.send import database
from digest.send.database import PostgreSQLDatabase

# The lock: ("schd" in ASCII, 0), apart from the months' send locks and the write lock.
LOCK = (0x73636864, 0)
# How often a standby tries for the lock, and the active one shows it is alive.
POLL = 5.0
# How long the active scheduler's session may stay silent before a standby ends it.
STALE = 45.0
# How long a new active scheduler waits for the sessions of the one before it to go, so that
# the month it was sending is free to be caught up at once.
SETTLE = 15.0
_NAME = "digest: "  # how digest's sessions begin their application_name

log = logging.getLogger("digest.schedule")

_HOLDER = (
    "SELECT a.pid, a.application_name, a.state, "
    "EXTRACT(EPOCH FROM clock_timestamp() - a.state_change) FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.classid::bigint = ? AND l.objid::bigint = ? AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_MINE = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() AND classid::bigint = ? AND objid::bigint = ? AND objsubid = 2)"
)


class SchedulerLock:
    """The active scheduler's lock on a PostgreSQL database (see the module's notes)."""

    def __init__(
        self,
        url: str,
        *,
        poll: float = POLL,
        stale: float = STALE,
        settle: float = SETTLE,
        reconnect_for: float = database.RECONNECT_FOR,
    ) -> None:
        self.poll = poll
        self.stale = stale
        self.settle = settle
        self.name = f"pid {os.getpid()} on {socket.gethostname()}, digest schedule"
        db = database.connect(
            Path("unused"), url, reconnect_for=reconnect_for, name=f"{_NAME}{self.name}"
        )
        assert isinstance(db, PostgreSQLDatabase)  # noqa: S101 -- a PostgreSQL URL
        self.db = db
        self.where = db.shown
        # What a statement may raise when the database is away or refuses: logged, not fatal.
        self._failures: tuple[type[Exception], ...] = (DigestError, *db.errors)

    @property
    def role(self) -> str:
        """Return how the log introduces this scheduler's part."""
        return f"one of the schedulers sharing {self.where} ({self.name})"

    def acquire(self, stop: threading.Event) -> bool:
        """Wait as a standby until this scheduler holds the lock (True) or `stop` is set."""
        told: str | None = None
        previous: str | None = None
        while not stop.is_set():
            try:
                if self.db.session_lock(*LOCK, "the active scheduler's lock"):
                    if previous is not None:
                        log.info("taking over from %s, which stopped", previous)
                        self._settle(previous, stop)
                    return True
                holder = self._holder()
                if holder is not None:
                    previous = holder[1]
                    if holder[1] != told:
                        told = holder[1]
                        log.info(
                            "standby: %s is the active scheduler; this one takes over when it "
                            "stops (tried every %g s)", holder[1], self.poll,
                        )  # fmt: skip
                    if self._silent(holder):
                        continue  # its session was ended: try for the lock again at once
            except self._failures as exc:  # the database is away: keep waiting
                log.warning("standby: %s", exc)
            stop.wait(self.poll)
        return False

    def _holder(self) -> tuple[int, str, str, float] | None:
        """Return the active scheduler's session: (pid, name, state, seconds since it spoke)."""
        rows = self.db.execute(_HOLDER, LOCK).fetchall()
        if not rows:
            return None
        pid, name, state, quiet = rows[0]
        shown = str(name or "").removeprefix(_NAME) or f"the session with server pid {pid}"
        return int(pid), shown, str(state or ""), float(quiet or 0)

    def _silent(self, holder: tuple[int, str, str, float]) -> bool:
        """End the active scheduler's session if it has said nothing for `stale` seconds."""
        pid, name, state, quiet = holder
        if state != "idle" or quiet < self.stale:
            return False
        log.warning(
            "standby: the active scheduler (%s) has not been heard from for %d s: ending its "
            "session, so that this one takes over", name, quiet,
        )  # fmt: skip
        self.db.execute("SELECT pg_terminate_backend(?)", (pid,))
        self._await_end("pid = ?", pid)  # it lets go of the lock as its process exits
        return True

    def _settle(self, previous: str, stop: threading.Event) -> None:
        """Wait (up to `settle` s) for the other sessions of the scheduler before to end."""
        self._await_end("application_name = ?", f"{_NAME}{previous}", stop)

    def _await_end(self, which: str, value: object, stop: threading.Event | None = None) -> None:
        """Wait, up to `settle` seconds, until no session `which` (a condition) remains."""
        deadline = time.monotonic() + self.settle
        count = f"SELECT COUNT(*) FROM pg_stat_activity WHERE {which}"  # noqa: S608 -- constants
        while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            if not self.db.execute(count, (value,)).fetchone()[0]:
                return
            time.sleep(0.05)  # a server process exiting: nothing to wait on but its absence

    def check(self) -> bool:
        """Return whether this scheduler still holds the lock; called every `poll` seconds.

        A connection lost meanwhile is made again and the lock taken again, if it is still free.
        """
        try:
            return bool(self.db.execute(_MINE, LOCK).fetchone()[0])
        except self._failures as exc:
            log.warning("the scheduler lock could not be checked: %s", exc)
            return False

    def release(self) -> None:
        """Let a standby take over, and close the connection."""
        self.db.close()
