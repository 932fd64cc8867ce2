"""Announcements: the list of items, the form for one (new or existing), its live preview, its
history and revert. Saving, checking and recording are `app.editing`'s; these pages parse the
form and show what came back: check messages at their fields, a refused save with what changed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Flask, abort, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from digest.app import editing, wording
from digest.console import events, present
from digest.console.web import console
from digest.errors import CatalogueError, DigestError
from digest.months import Month
from digest.publish import markup
from digest.publish.catalogue import Catalogue, Item
from digest.publish.editing import Value

log = logging.getLogger("digest.console")

# The most rows the list shows at once; a search or a filter narrows a longer catalogue.
MAX_ROWS = 500
TEXT_FIELDS = ("title", "date", "updated", "category", "section", "summary", "body", "link")
BUTTONS = {
    "draft": "Save as draft",
    "schedule": "Schedule",
    "publish": "Publish",
    "retire": "Retire (make a draft)",
    "save": "Save",
}


def register(app: Flask) -> None:
    """Add the announcement pages to `app`."""
    for rule, view, methods in (
        ("/items", item_list, ["GET"]),
        ("/items/new", new_item, ["GET"]),
        ("/items/new", create_item, ["POST"]),
        ("/items/preview", markdown_preview, ["POST"]),
        ("/items/<item_id>", item_page, ["GET"]),
        ("/items/<item_id>", update_item, ["POST"]),
        ("/edits/<int:number>/revert", revert, ["POST"]),
    ):
        app.add_url_rule(rule, view_func=view, methods=methods)


# -- the list ------------------------------------------------------------------------------------


def item_list() -> str:
    """List the items, newest first, narrowed by search, category, section, month and status."""
    config = console().config
    opened = _open()
    now = config.clock()
    loaded = opened.catalogue
    tz = loaded.publication.tz
    wanted = {k: request.args.get(k, "").strip() for k in ("q", "category", "section", "month")}
    status = request.args.get("status", "")
    words = wanted["q"].casefold().split()
    rows = []
    for item in sorted(loaded.items, key=lambda i: i.date, reverse=True):
        item_status = editing.status_of(item, now)
        month = str(Month.of(item.date, tz))
        if (
            (wanted["category"] and item.category != wanted["category"])
            or (wanted["section"] and (item.section or "") != wanted["section"])
            or (wanted["month"] and month != wanted["month"])
            or (status and item_status != status)
            or not _matches(item, words)
        ):
            continue
        rows.append((item, item_status, month))
    months = sorted({str(Month.of(i.date, tz)) for i in loaded.items}, reverse=True)
    return render_template(
        "items.html",
        rows=rows[:MAX_ROWS],
        found=len(rows),
        wanted=wanted,
        status=status,
        statuses=editing.STATUSES,
        months=months,
        catalogue=loaded,
        names={c.slug: c.name for c in loaded.publication.categories},
        max_rows=MAX_ROWS,
    )


def _matches(item: Item, words: list[str]) -> bool:
    if not words:
        return True
    text = f"{item.id} {item.title} {item.summary} {' '.join(item.tags)}".casefold()
    return all(word in text for word in words)


# -- one item ------------------------------------------------------------------------------------


def new_item() -> str:
    """Show an empty form for a new announcement, dated today."""
    opened = _open()
    today = console().config.clock().astimezone(opened.catalogue.publication.tz).date()
    values: dict[str, Value] = {"date": today.isoformat()}
    return _form(opened, None, values)[0]


def item_page(item_id: str) -> str:
    """Show an item's form, where it stands, and its history."""
    opened = _open()
    return _form(opened, item_id, _values(opened, item_id))[0]


def create_item() -> Response | tuple[str, int]:
    """Save a new announcement (as a draft, scheduled or published)."""
    return _save(None)


def update_item(item_id: str) -> Response | tuple[str, int]:
    """Save changes to an item, or retire it."""
    return _save(item_id)


def _save(item_id: str | None) -> Response | tuple[str, int]:
    config = console().config
    values = values_from(request.form)
    if problems := events.problems(request.form):
        return _refused(item_id, values, errors=problems)
    action = request.form.get("action", "save")
    version = request.form.get("version", "")
    staff = str(session.get("user", "someone"))
    seen = console().seen(version)
    asked = editing.Request(item_id, values, action, version, staff, seen)
    try:
        saved = editing.save_item(config.settings, asked, config.feeds_dir, config.clock())
    except editing.Invalid as exc:
        return _refused(item_id, values, errors=exc.fields, other=exc.other)
    except editing.Conflict as exc:
        return _refused(item_id, values, conflict=exc)
    except CatalogueError as exc:  # the file itself stopped loading meanwhile
        return _refused(item_id, values, other=[str(p) for p in exc.problems])
    except DigestError as exc:
        return _refused(item_id, values, other=[str(exc)])
    _tell(saved, staff)
    return redirect(url_for("item_page", item_id=saved.item_id), 303)


def _tell(saved: editing.Saved, staff: str) -> None:
    """Flash what a save did: the file, the history, git, and the rebuild of the feeds."""
    if not saved.changed:
        flash(f"Nothing changed: {saved.item_id} is {saved.status} as it was.", "ok")
        return
    log.info("%s saved %s (%s), save %s", staff, saved.item_id, saved.status, saved.edit)
    flash(f"Saved {saved.item_id}: it is now {saved.status} (save {saved.edit}).", "ok")
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


