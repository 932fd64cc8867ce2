"""Build the email a subscriber receives: multipart/alternative, with list headers."""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy, quoprimime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from digest.errors import RenderError
from digest.months import Month
from digest.publish.catalogue import HEADER_BREAKERS, Mailbox, Publication

PLACEHOLDER_RECIPIENT = Mailbox("Subscriber", "subscriber@example.org")

# Both parts are quoted-printable, whatever their text: the encoding is then the same for every
# recipient (the email package's own choice depends on the text, and so on a name), each line is
# encoded on its own, which lets a Stencil re-encode only the personal lines, and no encoded line
# is longer than the 76 characters RFC 2045 allows (the email package's default is 78).
_WIDTH = 76
_POLICY = policy.SMTP.clone(max_line_length=_WIDTH)


@dataclass(frozen=True, slots=True)
class Envelope:
    """The addressing of one digest message."""

    sender: Mailbox
    reply_to: str | None
    recipient: Mailbox
    subject: str
    unsubscribe: str
    # The recipient's own https:// one-click unsubscribe URL (RFC 8058), when the console is public.
    one_click: str | None = None


def header_safe(value: str, what: str) -> str:
    """Return `value` if it cannot break out of its header; raise RenderError otherwise."""
    found = HEADER_BREAKERS.search(value)
    if found:
        raise RenderError(
            f"{what} contains U+{ord(found.group()):04X}, a line break, and cannot go into an "
            f"email header: {value!r}"
        )
    return value


def address(mailbox: Mailbox, what: str) -> Address:
    """Return a header-safe Address for `mailbox`."""
    name = header_safe((mailbox.name or "").strip(), f"the {what} name")
    addr = header_safe(mailbox.address, f"the {what} address")
    try:
        return Address(display_name=name, addr_spec=addr)
    except (ValueError, IndexError) as exc:
        raise RenderError(f"the {what} address {addr!r} is not valid: {exc}") from exc


def message_id(publication: Publication, month: Month, recipient: str, copy: int = 0) -> str:
    """Return the Message-ID of `month`'s digest to `recipient`: the same on every attempt.

    `copy` counts deliberate resends: each is a new message, which mail clients that hold the
    first would otherwise drop as a duplicate. Copy 0 has no mark, as before copies were counted.
    """
    head, tail = _id_parts(publication, month, copy)
    digest = hashlib.sha256(f"{month}\0{recipient.strip().lower()}".encode()).hexdigest()[:24]
    return f"{head}{digest}{tail}"


def _id_parts(publication: Publication, month: Month, copy: int) -> tuple[str, str]:
    """Return what a Message-ID of `month` has before and after its recipient's hash."""
    mark = f".r{copy}" if copy else ""
    return f"<digest.{month}.", f"{mark}@{publication.host}>"


def list_id(publication: Publication) -> str:
    """Return the List-Id header (RFC 2919): the publication's name and a label on its host."""
    words = re.sub(r"['’]", "", publication.title.lower())  # What's -> whats, not what-s
    label = re.sub(r"[^a-z0-9]+", "-", words).strip("-") or "digest"
    phrase = publication.title.replace("\\", "").replace('"', "")
    return f'"{phrase}" <{label}.{publication.host}>'


