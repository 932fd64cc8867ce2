"""The editor's use cases: open an item, save it (draft, schedule, publish, retire), revert a save.

A save writes `items.yaml` through `publish.editing` (only the item's lines change, the result
proved by reading it back), atomically (write aside, rename), and only when the file is still the
version the form was opened on: otherwise it is refused with what changed meanwhile, and nothing
is written. Each save is recorded in the state database with who, when and the diff; with
DIGEST_EDITOR_GIT_COMMIT=1 it is also committed when the catalogue's folder is a git repository;
then the feeds are rebuilt. The console calls these; nothing here knows about HTTP.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from digest import files
from digest.app import publishing
from digest.app.settings import Settings
from digest.errors import CatalogueError, DigestError
from digest.months import Month
from digest.publish import catalogue as catalogues
from digest.publish import editing, issue_editing
from digest.publish.catalogue import Catalogue, Item
from digest.publish.editing import Value
from digest.send.ledger import Edit

# What staff can do with an item on saving: keep its draft flag as given, or set where it stands.
ACTIONS = ("save", "draft", "schedule", "publish", "retire")
STATUSES = ("draft", "scheduled", "published")


def version_of(raw: bytes) -> str:
    """Return the version a form carries: the SHA-256 of the catalogue's bytes."""
    return hashlib.sha256(raw).hexdigest()


def status_of(item: Item, now: datetime) -> str:
    """Return where an item stands at `now`: draft, scheduled (a future date) or published."""
    if item.draft:
        return "draft"
    return "scheduled" if item.date > now else "published"


@dataclass(frozen=True, slots=True)
class Opened:
    """The catalogue as a form opens it: its bytes, their version, and what they hold."""

    raw: bytes
    version: str
    catalogue: Catalogue


def open_catalogue(settings: Settings) -> Opened:
    """Read and check the catalogue for editing; raise CatalogueError if it does not load."""
    path = settings.catalogue_path
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DigestError(f"{path}: cannot read the catalogue: {exc.strerror or exc}") from exc
    return Opened(raw, version_of(raw), catalogues.parse(raw, path, path.name))


def values_of(opened: Opened, item_id: str) -> dict[str, Value]:
    """Return an item's values as the file writes them, for the form."""
    index = index_of(opened.catalogue, item_id)
    return editing.values_at(opened.raw, opened.catalogue, index)


def index_of(loaded: Catalogue, item_id: str) -> int:
    """Return the position of the item `item_id`; raise DigestError when there is none."""
    for index, item in enumerate(loaded.items):
        if item.id == item_id:
            return index
    raise DigestError(
        f"there is no item {item_id!r} in {loaded.path.name}; it may have been removed"
    )


# -- saving --------------------------------------------------------------------------------------


class Invalid(DigestError):
    """The item as entered does not pass the catalogue's check; nothing was written."""

    def __init__(self, fields: Mapping[str, list[str]], other: list[str]) -> None:
        self.fields = dict(fields)
        self.other = list(other)
        told = [f"{k}: {'; '.join(v)}" for k, v in self.fields.items()] + self.other
        super().__init__("the item was not saved: " + " / ".join(told))


class Conflict(DigestError):
    """The catalogue changed since the form was opened; nothing was written."""

    def __init__(self, name: str, version: str, diff: str | None) -> None:
        self.version = version  # the file's version now, to save on top of after a look
        self.diff = diff  # what changed since the form was opened, when that is known
        super().__init__(
            f"{name} was changed (in git, by hand or in another tab) since this form was opened; "
            "nothing was saved: look at what changed, then save again to apply your change on "
            "top of it"
        )


@dataclass(frozen=True, slots=True)
class Saved:
    """What a save did: the item, the diff written, the history entry, git and the rebuild."""

    item_id: str
    status: str
    diff: str
    edit: int | None
    version: str
    build: publishing.BuildReport | None = None
    build_error: str | None = None
    commit: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        """Return whether the save changed the file (saving an unchanged form writes nothing)."""
        return bool(self.diff)