def _refused(
    item_id: str | None,
    values: Mapping[str, Value],
    *,
    errors: Mapping[str, list[str]] | None = None,
    other: list[str] | None = None,
    conflict: editing.Conflict | None = None,
) -> tuple[str, int]:
    """Show the form again with what was typed, and why it was not saved."""
    opened = _open()
    page, _ = _form(
        opened,
        item_id,
        values,
        errors=_form_fields(errors or {}),
        other=other or [],
        conflict=conflict,
    )
    return page, 409 if conflict else 422


def _form_fields(errors: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Name check problems as the form names its fields (`image.alt`: image_alt)."""
    out: dict[str, list[str]] = {}
    for field, messages in errors.items():
        name = field.split("[", 1)[0].replace(".", "_")
        out.setdefault(name if name in FIELD_NAMES else "item", []).extend(messages)
    return out


FIELD_NAMES = frozenset(
    {*TEXT_FIELDS, "image_url", "image_alt", "tags", "item", "id", *events.FIELDS}
)


def _form(
    opened: editing.Opened,
    item_id: str | None,
    values: Mapping[str, Value],
    *,
    errors: Mapping[str, list[str]] | None = None,
    other: list[str] | None = None,
    conflict: editing.Conflict | None = None,
) -> tuple[str, int]:
    config = console().config
    loaded = opened.catalogue
    now = config.clock()
    item = _item(loaded, item_id) if item_id else None
    # The bytes this form is opened on, so that a refused save can show what changed since.
    console().remember(opened.version, opened.raw)
    history = editing.history(config.settings, item_id) if item_id else []
    image = values.get("image")
    tags = values.get("tags")
    page = render_template(
        "item.html",
        item=item,
        item_id=item_id,
        values=values,
        image=image if isinstance(image, Mapping) else {},
        tags=", ".join(tags) if isinstance(tags, tuple) else "",
        status=editing.status_of(item, now) if item else None,
        month=str(Month.of(item.date, loaded.publication.tz)) if item else None,
        errors=errors or {},
        other=other or [],
        conflict=conflict,
        version=opened.version,
        catalogue=loaded,
        history=history,
        buttons=_buttons(item, now),
        event=events.shown(
            values.get("event"),
            request.form.get("event_timing") if request.method == "POST" else None,
        ),
    )
    return page, 200


def _buttons(item: Item | None, now: datetime) -> list[tuple[str, str]]:
    """Return the actions offered for an item where it stands."""
    if item is None:
        return [(k, BUTTONS[k]) for k in ("draft", "schedule", "publish")]
    status = editing.status_of(item, now)
    if status == "draft":
        return [(k, BUTTONS[k]) for k in ("save", "schedule", "publish")]
    return [(k, BUTTONS[k]) for k in ("save", "retire")]


def values_from(form: Mapping[str, str]) -> dict[str, Value]:
    """Return an item's values from the form: text fields, the image, tags split at commas,
    the event (its fields all empty: none)."""
    values: dict[str, Value] = {k: form.get(k, "") for k in TEXT_FIELDS}
    values["image"] = {"url": form.get("image_url", ""), "alt": form.get("image_alt", "")}
    values["tags"] = tuple(t.strip() for t in form.get("tags", "").split(",") if t.strip())
    values["event"] = events.event_from(form)
    return values


def markdown_preview() -> str:
    """Return Markdown as the feeds and the digest show it: rendered and sanitized."""
    return markup.to_html(request.form.get("markdown", ""), _site_url())


def _site_url() -> str:
    """Return the site's URL (relative links are read against it), loading the catalogue only
    when the file changed: the preview asks for it at every pause in typing."""
    state = console()
    try:
        found = state.config.catalogue_path.stat()
    except OSError:
        return _open().catalogue.publication.site_url  # says what is wrong with it
    key = (found.st_mtime_ns, found.st_size)
    if state.site_url is None or state.site_url[0] != key:
        state.site_url = (key, _open().catalogue.publication.site_url)
    return state.site_url[1]


def revert(number: int) -> Response:
    """Undo one save as a new save, and go back to the item."""
    config = console().config
    staff = str(session.get("user", "someone"))
    try:
        saved = editing.revert(config.settings, number, staff, config.feeds_dir, config.clock())
    except editing.Invalid as exc:
        flash(f"Not reverted: {exc}", "error")
        return redirect(request.referrer or url_for("item_list"), 303)
    except DigestError as exc:
        flash(f"Not reverted: {exc}", "error")
        return redirect(url_for("item_list"), 303)
    _tell(saved, staff)
    return redirect(url_for("item_page", item_id=saved.item_id), 303)


# -- shared --------------------------------------------------------------------------------------


def _open() -> editing.Opened:
    """Return the catalogue for editing; a page says so when it does not load."""
    try:
        return editing.open_catalogue(console().config.settings)
    except CatalogueError as exc:
        first = str(exc.problems[0]) if exc.problems else "it does not load"
        raise present.Refusal(
            409,
            "The catalogue has errors",
            f"Fix them in the file first (the dashboard lists every one): {first}",
        ) from exc


def _item(loaded: Catalogue, item_id: str) -> Item:
    for item in loaded.items:
        if item.id == item_id:
            return item
    abort(404)


def _values(opened: editing.Opened, item_id: str) -> dict[str, Any]:
    try:
        return editing.values_of(opened, item_id)
    except DigestError:
        abort(404)
