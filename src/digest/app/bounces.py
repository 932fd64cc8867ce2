"""Bounces and complaints: the VERP return path of a send, and reading a bounce mailbox.

`return_path` is what `send_month` gives each message as its envelope sender when
`newsletter.bounces` is set. `read_bounces` is the one use case `digest bounces`, the scheduler
and the console all run: it classifies each message of a bounce source, ties it to a subscriber
(and a month, when it can), records it with the store's bounce rules, and marks processed only
what it recognised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from digest.app.settings import Settings
from digest.months import Month

if TYPE_CHECKING:
    from digest.publish.catalogue import Catalogue
    from digest.send.verp import Verp


def verp(settings: Settings, catalogue: Catalogue) -> Verp | None:
    """Return the installation's VERP return paths, or None when newsletter.bounces is not set."""
    from digest.send.verp import Verp

    news = catalogue.newsletter
    if news is None or news.bounces is None:
        return None
    return Verp(settings.secret("newsletter.bounces is set, and"), news.bounces.address)


def return_path(
    settings: Settings, catalogue: Catalogue, month: Month
) -> Callable[[str], str] | None:
    """Return each recipient's envelope sender for `month` (a VERP address), or None: without
    newsletter.bounces every message's envelope sender is the From address, as before."""
    paths = verp(settings, catalogue)
    if paths is None:
        return None
    key = str(month)
    return lambda recipient: paths.sender(key, recipient)
