"""The errors `digest` reports to its users; every message names where and what to do."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class DigestError(Exception):
    """A failure the user must act on; the CLI prints it and exits 1."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in an input file, located by file, line and path."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class CatalogueError(DigestError):
    """The catalogue (or a file it names) is invalid; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class BuildError(DigestError):
    """Writing or checking the generated files failed."""


class RenderError(DigestError):
    """A newsletter could not be rendered."""


class DeliveryError(DigestError):
    """Sending failed in a way the user must act on."""


class MailboxError(DigestError):
    """A mailbox (IMAP) could not be opened or read."""


class SendBusyError(DeliveryError):
    """Another send of the same month holds its lock."""


class DatabaseLostError(DeliveryError):
    """The connection to the state database was lost inside a transaction, and made again.

    `written` False: the server rolled the transaction back, so running it again is safe.
    """

    def __init__(self, where: str, *, written: bool | None) -> None:
        self.where = where
        self.written = written
        super().__init__(
            f"{where}: the connection to the state database was lost in the middle of a "
            "transaction, which the server rolled back: nothing of it was written; run this again"
        )


class LockLostError(DeliveryError):
    """A session lock (a month's send, the active scheduler) went while its connection was lost."""


class LedgerBusyError(DeliveryError):
    """Another program kept the delivery ledger locked for longer than digest waits.

    `engine` ("sqlite" or "postgresql") words what to look for: a program with the file open, or
    a session on the server holding the write lock or rows.
    """

    def __init__(self, path: str, waited: float, engine: str = "sqlite") -> None:
        self.path = path
        self.waited = waited
        self.engine = engine
        super().__init__(f"{self.locked}: {self.fix}, then try again")

    @property
    def locked(self) -> str:
        """Return what happened, for people: "the delivery ledger X stayed locked by ..."."""
        if self.engine == "postgresql":
            return (
                f"the state database {self.path} stayed locked by another session for "
                f"{self.how_long}"
            )
        return (
            f"the delivery ledger {self.path} stayed locked by another program for {self.how_long}"
        )

    @property
    def fix(self) -> str:
        """Return what to do about it, on this engine."""
        if self.engine == "postgresql":
            return (
                "end whatever holds its write lock or its rows (a psql session with a transaction "
                "open, say: pg_locks and pg_stat_activity show which)"
            )
        return f"close whatever holds the database open at {self.path} (an sqlite3 shell, say)"

    @property
    def how_long(self) -> str:
        """Return the wait given up after, for people: "30 seconds"."""
        return f"{self.waited:g} second{'' if self.waited == 1 else 's'}"