def build(
    publication: Publication,
    month: Month,
    envelope: Envelope,
    html: str,
    text: str,
    date: datetime,
    *,
    copy: int = 0,
) -> EmailMessage:
    """Return the message: text and HTML alternatives, From/To/Subject/Date and list headers.

    `copy`: which copy of the month's digest this is for the recipient (see `message_id`).
    """
    message = EmailMessage(policy=_POLICY)
    message["From"] = address(envelope.sender, "sender")
    message["To"] = address(envelope.recipient, "recipient")
    if envelope.reply_to:
        message["Reply-To"] = header_safe(envelope.reply_to, "the reply-to address")
    message["Subject"] = header_safe(envelope.subject, "the subject")
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id(publication, month, envelope.recipient.address, copy)
    message["List-Id"] = header_safe(list_id(publication), "the list id")
    unsubscribe = header_safe(envelope.unsubscribe, "the unsubscribe address")
    targets = [unsubscribe]
    if envelope.one_click:
        targets.insert(0, header_safe(envelope.one_click, "the one-click unsubscribe URL"))
    message["List-Unsubscribe"] = ", ".join(f"<{target}>" for target in targets)
    if any(target.startswith("https://") for target in targets):
        # RFC 8058: mail clients may unsubscribe with one POST, without opening a page.
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    message.set_boundary(boundary(month))
    if envelope.one_click:
        # A one-click URL is longer than 78 characters: folded at that width, the email package
        # would turn it into RFC 2047 encoded words, which no mail client reads as a URL. Header
        # lines may be 998 long (RFC 5322); the parts, already encoded, are not affected.
        message.policy = message.policy.clone(max_line_length=998)
    return message


def boundary(month: Month) -> str:
    """Return the MIME boundary of `month`'s digest.

    Fixed rather than random, so that a Stencil and `build` agree byte for byte. It can never occur
    in a part: it starts with "==", which quoted-printable text cannot contain ("=" is always
    followed by two hex digits or a line break).
    """
    return f"==============={month}.digest=="


# What fill can write without the email package: an ASCII dot-atom address, and a name of atoms
# (written as it is) or of printable ASCII without quotes or backslashes (written in quotes).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_ATOM_NAME = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*")
_QUOTABLE_NAME = re.compile(r"[!#-\[\]-~]+(?: [!#-\[\]-~]+)*")
_LINE_BREAK = re.compile("[\r\n]")
_PLAIN_URL = re.compile(r"[!#-~]+")
_MARKS = {"text": b"digest-stencil-text", "html": b"digest-stencil-html"}
_PLACEHOLDER_DATE = datetime(2000, 1, 1, tzinfo=UTC)
PLACEHOLDER_ONE_CLICK = "https://digest.invalid/stencil"


def _to_value(recipient: Mailbox) -> str | None:
    addr = recipient.address
    if not _PLAIN_ADDRESS.fullmatch(addr):
        return None
    name = (recipient.name or "").strip()
    if not name:
        return addr
    if _ATOM_NAME.fullmatch(name):
        return f"{name} <{addr}>"
    if _QUOTABLE_NAME.fullmatch(name):
        return f'"{name}" <{addr}>'
    return None


def _unsubscribe_value(envelope: Envelope, one_click: str | None) -> str:
    targets = [envelope.unsubscribe] if one_click is None else [one_click, envelope.unsubscribe]
    return ", ".join(f"<{target}>" for target in targets)