@dataclass(frozen=True, slots=True)
class Request:
    """One save asked for: the item (None for a new one), its values, the action and the form's
    version of the file, with the bytes it was opened on when known (for the diff of a refusal)."""

    item_id: str | None
    values: Mapping[str, Value]
    action: str
    version: str
    staff: str
    seen: bytes | None = None
    recorded: str | None = None  # what the history calls it, when not the action ("revert 3")


def save_item(settings: Settings, request: Request, feeds_dir: Path, now: datetime) -> Saved:
    """Save one item into the catalogue, record it, commit it if asked, and rebuild the feeds."""
    path = settings.catalogue_path
    opened = open_catalogue(settings)
    if opened.version != request.version:
        raise Conflict(path.name, opened.version, _diff(request.seen, opened.raw, path.name))
    values = _with_action(dict(request.values), request.action)
    if request.item_id is None:
        taken = {i.id for i in opened.catalogue.items}
        values["id"] = editing.slug_for(str(values.get("title") or ""), taken)
        edited = _edit(lambda: editing.append(opened.raw, opened.catalogue, values), None)
        before: str | None = None
    else:
        index = index_of(opened.catalogue, request.item_id)
        old = editing.values_at(opened.raw, opened.catalogue, index)
        values.pop("id", None)  # an id never changes: it is the item's identity in every feed
        changes = {
            k: v
            for k, v in values.items()
            if editing.normal(k, v) != editing.normal(k, old.get(k))
            and not (k == "draft" and not v and not old.get(k))
        }
        if not changes:
            item = opened.catalogue.items[index]
            _check_action(request.action, item, now)
            return Saved(item.id, status_of(item, now), "", None, opened.version)
        edited = _edit(lambda: editing.replace(opened.raw, opened.catalogue, index, changes), index)
        before = _json(old)
    item = edited.catalogue.items[edited.index]
    _check_action(request.action, item, now)
    diff = _diff(opened.raw, edited.raw, path.name) or ""
    _write(path, opened.version, edited.raw)
    after = editing.values_at(edited.raw, edited.catalogue, edited.index)
    version = version_of(edited.raw)
    with settings.ledger() as ledger:
        number = ledger.record_edit(
            item.id,
            request.staff,
            now,
            request.recorded or request.action,
            diff,
            before,
            _json(after),
            version,
        )
    notes = []
    commit = None
    if settings.editor_git_commit:
        commit, note = git_commit(path, request.staff, f"{_verb(request.action)} {item.id}")
        notes += [note] if note else []
    build, build_error = _rebuild(settings, feeds_dir, now)
    return Saved(
        item.id,
        status_of(item, now),
        diff,
        number,
        version,
        build,
        build_error,
        commit,
        tuple(notes),
    )


def _with_action(values: dict[str, Value], action: str) -> dict[str, Value]:
    if action not in ACTIONS:
        raise DigestError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    if action in ("draft", "retire"):
        values["draft"] = True
    elif action in ("schedule", "publish"):
        values["draft"] = False
    return values


def _check_action(action: str, item: Item, now: datetime) -> None:
    if action == "schedule" and item.date <= now:
        raise Invalid(
            {"date": ["is not in the future: choose a later date to schedule, or Publish now"]}, []
        )
    if action == "publish" and item.date > now:
        raise Invalid(
            {"date": ["is in the future: Schedule it for that date, or give today's date"]}, []
        )


def _edit(work: Any, index: int | None) -> editing.Edited:
    try:
        edited: editing.Edited = work()
    except CatalogueError as exc:
        if index is None:
            index = _new_index(exc)
        fields, other = editing.problems_by_field(exc, index)
        raise Invalid(fields, other) from exc
    return edited


