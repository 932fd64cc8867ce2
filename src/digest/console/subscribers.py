"""The subscriber list for staff: counts, search and filters, one person's page and history, and
the changes staff make (add, remove, resubscribe with a reason, import with a preview, export).

Every change is made through `digest.app.subscribing` with the logged-in staff name, which the
store's history records.
"""

from __future__ import annotations

from flask import Flask, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from digest.app import subscribing
from digest.console.bounces import KINDS
from digest.console.web import console
from digest.errors import DigestError

SOURCES = ("directory", "signup", "staff")
STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")


def register(app: Flask) -> None:
    """Add the subscriber pages to `app`."""
    app.add_url_rule(
        "/subscribers", view_func=listing, endpoint="subscribers_listing", methods=["GET"]
    )
    app.add_url_rule(
        "/subscribers/add", view_func=add, endpoint="subscribers_add", methods=["POST"]
    )
    app.add_url_rule(
        "/subscribers/import",
        view_func=import_csv,
        endpoint="subscribers_import_csv",
        methods=["POST"],
    )
    app.add_url_rule(
        "/subscribers/export.csv", view_func=export, endpoint="subscribers_export", methods=["GET"]
    )
    app.add_url_rule(
        "/subscribers/<address>", view_func=person, endpoint="subscribers_person", methods=["GET"]
    )
    app.add_url_rule(
        "/subscribers/<address>/remove",
        view_func=remove,
        endpoint="subscribers_remove",
        methods=["POST"],
    )
    app.add_url_rule(
        "/subscribers/<address>/resubscribe",
        view_func=resubscribe,
        endpoint="subscribers_resubscribe",
        methods=["POST"],
    )


def listing() -> str:
    """Show the counts and the rows matching the search and filters."""
    config = console().config
    asked = {name: request.args.get(name, "") for name in ("query", "status", "category", "source")}
    found = subscribing.overview(config.settings, **asked)
    return render_template(
        "subscribers.html", found=found, asked=asked, statuses=STATUSES, sources=SOURCES,
        categories=_categories(), preview=None,
    )  # fmt: skip


def _categories() -> list[str]:
    from digest.app.signup import categories

    return [slug for slug, _ in categories(console().config.settings)]


def person(address: str) -> str | tuple[str, int]:
    """Show one address's row and its whole history."""
    found = subscribing.subscriber(console().config.settings, address)
    if found is None:
        return render_template("subscriber.html", row=None, history=[], address=address), 404
    row, history = found
    bounced = subscribing.bounces_of(console().config.settings, row.key)
    return render_template(
        "subscriber.html", row=row, history=history, address=address, bounces=bounced,
        kinds=KINDS,
    )  # fmt: skip


def add() -> Response:
    """Add an address as the logged-in staff member."""
    config = console().config
    chosen = request.form.getlist("categories") or None
    try:
        row = subscribing.add(
            config.settings, request.form.get("email", ""), request.form.get("name") or None,
            chosen, session["user"], config.clock(),
        )  # fmt: skip
    except DigestError as exc:
        flash(f"Not added: {exc}", "error")
        return redirect(url_for("subscribers_listing"), 303)
    if row is None:
        flash("That address is on the list already; nothing changed.", "ok")
        return redirect(url_for("subscribers_listing"), 303)
    flash(f"Added {row.email}.", "ok")
    return redirect(url_for("subscribers_person", address=row.key), 303)


def remove(address: str) -> Response:
    """Unsubscribe an address as the logged-in staff member."""
    config = console().config
    try:
        row = subscribing.remove(config.settings, address, session["user"], config.clock())
    except DigestError as exc:
        flash(f"Not removed: {exc}", "error")
        return redirect(url_for("subscribers_listing"), 303)
    flash(f"Unsubscribed {row.email}." if row else "Off the list already; nothing changed.", "ok")
    return redirect(url_for("subscribers_person", address=address), 303)


def resubscribe(address: str) -> Response:
    """Put an address back on the list, with the reason staff give."""
    config = console().config
    try:
        row = subscribing.resubscribe(
            config.settings, address, session["user"], request.form.get("reason", ""),
            config.clock(),
        )  # fmt: skip
    except DigestError as exc:
        flash(f"Not subscribed again: {exc}", "error")
        return redirect(url_for("subscribers_person", address=address), 303)
    flash(f"{row.email} is subscribed again." if row else "On the list already.", "ok")
    return redirect(url_for("subscribers_person", address=address), 303)


def import_csv() -> str | Response:
    """Preview an uploaded directory CSV (the command's preview), or apply the one previewed."""
    config = console().config
    upload = request.files.get("file")
    text = upload.read().decode("utf-8-sig", "replace") if upload else request.form.get("text", "")
    name = (upload.filename if upload else request.form.get("name")) or "upload.csv"
    apply = request.form.get("apply") == "yes"
    try:
        done = subscribing.import_text(
            config.settings, text, name, config.clock(), dry_run=not apply
        )
    except DigestError as exc:
        flash(f"Not imported: {exc}", "error")
        return redirect(url_for("subscribers_listing"), 303)
    summary = subscribing.import_summary(done.plan, applied=done.applied)
    if apply:
        flash(summary, "ok")
        return redirect(url_for("subscribers_listing"), 303)
    found = subscribing.overview(config.settings)
    return render_template(
        "subscribers.html", found=found, asked={}, statuses=STATUSES, sources=SOURCES,
        categories=_categories(), preview=done.plan, summary=summary, text=text, name=name,
    )  # fmt: skip


def export() -> Response:
    """Download every row of the store as CSV."""
    text = subscribing.export(console().config.settings)
    response = Response(text, mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="subscribers-export.csv"'
    return response