class Stencil:
    """One selection's message serialized once; per recipient only the personal lines are made.

    `fill` returns exactly the bytes `build` serializes for the same recipient (tests hold the two
    to it), or None for a recipient it cannot write without the email package (a non-ASCII name, a
    quoted address, a header that would need folding): `build` is used for that one. It is built
    from `build`'s own output for a placeholder recipient: the email package still decides every
    header and the MIME structure, and a Stencil only substitutes what differs from one recipient
    to the next: To, Date, Message-ID, the one-click List-Unsubscribe, and the lines of each part
    that hold one of `tokens`.
    """

    def __init__(
        self,
        publication: Publication,
        month: Month,
        envelope: Envelope,
        html: str,
        text: str,
        tokens: tuple[str, ...],
        skeletons: dict[Envelope, bytes] | None = None,
    ) -> None:
        self.publication = publication
        self.month = month
        self.envelope = envelope
        self.one_click = envelope.one_click is not None
        self._date: tuple[tuple[int, timedelta | None] | None, bytes, bool] = (None, b"", False)
        # What message_id hashes is the month, a NUL and the address: the first two once.
        self._id_key = f"{month}\0".encode()
        self._ids: dict[int, tuple[bytes, bytes, bool]] = {}  # by copy, see _id_line
        # The policy `build` serializes with, which folds the headers.
        self.width = 998 if self.one_click else _WIDTH
        self.policy = _POLICY.clone(max_line_length=self.width)
        placeholder = Envelope(
            envelope.sender,
            envelope.reply_to,
            Mailbox(None, "stencil@digest.invalid"),
            envelope.subject,
            envelope.unsubscribe,
            PLACEHOLDER_ONE_CLICK if self.one_click else None,
        )
        self.parts = {
            "text": _Lines(text, tokens),
            "html": _Lines(html, tokens),
        }
        # Every selection of a send has the same skeleton: `skeletons` lets them share it.
        skeleton = (skeletons or {}).get(placeholder)
        if skeleton is None:
            marks = {name: mark.decode() for name, mark in _MARKS.items()}
            skeleton = build(
                publication, month, placeholder, marks["html"], marks["text"], _PLACEHOLDER_DATE
            ).as_bytes()
            if skeletons is not None:
                skeletons[placeholder] = skeleton
        values = self._headers(placeholder.recipient, placeholder.one_click, _PLACEHOLDER_DATE)
        assert values is not None  # noqa: S101 -- the placeholders are plain by construction
        # Where each personal header and each part's text goes in the skeleton.
        slots = [(name, line) for name, line in values.items()]
        slots += [(name, mark + b"\r\n") for name, mark in _MARKS.items()]
        found = []
        # Empty when the skeleton is not as expected (a future email package that writes these
        # headers differently, say): fill then declines everyone, and `build` makes each message.
        self.pieces: list[bytes | str] = []
        self.dotted = True  # whether a constant line starts with a dot (see `fill`)
        for name, line in slots:
            start = skeleton.find(b"\n" + line) + 1 if name in values else skeleton.find(line)
            if start <= 0 or skeleton.count(line) != 1 or skeleton[start - 1] != ord("\n"):
                return
            found.append((start, start + len(line), name))
        at = 0
        for start, end, name in sorted(found):
            self.pieces += [skeleton[at:start], name]
            at = end
        self.pieces.append(skeleton[at:])
        # Every piece is whole lines, so a line starts with a dot only where a piece has one.
        constant = [piece for piece in self.pieces if isinstance(piece, bytes)]
        self.dotted = any(map(_dotted, constant)) or any(p.dotted for p in self.parts.values())

    def _headers(
        self, recipient: Mailbox, one_click: str | None, date: datetime, copy: int = 0
    ) -> dict[str, bytes] | None:
        if date.tzinfo is None or not recipient.address.isascii():
            return None  # `build` writes the zone as -0000; send_message handles SMTPUTF8
        to = _to_value(recipient)
        to_line = f"To: {to}\r\n".encode("ascii") if to else b""
        # The Message-ID line is the same length for every recipient of a copy, and the Date line
        # for every moment of the same second: whether either fits is decided once.
        prefix, suffix, fits_id = self._ids.get(copy) or self._id_line(copy)
        digest = hashlib.sha256(self._id_key + recipient.address.strip().lower().encode())
        # A send stamps many messages within the same second, which is all the header shows of
        # the moment; the key has the offset too, as equal moments in two zones compare equal.
        when = (math.floor(date.timestamp()), date.utcoffset())
        dated = self._date  # one read: a Composer may share the stencil between threads
        if when != dated[0]:
            line = f"Date: {format_datetime(date)}\r\n".encode("ascii")
            dated = self._date = (when, line, len(line) <= self.width + 2)
        if not (fits_id and dated[2]):
            return None  # the email package would fold it
        lines = {
            "date": dated[1],
            "id": prefix + digest.hexdigest()[:24].encode("ascii") + suffix,
        }
        fits = 0 < len(to_line) <= self.width + 2
        lines["to"] = to_line if fits else self._fold("To", recipient)
        if self.one_click:
            if one_click is None or not one_click.startswith("https://"):
                return None
            value = _unsubscribe_value(self.envelope, one_click)
            if not _PLAIN_URL.fullmatch(one_click) or "=?" in value or len(value) > 900:
                return None
            lines["unsubscribe"] = f"List-Unsubscribe: {value}\r\n".encode("ascii")
        elif one_click is not None:
            return None
        return lines

    def _id_line(self, copy: int) -> tuple[bytes, bytes, bool]:
        """Return the Message-ID line of `copy` around its hash, and whether it fits unfolded:
        `message_id`'s, made once per copy (its host is looked up from the site's URL)."""
        head, tail = _id_parts(self.publication, self.month, copy)
        prefix = f"Message-ID: {head}".encode("ascii")
        suffix = f"{tail}\r\n".encode("ascii")
        made = (prefix, suffix, len(prefix) + 24 + len(suffix) <= self.width + 2)
        self._ids[copy] = made
        return made

    def _fold(self, name: str, mailbox: Mailbox) -> bytes:
        """Return the header line the email package writes for `mailbox` (RFC 2047 and all)."""
        stored = self.policy.header_store_parse(name, address(mailbox, "recipient"))[1]
        return self.policy.fold_binary(name, stored)

    def fill(
        self,
        recipient: Mailbox,
        one_click: str | None,
        date: datetime,
        html_values: Mapping[str, str],
        text_values: Mapping[str, str],
        copy: int = 0,
    ) -> bytes | None:
        """Return the recipient's message as `build` would serialize it, or None (see above).

        The bytes are `Undotted` when no line of them starts with a dot, which is known from the
        pieces: the constant ones were looked at once, the personal ones are a few short lines.
        """
        if not self.pieces:
            return None
        try:
            values = self._headers(recipient, one_click, date, copy)
        except RenderError:
            return None  # `build` says what is wrong
        # A line break in a value would change the lines around it (one search over them all).
        personal = "".join((*html_values.values(), *text_values.values()))
        if values is None or _LINE_BREAK.search(personal):
            return None
        out: list[bytes] = []
        dotted = self.dotted
        for piece in self.pieces:
            if isinstance(piece, bytes):
                out.append(piece)
            elif piece in values:  # a header line
                line = values[piece]
                out.append(line)
                dotted = dotted or line[:1] == b"." or b"\n." in line
            else:  # a part: "html" or "text"
                chosen = html_values if piece == "html" else text_values
                dotted = self.parts[piece].put(out, chosen) or dotted
        made = b"".join(out)
        return made if dotted else Undotted(made)