def _new_index(error: CatalogueError) -> int:
    """Return the index a new item's problems carry (the highest `items[N]` in the report)."""
    found = [
        int(p.path[6 : p.path.index("]")]) for p in error.problems if p.path.startswith("items[")
    ]
    return max(found, default=-1)


def _write(path: Path, version: str, raw: bytes) -> None:
    """Replace the catalogue (write aside, rename), checking again just before that the file
    is still the version the edit started from; its permissions are kept."""
    try:
        mode = path.stat().st_mode & 0o7777
        staged = files.stage(path, raw, durable=True)
        try:
            os.chmod(staged, mode)  # the file keeps its own permissions
            now = version_of(path.read_bytes())
            if now != version:
                raise Conflict(path.name, now, None)
            os.replace(staged, path)
        except BaseException:
            files.discard(staged)
            raise
    except OSError as exc:
        raise DigestError(
            f"{path}: cannot write the catalogue ({exc.strerror or exc}); nothing was changed: "
            "check that the folder is writable by the console"
        ) from exc


def _diff(before: bytes | None, after: bytes, name: str) -> str | None:
    if before is None:
        return None
    lines = difflib.unified_diff(
        before.decode("utf-8", "replace").splitlines(keepends=True),
        after.decode("utf-8", "replace").splitlines(keepends=True),
        f"a/{name}",
        f"b/{name}",
        n=2,
    )
    return "".join(lines)


