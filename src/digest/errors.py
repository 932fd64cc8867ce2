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


class LedgerBusyError(DeliveryError):
    """Another program kept the delivery ledger locked for longer than digest waits."""

    def __init__(self, path: str, waited: float) -> None:
        self.path = path
        self.waited = waited
        super().__init__(
            f"the delivery ledger {path} stayed locked by another program for {self.how_long}: "
            f"close whatever holds the database open at {path} (an sqlite3 shell, "
            "say), then try again"
        )

    @property
    def how_long(self) -> str:
        """Return the wait given up after, for people: "30 seconds"."""
        return f"{self.waited:g} second{'' if self.waited == 1 else 's'}"