class Undotted(bytes):
    """A message's bytes that hold no line starting with a dot ("."), as their maker knows.

    SMTP doubles such a dot (RFC 5321 4.5.2), which means looking through every message for one
    (about 20 microseconds for a 20 KB digest); a Stencil knows the answer from its pieces, and
    says so with this type, so that the transport need not look. Otherwise plain bytes.
    """

    __slots__ = ()


def _dotted(data: bytes) -> bool:
    """Return whether a line of `data` (which starts at the start of a line) starts with a dot."""
    return data[:1] == b"." or b"\n." in data


class _Line:
    """A line of a part that holds tokens: its text split around them, and the last filling.

    A line whose values are those of the recipient before (the unsubscribe line, when everyone's
    is the same address) is not filled and encoded again.
    """

    __slots__ = ("last", "texts", "tokens", "values")

    def __init__(self, parts: list[str]) -> None:
        self.texts = parts[0::2]  # the text before, between and after the tokens
        self.tokens = tuple(parts[1::2])
        # The values of its tokens, from a recipient's: one value, or a tuple of several.
        self.values = operator.itemgetter(*self.tokens)
        # The last values, the line they make (encoded) and whether it starts a line with a dot:
        # one tuple, replaced whole, so that threads sharing a stencil never mix two fillings.
        self.last: tuple[str | tuple[str, ...], bytes, bool] | None = None

    def put(self, values: Mapping[str, str]) -> tuple[bytes, bool]:
        chosen = self.values(values)
        last = self.last
        if last is None or last[0] != chosen:
            made = [self.texts[0]]
            several = chosen if len(self.tokens) > 1 else (chosen,)
            for value, text in zip(several, self.texts[1:], strict=True):
                made += (value, text)
            encoded = _encoded_line("".join(made).encode("utf-8"))
            last = self.last = (chosen, encoded, _dotted(encoded))
        return last[1], last[2]


