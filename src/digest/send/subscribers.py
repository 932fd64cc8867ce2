"""Load the subscriber list, `email,name[,categories]`, reporting every bad row with its line.

A row that cannot be sent to (a bad address, an undeclared category, ...) is invalid; a row whose
address an earlier row has already (in any letter case) is a duplicate, sent once, as the earlier
row says. Both are reported with their lines. Whatever keeps the file from being read as rows (a
wrong header, a stray quote, bytes that are not UTF-8) stops everything.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from digest.errors import CatalogueError, Problem
from digest.publish.catalogue import Catalogue

if TYPE_CHECKING:
    from email_validator import ValidatedEmail

# A name goes into the To header: no control characters, no line breaks of any kind.
_BAD_NAME = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
COLUMNS = ("email", "name", "categories")


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One recipient; `categories` None means every category."""

    email: str
    name: str | None
    categories: frozenset[str] | None
    line: int

    @property
    def key(self) -> str:
        """Return the identity of the recipient in the ledger: the address, case folded."""
        return self.email.lower()


@dataclass(frozen=True, slots=True)
class SubscriberList:
    """The valid, de-duplicated subscribers, in file order, and the rows left out, by line."""

    subscribers: tuple[Subscriber, ...]
    duplicates: tuple[Problem, ...] = ()  # each sent once, to its first row
    invalid: tuple[Problem, ...] = ()  # only when loaded with strict=False

    @property
    def invalid_lines(self) -> list[int]:
        """Return the lines of the invalid rows."""
        return [problem.line for problem in self.invalid if problem.line is not None]


def of_catalogue(catalogue: Catalogue, *, strict: bool = True) -> tuple[SubscriberList, Path]:
    """Load the list the catalogue's newsletter names (relative to it); return it and its name.

    `strict` as for `load`.
    """
    if catalogue.newsletter is None:
        raise CatalogueError(
            [Problem(catalogue.path.name, None, "newsletter", "there is no newsletter block")]
        )
    written = Path(catalogue.newsletter.subscribers)
    path = written if written.is_absolute() else catalogue.path.parent / written
    declared = [c.slug for c in catalogue.publication.categories]
    shown = path if catalogue.path.parent != Path() else written
    return load(path, declared, str(shown), strict=strict), shown


def load(
    path: Path, declared: Collection[str], display_name: str | None = None, *, strict: bool = True
) -> SubscriberList:
    """Read and check the list at `path`; raise CatalogueError naming every bad row's line.

    With `strict` False, invalid rows are left out and listed in the result's `invalid` instead;
    a file that cannot be read as rows is refused all the same.
    """
    name = display_name or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CatalogueError([Problem(name, None, "", f"cannot read the list: {reason}")]) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as UTF-8"
        raise CatalogueError([Problem(name, line, "", message)]) from exc
    return parse(text, declared, name, strict=strict)


def parse(
    text: str, declared: Collection[str], name: str, *, strict: bool = True
) -> SubscriberList:
    """Check subscriber CSV text (see `load`)."""
    invalid: list[Problem] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise CatalogueError([_unreadable(name, 1, exc)]) from exc
    if header is None:
        raise CatalogueError(
            [Problem(name, None, "", "the list is empty; its first line is email,name")]
        )
    columns = [column.strip().lower() for column in header]
    if (
        columns[:2] != ["email", "name"]
        or any(c not in COLUMNS for c in columns)
        or len(set(columns)) != len(columns)
    ):
        raise CatalogueError(
            [
                Problem(
                    name,
                    1,
                    "",
                    f"the header is {','.join(header)!r}; it must be email,name or "
                    "email,name,categories",
                )
            ]
        )
    first: dict[str, int] = {}  # the line of each address's first row
    subscribers: list[Subscriber] = []
    duplicates: list[Problem] = []
    while True:
        # A quoted name may span lines: report the line its row starts on, not the one it ends on.
        line = reader.line_num + 1
        try:
            row = next(reader, None)
        except csv.Error as exc:  # a stray quote swallowed the rest of a long file, say
            raise CatalogueError([*invalid, _unreadable(name, line, exc)]) from exc
        if row is None:
            break
        if not any(cell.strip() for cell in row):
            continue  # blank lines are allowed
        try:
            subscriber = _row(row, columns, declared, line)
        except _Bad as exc:
            invalid.append(Problem(name, line, exc.column, exc.message))
            continue
        earlier = first.setdefault(subscriber.key, line)
        if earlier != line:  # sent once: the first row wins
            duplicates.append(_duplicate(name, line, row[0].strip(), earlier))
            continue
        subscribers.append(subscriber)
    if invalid and strict:
        raise CatalogueError(invalid)
    return SubscriberList(tuple(subscribers), tuple(duplicates), tuple(invalid))