def _json(values: Mapping[str, Value]) -> str:
    return json.dumps(
        {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
        ensure_ascii=False,
        sort_keys=True,
    )


def from_json(text: str) -> dict[str, Value]:
    """Return item values recorded in the history."""
    raw: dict[str, Any] = json.loads(text)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def _verb(action: str) -> str:
    return {
        "save": "Edit",
        "draft": "Draft",
        "schedule": "Schedule",
        "publish": "Publish",
        "retire": "Retire",
        "revert": "Revert",
    }.get(action, "Edit")


def _rebuild(
    settings: Settings, feeds_dir: Path, now: datetime
) -> tuple[publishing.BuildReport | None, str | None]:
    try:
        return publishing.build(settings, feeds_dir, now, freeze=False), None
    except DigestError as exc:
        return None, str(exc)


# -- history and revert --------------------------------------------------------------------------


def history(settings: Settings, item_id: str | None = None) -> list[Edit]:
    """Return the saves recorded for `item_id` (every item's when None), newest first."""
    if not settings.has_state:
        return []
    with settings.ledger() as ledger:
        return ledger.edits(item_id)


def revert(settings: Settings, number: int, staff: str, feeds_dir: Path, now: datetime) -> Saved:
    """Undo save `number` as a new save: the item gets the values it had before it.

    Reverting the save that created an item makes it a draft: its id may be in readers' feeds,
    so it is retired rather than deleted.
    """
    with settings.ledger() as ledger:
        found = ledger.edit(number)
    if found is None:
        raise DigestError(f"there is no save number {number} in the history")
    opened = open_catalogue(settings)
    if found.before is None:
        values: dict[str, Value] = {"draft": True}
        action = "retire"
    else:
        values = from_json(found.before)
        for key in editing.KEYS:
            values.setdefault(key, None)  # keys the item did not have then are removed
        action = "save"
    request = Request(
        found.item, values, action, opened.version, staff, recorded=f"revert {number}"
    )
    return save_item(settings, request, feeds_dir, now)


# -- git -----------------------------------------------------------------------------------------


def git_commit(path: Path, staff: str, subject: str) -> tuple[str | None, str | None]:
    """Commit the catalogue alone, authored by `staff`; return (commit, None) or (None, why not).

    Nothing else staged is included (`git commit --only`). Not a repository: nothing to do.
    """
    folder = path.parent
    inside = _git(folder, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.stdout.strip() != "true":
        return None, None
    name = " ".join(staff.replace("<", "").replace(">", "").split()) or "staff"
    message = f"{subject}\n\nSaved in the digest console by {name}."
    # The committer is the repository's own identity; a machine with none set gets one that
    # says what made the commit (git refuses to commit without).
    known = _git(folder, "config", "user.email")
    identity = (
        []
        if known and known.stdout.strip()
        else ["-c", "user.name=digest console", "-c", "user.email=digest@localhost"]
    )
    done = _git(
        folder,
        *identity,
        "commit",
        "--quiet",
        "--only",
        f"--author={name} <>",
        "-m",
        message,
        "--",
        path.name,
    )
    if done is None or done.returncode != 0:
        why = (done.stderr.strip() if done else "") or "git is not installed"
        return None, f"saved, but not committed to git: {why}"
    head = _git(folder, "rev-parse", "--short", "HEAD")
    return (head.stdout.strip() if head else None), None


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(  # noqa: S603 -- fixed arguments, no shell
            ["git", "-C", str(folder), *args],  # noqa: S607 -- git from PATH, as staff run it
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None


# -- a month's issue -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """One save of a month's issue (`newsletter.issues."YYYY-MM"`) asked for from a form."""

    month: str  # "YYYY-MM"
    values: issue_editing.IssueValues
    version: str
    staff: str
    seen: bytes | None = None


@dataclass(frozen=True, slots=True)
class SavedIssue:
    """What saving an issue did: the diff written, the history entry and the rebuild."""

    month: str
    diff: str
    edit: int | None
    version: str
    build: publishing.BuildReport | None = None
    build_error: str | None = None
    commit: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        """Return whether the save changed the file."""
        return bool(self.diff)


def issue_values(opened: Opened, month: str) -> issue_editing.IssueValues:
    """Return what the catalogue sets for `month`'s issue (all None when nothing)."""
    loaded = opened.catalogue.newsletter
    plan = loaded.plan(Month.parse(month)) if loaded else None
    if plan is None:
        return issue_editing.IssueValues()
    return issue_editing.IssueValues(plan.intro, plan.items, plan.subject)


def _issue_json(values: issue_editing.IssueValues) -> str:
    return json.dumps(
        {
            "intro": values.intro,
            "items": list(values.items) if values.items else None,
            "subject": values.subject,
        },
        ensure_ascii=False,
        sort_keys=True,
    )


def save_issue(
    settings: Settings, request: IssueRequest, feeds_dir: Path, now: datetime
) -> SavedIssue:
    """Write one month's issue into the catalogue, record it, commit it if asked, rebuild."""
    path = settings.catalogue_path
    opened = open_catalogue(settings)
    if opened.version != request.version:
        raise Conflict(path.name, opened.version, _diff(request.seen, opened.raw, path.name))
    old = issue_values(opened, request.month)
    if issue_editing.normal_issue(request.values) == old:
        return SavedIssue(request.month, "", None, opened.version)
    try:
        edited = issue_editing.write_issue(
            opened.raw, opened.catalogue, request.month, request.values
        )
    except CatalogueError as exc:
        fields, other = issue_editing.issue_problems(exc, request.month)
        raise Invalid(fields, other) from exc
    diff = _diff(opened.raw, edited.raw, path.name) or ""
    _write(path, opened.version, edited.raw)
    version = version_of(edited.raw)
    after = issue_editing.normal_issue(request.values)
    with settings.ledger() as ledger:
        number = ledger.record_edit(
            f"issue {request.month}",
            request.staff,
            now,
            "issue",
            diff,
            _issue_json(old),
            _issue_json(after),
            version,
        )
    commit, notes = None, []
    if settings.editor_git_commit:
        commit, note = git_commit(path, request.staff, f"Shape the {request.month} issue")
        notes += [note] if note else []
    build, build_error = _rebuild(settings, feeds_dir, now)
    return SavedIssue(
        request.month, diff, number, version, build, build_error, commit, tuple(notes)
    )
