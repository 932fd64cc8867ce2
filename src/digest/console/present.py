"""How the console words what staff read: times, how a send ended, and error pages' titles.

Every page says the same thing the same way: a time in the publication's own zone with its
abbreviation and offset, "All sent" in green only when every reader has the digest, "Some not
delivered" in red whenever anyone does not, and an error page titled with what happened rather
than with an HTTP status.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException

from digest.app import wording
from digest.send.ledger import MonthStatus, Run

# A command in the shared wording, as the terminal shows it: `digest subscribers list`.
COMMAND = re.compile(r"`([^`]+)`")


def commands(text: str) -> Markup:
    """Return `text` escaped, each `command` in it set as code (the terminal shows the quotes).

    A command's words never break inside (`--status` is not split after its first dash on a
    phone): each is a `.word`, which console.css keeps on one line; lines break between words.
    """
    parts = COMMAND.split(text)  # text, command, text, ...
    return Markup("").join(
        Markup("<code>{}</code>").format(_words(part)) if odd else escape(part)
        for odd, part in zip(itertools.cycle((False, True)), parts, strict=False)
    )


def _words(command: str) -> Markup:
    return Markup(" ").join(
        Markup('<span class="word">{}</span>').format(w) for w in command.split(" ")
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a send or a month came out, in the same words and colour on every page.

    `state` names the colour: "ok" (green) only when everyone has the digest, "bad" (red) when
    anyone does not, "busy" (amber) while unfinished, "none" (grey) when there was nothing to do.
    """

    state: str
    label: str


SENDING = Verdict("busy", "Sending…")
UNFINISHED = Verdict("busy", "Unfinished")
ALL_SENT = Verdict("ok", "All sent")
NOT_ALL_SENT = Verdict("bad", "Some not delivered")
STOPPED = Verdict("bad", "Stopped by an error")
NOTHING_TO_SEND = Verdict("none", "Nothing to send")
NOT_SENT = Verdict("none", "Not sent")
# Written to outbox/ without a mail server: nobody received anything, and the month is not sent.
REHEARSED = Verdict("busy", "Rehearsal: written to outbox/ only")


def verdict(*, failed: int, deferred: int, waiting: int = 0) -> Verdict:
    """Return how a finished send came out: all sent only if nobody failed, was put off or waits."""
    return NOT_ALL_SENT if failed or deferred or waiting else ALL_SENT


def of_run(run: Run) -> Verdict:
    """Return how one send recorded in the ledger came out."""
    if run.rehearsal:
        return REHEARSED
    if run.finished_at is None:
        return UNFINISHED
    return verdict(failed=run.failed, deferred=run.deferred)


def of_month(status: MonthStatus | None, *, sending: bool = False) -> Verdict:
    """Return where a month stands: being sent, never sent, all sent or some not delivered."""
    if sending:
        return SENDING
    if status is None:
        return NOT_SENT
    counts = status.counts
    waiting = counts.get("pending", 0) + counts.get("sending", 0)
    return verdict(
        failed=counts.get("failed", 0), deferred=counts.get("deferred", 0), waiting=waiting
    )


# Times read alike in the console, the terminal and the scheduler's log.
local_time = wording.moment


class Refusal(HTTPException):
    """An error page whose title says what happened ("The catalogue has errors")."""

    def __init__(self, code: int, title: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.title = title


# What an error page is titled when the code that refused gave no title of its own.
TITLES = {
    400: "The request was not understood",
    403: "Not allowed",
    404: "Page not found",
    405: "That page cannot be opened this way",
    409: "Not possible right now",
    413: "The form is too large",
    500: "Something went wrong",
}


def title_of(error: HTTPException) -> str:
    """Return an error page's title, for staff: what happened, never "409 Conflict"."""
    if isinstance(error, Refusal):
        return error.title
    code = error.code or 500
    return TITLES.get(code, TITLES[500] if code >= 500 else TITLES[400])
