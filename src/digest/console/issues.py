"""Shaping a month's issue on the month's page: the intro (with the item editor's live preview),
which items in what order, the subject, and the preview at 600 and 375 px, light and dark.

Saving is `app.editing.save_issue`'s (the text edit of `newsletter.issues."YYYY-MM"`, the
history, the rebuild); this module reads the form and shows what came back: check messages at
their fields, a refused save with what changed in the file meanwhile."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import flash

from digest.app import editing, wording
from digest.console.web import console
from digest.mail import newsletter
from digest.months import Month
from digest.publish.catalogue import Catalogue, Item
from digest.publish.issue_editing import IssueValues

log = logging.getLogger("digest.console")

# How the preview is shown: the widths of a desktop mail client and of a phone, and the schemes.
WIDTHS = (600, 375)
SCHEMES = ("light", "dark")
_DARK = re.compile(r"@media\s*\(\s*prefers-color-scheme\s*:\s*dark\s*\)")
# The most items of other months the form offers at once (the latest ones before the month).
OTHERS = 20


@dataclass(frozen=True, slots=True)
class Row:
    """One item the form offers, with its position in the issue ("" when left out)."""

    item: Item
    position: str
    known: bool = True  # False: an id typed in that no item has (the check says so)


def view(requested: Mapping[str, str]) -> dict[str, Any]:
    """Return the preview's width and scheme the page asks for (`?width=375&scheme=dark`)."""
    width = requested.get("width", "")
    scheme = requested.get("scheme", "")
    return {
        "width": int(width) if width in {str(w) for w in WIDTHS} else WIDTHS[0],
        "scheme": scheme if scheme in SCHEMES else SCHEMES[0],
        "widths": WIDTHS,
        "schemes": SCHEMES,
    }


def in_scheme(page: str, scheme: str) -> str:
    """Return the digest's page as a mail client in `scheme` shows it, whatever the browser's
    own setting: its dark-mode rules always apply (dark) or never (light)."""
    return _DARK.sub("@media all" if scheme == "dark" else "@media not all", page)


def form_context(
    opened: editing.Opened,
    month: Month,
    *,
    values: IssueValues | None = None,
    positions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return what the month page's issue form shows: the values, and the items in order."""
    loaded = opened.catalogue
    now = console().config.clock()
    console().remember(opened.version, opened.raw)  # a refused save shows what changed since
    saved = editing.issue_values(opened, str(month))
    values = saved if values is None else values
    by_id = {i.id: i for i in loaded.items}
    shown = _default_order(loaded, month, saved, now)
    wanted = list(values.items or ())
    if positions is None:
        positions = {item_id: str(n) for n, item_id in enumerate(shown, 1)}
    rows = [
        Row(by_id[i], positions.get(i, "")) for i in dict.fromkeys([*wanted, *shown]) if i in by_id
    ]
    offered = {r.item.id for r in rows}
    tz = loaded.publication.tz
    others = [
        i
        for i in loaded.published(now)
        if i.id not in offered and i.date < month.shift(1).start(tz)
    ][:OTHERS]
    rows += [Row(i, positions.get(i.id, "")) for i in others]
    return {
        "issue_values": values,
        "issue_rows": rows,
        "issue_unknown": [i for i in wanted if i not in by_id],
        "issue_shown": ",".join(shown),
        "issue_listed": saved.items is not None,
        "issue_version": opened.version,
    }


def _default_order(loaded: Catalogue, month: Month, saved: IssueValues, now: Any) -> list[str]:
    """Return the ids the month shows now: its list, or its items by the date rule."""
    if saved.items is not None:
        return list(saved.items)
    return [i.id for i in newsletter.issue(loaded, month, now).items]


def values_from(form: Mapping[str, str]) -> tuple[IssueValues, dict[str, str]]:
    """Return the issue as the form gives it, and each item's position as typed.

    Items are taken by their position (1 first; ties keep the form's order), left out when the
    position is blank; ids typed in `add` come after them. When the order is the one the form
    was opened on and the month had no list, no list is written: the month keeps its date rule.
    """
    positions = {
        k.removeprefix("position-"): v.strip() for k, v in form.items() if k.startswith("position-")
    }
    order = list(positions)
    chosen = sorted(
        (i for i, p in positions.items() if p),
        key=lambda i: (_number(positions[i]), order.index(i)),
    )
    added = [a for a in re.split(r"[\s,]+", form.get("add", "")) if a and a not in chosen]
    ids = tuple([*chosen, *added])
    shown = tuple(i for i in form.get("shown", "").split(",") if i)
    same = ids == shown and form.get("listed") != "1"
    items = None if not ids or same else ids
    values = IssueValues(form.get("intro", ""), items, form.get("subject", ""))
    return values, positions


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")  # position_problems says so at the field


def position_problems(positions: Mapping[str, str]) -> dict[str, list[str]]:
    """Return the form's problem with the positions typed, at the items field, if any."""
    bad = [p for p in positions.values() if p and not re.fullmatch(r"\d{1,4}", p)]
    if not bad:
        return {}
    return {
        "items": [
            f"{bad[0]!r} is not a position: give a whole number (1 first), or leave it blank "
            "to leave the item out"
        ]
    }


def tell(saved: editing.SavedIssue, staff: str) -> None:
    """Flash what a save of the issue did: the file, the history, git, the rebuild."""
    if not saved.changed:
        flash(f"Nothing changed: the {saved.month} issue is as it was.", "ok")
        return
    log.info("%s saved the %s issue, save %s", staff, saved.month, saved.edit)
    flash(f"Saved the {saved.month} issue (save {saved.edit}).", "ok")
    if saved.commit:
        flash(f"Committed to git as {saved.commit}, by {staff}.", "ok")
    for note in saved.notes:
        flash(note, "warn")
    if saved.build is not None:
        files = wording.plural(saved.build.written, "file")
        flash(
            f"Feeds rebuilt: {files} written, {saved.build.unchanged} unchanged; "
            f"{saved.build.published} items published.",
            "ok",
        )
    else:
        flash(f"Saved, but the feeds were not rebuilt: {saved.build_error}", "error")