def _duplicate(name: str, line: int, address: str, earlier: int) -> Problem:
    """Return the report of a row whose address an earlier row has."""
    return Problem(
        name,
        line,
        "email",
        f"{address!r} is a duplicate of line {earlier} (addresses compare case-insensitively); "
        f"sent once, with line {earlier}'s name and categories",
    )


def _unreadable(name: str, line: int, exc: csv.Error) -> Problem:
    """Return the problem of a row that the csv module cannot read."""
    return Problem(
        name,
        line,
        "",
        f"cannot be read as CSV ({exc}); a double quote that opens a field must close it: "
        'look for a stray " on this line',
    )


class _Bad(Exception):
    """A row is invalid; `column` names the field."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


def address(text: str) -> str:
    """Return `text` as the address `digest` sends to, or raise ValueError saying what is wrong.

    The one check of an address, for the list's rows, test copies and the console's forms.
    SMTPUTF8 is not supported: message.build refuses a non-ASCII local part, and a domain goes
    out in its ASCII (IDNA) form, which every server and header can carry. No DNS look-ups.

    A list's rows mostly share a few domains, and email_validator spends most of its time on the
    domain, so its verdict on each domain is remembered (`_domain`) and an address whose local
    part is a plain lower-case ASCII dot-atom is answered from it. That answer is exactly the
    validator's: for such a local part it splits at the one @, keeps the local part as it is
    (already NFC, already lower case, valid as a dot-atom), checks the domain on its own, and then
    only the lengths, checked here alike. Anything else, and every refusal, is the validator's own.
    """
    local, at, domain = text.partition("@")
    if at and _PLAIN_LOCAL.fullmatch(local):
        known = _domain(domain) if len(domain) <= _DOMAIN_MAX else None
        if known is not None and len(local) + 1 + known.longest <= _ADDRESS_MAX:
            return f"{local}@{known.ascii}"
    return _validated(text)


# The local parts `address` answers from the remembered domain: email_validator's ASCII dot-atom
# (rfc_constants.DOT_ATOM_TEXT) without its capitals, which it would keep or, for a few role names
# ("Info"), lower-case; nothing here is changed by NFC. Lengths are its limits: the domain's in
# characters, the address's in UTF-8 bytes, in all three forms (as typed, normalised, ASCII). The
# local part's own limit (64) applies only in its strict mode, which `address` does not ask for.
_PLAIN_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_MAX = 253
_ADDRESS_MAX = 254


class _Domain(NamedTuple):
    ascii: str  # as the validator writes it in the address `address` returns
    longest: int  # in UTF-8 bytes: the longest of the domain as typed, normalised, and in ASCII


@functools.lru_cache(maxsize=1024)
def _domain(domain: str) -> _Domain | None:
    """Return the validator's verdict on `domain`, taken from `a@domain`; None if it refuses it.

    The local part `a` plays no part in how the domain is checked and normalised; a refusal is
    not remembered as such: the address is then checked whole, for the validator's own message.
    """
    from email_validator import EmailNotValidError

    try:
        checked = _checked(f"a@{domain}")
    except EmailNotValidError:
        return None
    forms = (domain, checked.domain, checked.ascii_domain)
    return _Domain(checked.ascii_domain, max(len(form.encode()) for form in forms))


def _validated(text: str) -> str:
    """Return `text` as email_validator normalises it, or raise ValueError with its reason."""
    from email_validator import EmailNotValidError

    try:
        checked = _checked(text)
    except EmailNotValidError as exc:
        raise ValueError(f"{text!r} is not an email address: {exc}") from exc
    return str(checked.ascii_email or checked.normalized)


def _checked(text: str) -> ValidatedEmail:
    """Return email_validator's verdict on `text`, with the one set of options digest uses."""
    from email_validator import validate_email

    return validate_email(text, check_deliverability=False, allow_smtputf8=False)


def _row(row: list[str], columns: list[str], declared: Collection[str], line: int) -> Subscriber:
    if len(row) > len(columns):
        raise _Bad(
            "",
            f"has {len(row)} fields but the header names {len(columns)}; "
            "put a name that contains a comma in double quotes",
        )
    cells = dict(zip(columns, (cell.strip() for cell in row), strict=False))
    try:
        email = address(cells.get("email", ""))
    except ValueError as exc:
        raise _Bad("email", str(exc)) from exc
    person = cells.get("name") or None
    bad = _BAD_NAME.search(person or "")
    if bad:
        code = f"U+{ord(bad.group()):04X}"
        raise _Bad("name", f"contains {code}, a control character or line break; remove it")
    chosen = [slug.strip() for slug in cells.get("categories", "").split(";") if slug.strip()]
    unknown = [slug for slug in chosen if slug not in declared]
    if unknown:
        names = ", ".join(map(repr, unknown))
        known = ", ".join(sorted(declared))
        raise _Bad("categories", f"{names} not declared in the catalogue; declared: {known}")
    return Subscriber(email, person, frozenset(chosen) or None, line)
