"""Write one month's issue (`newsletter.issues."YYYY-MM"`) back into `items.yaml` as text, as
`publish/editing.py` writes an item: every other byte of the file stays as it was, and the result
is proved by the one validator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import yaml

from digest.errors import CatalogueError
from digest.months import Month
from digest.publish import catalogue as catalogues
from digest.publish.catalogue import Catalogue
from digest.publish.editing import normal, render, scalar, unplaced
from digest.publish.yamltext import (
    EditError,
    decode,
    indented,
    join_lines,
    last_line,
    mapping_key,
    newline_of,
    split_lines,
)

ISSUE_KEYS = ("intro", "items", "subject")


@dataclass(frozen=True, slots=True)
class IssueValues:
    """What staff set for one month's issue; None (or no ids) leaves that key out."""

    intro: str | None = None
    items: tuple[str, ...] | None = None
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class EditedIssue:
    """A catalogue's new bytes with one month's issue written, checked."""

    raw: bytes
    catalogue: Catalogue
    plan: catalogues.IssuePlan | None  # None: the month's entry was removed


def normal_issue(values: IssueValues) -> IssueValues:
    """Return `values` as they are written and read back: texts stripped, empty ones None."""
    intro = values.intro
    if intro is not None:
        intro = intro.replace("\r\n", "\n").replace("\r", "\n").strip()
        intro = "\n".join(line if line.strip() else "" for line in intro.split("\n")) or None
    subject = normal("subject", values.subject)
    items = tuple(values.items) if values.items else None
    return IssueValues(intro, items, subject if isinstance(subject, str) else None)


def _issue_lines(month: str, values: IssueValues) -> list[str]:
    """Return the month's entry (`"2025-11":` and its keys below it), without line ends."""
    out = [f'"{month}":']
    if values.intro is not None:
        out += ["  " + line if line else "" for line in render("intro", values.intro)]
    if values.items:
        ids = ", ".join(scalar("id", i, flow=True) for i in values.items)
        out.append(f"  items: [{ids}]")
    if values.subject is not None:
        out.append("  " + render("subject", values.subject)[0])
    return out


def _issue_splice(
    raw: bytes, month: str, values: IssueValues, name: str
) -> tuple[list[str], int, int, list[str]]:
    """Return the file's lines and the edit to make: replace lines [first, stop) with `new`."""
    text = decode(raw, name)
    try:
        root = yaml.compose(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        raise EditError(f"{name} is not valid YAML; run `digest check` and fix it first") from exc
    lines, nl = split_lines(text), newline_of(raw)
    found = mapping_key(root, "newsletter") if root is not None else None
    if found is None or not isinstance(found[1], yaml.MappingNode) or found[1].flow_style:
        raise EditError(
            f"{name} has no `newsletter:` block written one key a line; add one (the editors' "
            "guide shows how) to shape an issue here"
        )
    block = found[1]
    indent = block.value[0][0].start_mark.column
    entry = [] if values == IssueValues() else _issue_lines(month, values)
    issues = mapping_key(block, "issues")
    if issues is None:
        at = last_line(block, lines) + 1
        new = [" " * indent + "issues:", *indented(entry, indent + 2)] if entry else []
        return lines, at, at, join_lines(new, nl)
    key, node = issues
    if isinstance(node, yaml.MappingNode) and node.flow_style and not node.value:
        first, stop = key.start_mark.line, last_line(node, lines) + 1
        new = [" " * indent + "issues:", *indented(entry, indent + 2)] if entry else []
        return lines, first, stop, join_lines(new, nl)
    if not isinstance(node, yaml.MappingNode) or node.flow_style:
        raise EditError(
            f"{name}:{key.start_mark.line + 1}: write `issues:` with one month a line (as the "
            "editors' guide shows) to shape an issue here"
        )
    inner = node.value[0][0].start_mark.column
    mine = mapping_key(node, month)
    if mine is None:
        at = last_line(node, lines) + 1
        return lines, at, at, join_lines(indented(entry, inner), nl)
    if not entry and len(node.value) == 1:  # the only month: `issues:` goes with it
        return lines, key.start_mark.line, last_line(node, lines) + 1, []
    first, stop = mine[0].start_mark.line, last_line(mine[1], lines) + 1
    return lines, first, stop, join_lines(indented(entry, inner), nl)


def write_issue(raw: bytes, before: Catalogue, month: str, values: IssueValues) -> EditedIssue:
    """Return the catalogue with `newsletter.issues."<month>"` set to `values` (all empty: the
    month's entry removed). Every other line stays byte-identical; the result is proved by
    `catalogue.parse` and by the month's plan reading back as exactly what was written."""
    name = before.path.name
    values = normal_issue(values)
    lines, first, stop, new = _issue_splice(raw, month, values, name)
    if first > 0 and first == stop and not lines[first - 1].endswith(("\n", "\r")):
        lines[first - 1] += newline_of(raw)
    lines[first:stop] = new
    written = "".join(lines).encode("utf-8")
    after = catalogues.parse(written, before.path, name)  # the one validator, lines and all
    assert after.newsletter is not None  # noqa: S101 -- the block was found above
    plan = after.newsletter.plan(Month.parse(month))
    got = IssueValues(plan.intro, plan.items, plan.subject) if plan else IssueValues()
    if got != values:
        raise EditError(
            f'writing newsletter.issues."{month}" of {name} would not read back as entered '
            f"({values!r} came back as {got!r}); nothing was written. Please report this"
        )
    others = [dataclasses.replace(p, line=0) for p in after.newsletter.issues if p is not plan]
    assert before.newsletter is not None  # noqa: S101 -- as above
    kept = [dataclasses.replace(p, line=0) for p in before.newsletter.issues if p.month != month]
    if (
        after.publication != before.publication
        or others != kept
        or dataclasses.replace(after.newsletter, issues=())
        != dataclasses.replace(before.newsletter, issues=())
        or list(map(unplaced, before.items)) != list(map(unplaced, after.items))
    ):
        raise EditError(
            f'writing newsletter.issues."{month}" of {name} would change other parts of the '
            "file; nothing was written. Please report this"
        )
    return EditedIssue(written, after, plan)


def issue_problems(error: CatalogueError, month: str) -> tuple[dict[str, list[str]], list[str]]:
    """Split a check's problems into those of the month's issue fields and all the others."""
    prefix = f'newsletter.issues."{month}"'
    fields: dict[str, list[str]] = {}
    other: list[str] = []
    for problem in error.problems:
        where = problem.path
        if where == prefix or where.startswith(prefix + "."):
            field = where[len(prefix) + 1 :].split("[", 1)[0] or "issue"
            fields.setdefault(field if field in ISSUE_KEYS else "issue", []).append(problem.message)
        else:
            other.append(str(problem))
    return fields, other