class _Lines:
    """A part's text as set_content encodes it: the lines without tokens encoded once.

    Where the tokens stand is found once, in the text: filling a line puts each value in its
    token's place, and no value is ever searched for a token, so what a value holds (a name that
    is itself a token, say) cannot be taken for one.
    """

    def __init__(self, text: str, tokens: tuple[str, ...]) -> None:
        # Longest first: where one token starts another, the longer is the one meant.
        ordered = sorted(tokens, key=len, reverse=True)
        splitter = re.compile("(" + "|".join(map(re.escape, ordered)) + ")") if tokens else None
        # Encoded constant runs of whole lines, and each line with a token.
        self.pieces: list[bytes | _Line] = []
        run: list[bytes] = []
        for line in text.encode("utf-8").splitlines():
            parts = splitter.split(line.decode("utf-8")) if splitter else []
            if len(parts) > 1:
                if run:
                    self.pieces.append(b"".join(map(_encoded_line, run)))
                    run = []
                self.pieces.append(_Line(parts))
            else:
                run.append(line)
        if run:
            self.pieces.append(b"".join(map(_encoded_line, run)))
        elif not self.pieces:  # an empty text is encoded as one empty line
            self.pieces.append(_quoted_printable(run))
        # Each piece is whole lines: a line of the part starts with a dot only if one of its
        # pieces does, or holds one after a line break.
        self.dotted = any(_dotted(p) for p in self.pieces if isinstance(p, bytes))

    def put(self, out: list[bytes], values: Mapping[str, str]) -> bool:
        """Append the part's encoded lines, filled with `values`, to `out`; return whether a
        line that holds a token starts with a dot (the constant ones: `dotted`)."""
        dotted = False
        for piece in self.pieces:
            if isinstance(piece, bytes):
                out.append(piece)
            else:
                line, starts = piece.put(values)
                out.append(line)
                dotted = dotted or starts
        return dotted

    def encode(self, values: Mapping[str, str]) -> bytes:
        """Return the part's encoded lines, filled with `values`."""
        out: list[bytes] = []
        self.put(out, values)
        return b"".join(out)


# A line quoted-printable leaves as it is: printable ASCII but "=", spaces and tabs, and not ending
# in either (they are encoded there); up to 76 characters, which is never broken.
_UNENCODED = re.compile(rb"[\t !-<>-~]*[!-<>-~]")


def _encoded_line(line: bytes) -> bytes:
    """Return one line (no line break in it) as `_quoted_printable` encodes it, in CRLF.

    Quoted-printable encodes each line on its own, so a text is the concatenation of its encoded
    lines. Most lines are left as they are, which is seen at once; any other is encoded once
    (`_encoded`): a send's selections share most of their lines (each item appears in many).
    """
    if len(line) <= _WIDTH and (not line or _UNENCODED.fullmatch(line)):
        return line + b"\r\n"
    return _encoded(line)


@functools.lru_cache(maxsize=16384)
def _encoded(line: bytes) -> bytes:
    return _quoted_printable([line])


def _quoted_printable(lines: list[bytes]) -> bytes:
    """Return UTF-8 `lines` encoded as set_content(cte="quoted-printable") encodes them, in CRLF."""
    body = b"\n".join(lines) + b"\n"
    encoded = quoprimime.body_encode(body.decode("latin-1"), _WIDTH)
    return encoded.replace("\n", "\r\n").encode("ascii")
