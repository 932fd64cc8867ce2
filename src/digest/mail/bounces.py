"""Classifying what comes back to the return path: bounces, complaints, auto-replies.

`classify(raw)` reads one message and says what it is, in this order:

1. an RFC 5965 feedback report (ARF, `multipart/report; report-type=feedback-report`): COMPLAINT;
2. an RFC 3464 delivery status notification (`report-type=delivery-status`): per recipient,
   `Status: 5.x.x` is HARD, `4.x.x` or `Action: delayed` is SOFT (`delivered`, `relayed` and
   `expanded` are no failure);
3. the non-standard bounces real servers send, through flufl.bounce's detectors: its permanent
   failures are HARD, its temporary ones SOFT;
4. an auto-reply (RFC 3834 `Auto-Submitted: auto-replied`, and the headers responders use in
   practice): AUTOREPLY;
5. anything else, junk included: UNKNOWN. Nothing here raises.

Text taken from a report is data, never markup or a header: `detail` is one plain line.
"""

from __future__ import annotations

import copy
import email
import email.policy
import hashlib
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses
from enum import StrEnum
from typing import TypeVar

DETAIL_LIMIT = 200

# flufl.bounce logs a detector's exception before re-raising it; classify() turns that into "no
# verdict" (UNKNOWN), so without a handler of the program's own it is not printed as a traceback.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())

T = TypeVar("T")

# Headers a report is delivered under: where a VERP return path shows.
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "To", "Envelope-To")

ENHANCED_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
ADDRESS = re.compile(r"[^@\s<>\"(),;:\\\[\]]+@[^@\s<>\"(),;:\\\[\]]+")
MESSAGE_ID = re.compile(r"<?([!-;=?-~]+@[!-;=?-~]+)>?")
QUOTED_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[!-~]+>)", re.IGNORECASE | re.MULTILINE)

# Subjects vacation responders use when they set none of the RFC 3834 headers (Outlook sends
# "Automatic reply:", older Exchange "Out of Office", Lotus Notes "... is out of the office").
# Only these fixed phrases: a person's own mail about a vacation must stay unrecognised.
AUTOREPLY_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto[- ]?(reply|response)|out of (the )?office|abwesenheitsnotiz|"
    r"r[ée]ponse automatique)\b|\bis out of the office\b|\(auto-?reply\)",
    re.IGNORECASE,
)


class Kind(StrEnum):
    """What a message that came back to the return path is."""

    HARD = "hard"
    SOFT = "soft"
    COMPLAINT = "complaint"
    AUTOREPLY = "autoreply"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Report:
    """One classified message: what it is, whom it names, and what it quotes."""

    kind: Kind
    recipients: tuple[str, ...]
    envelope_to: tuple[str, ...]
    message_id: str | None
    status: str
    detail: str
    report_id: str
    # The original message's envelope sender (an ARF report's Original-Mail-From, else the quoted
    # Return-Path): where a VERP address shows when the report went to another address (a
    # feedback loop's), or None.
    original_sender: str | None = None


@dataclass(frozen=True, slots=True)
class _Finding:
    kind: Kind
    recipients: tuple[str, ...] = ()
    status: str = ""
    detail: str = ""
    message_id: str | None = None


def classify(raw: bytes) -> Report:
    """Return what `raw` (one whole message, as the mailbox holds it) is; never raise."""
    digest_of_bytes = hashlib.sha256(raw).hexdigest()
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:  # junk is UNKNOWN, whatever the parser trips on
        return Report(Kind.UNKNOWN, (), (), None, "", "", digest_of_bytes)
    finding = _UNKNOWN
    for step in (_feedback_report, _delivery_status, _non_standard, _autoreply):
        try:
            found = step(msg)
        except Exception:  # noqa: S112 -- a detector tripping on junk is no verdict
            continue
        if found is not None:
            finding = found
            break
    quoted = finding.message_id
    if quoted is None and finding.kind in (Kind.HARD, Kind.SOFT, Kind.COMPLAINT):
        quoted = _safe(lambda: _quoted_message_id(msg, raw))
    own_id = _safe(lambda: _message_id(_header(msg, "Message-ID")))
    return Report(
        kind=finding.kind,
        recipients=finding.recipients,
        envelope_to=_safe(lambda: _envelope_to(msg)) or (),
        message_id=quoted,
        status=finding.status,
        detail=plain(finding.detail),
        report_id=own_id or digest_of_bytes,
        original_sender=_safe(lambda: _original_sender(msg)),
    )


_UNKNOWN = _Finding(Kind.UNKNOWN)


def plain(text: str) -> str:
    """Return `text` as one plain line: control and format characters gone, at most 200 long."""
    cleaned = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    line = " ".join(cleaned.split())
    return line if len(line) <= DETAIL_LIMIT else line[: DETAIL_LIMIT - 1].rstrip() + "…"


def _feedback_report(msg: Message) -> _Finding | None:
    if not _is_report(msg, "feedback-report"):
        return None
    fields = _first_part(msg, "message/feedback-report")
    if fields is None:
        return None
    rcpts = _addresses(_field_values(fields, "Original-Rcpt-To"))
    original = _original_headers(msg)
    if not rcpts and original is not None:
        rcpts = _addresses(_field_values(original, "To"))
    feedback = _header(fields, "Feedback-Type") or "abuse"
    agent = _header(fields, "User-Agent")
    detail = f"Feedback-Type: {feedback}" + (f" from {agent}" if agent else "")
    quoted = _message_id(_header(original, "Message-ID")) if original is not None else None
    return _Finding(Kind.COMPLAINT, rcpts, "", detail, quoted)


def _delivery_status(msg: Message) -> _Finding | None:
    if not _is_report(msg, "delivery-status"):
        return None
    status_part = _first_part(msg, "message/delivery-status")
    if status_part is None:
        return None
    blocks = status_part.get_payload()
    if not isinstance(blocks, list):
        return None
    hard: list[tuple[str, str, str]] = []
    soft: list[tuple[str, str, str]] = []
    named = False
    for block in blocks[1:]:  # the first block is about the message, the rest one per recipient
        if not isinstance(block, Message):
            continue
        recipient = _recipient_of(block)
        if recipient is None:
            continue
        named = True
        action = _header(block, "Action").strip().lower()
        found = ENHANCED_STATUS.search(_header(block, "Status"))
        status = found.group() if found else ""
        detail = _diagnostic(block) or f"Action: {action or 'none'}; Status: {status or 'none'}"
        if status.startswith("5") or (not status and action == "failed"):
            hard.append((recipient, status, detail))
        elif status.startswith("4") or action == "delayed":
            soft.append((recipient, status, detail))
    if not named:
        return None  # a broken DSN: the non-standard detectors may still read it
    original = _original_headers(msg)
    quoted = _message_id(_header(original, "Message-ID")) if original is not None else None
    chosen, kind = (hard, Kind.HARD) if hard else (soft, Kind.SOFT)
    if not chosen:
        return _Finding(Kind.UNKNOWN, message_id=quoted)  # delivered, relayed, expanded
    return _Finding(kind, _unique(r for r, _, _ in chosen), chosen[0][1], chosen[0][2], quoted)


def _non_standard(msg: Message) -> _Finding | None:
    if not _header(msg, "From").strip():
        # flufl.bounce 6.0's Yale detector fails on a message without a From address, and then
        # no detector after it runs: give it the null sender bounces are sent from.
        msg = copy.deepcopy(msg)
        del msg["From"]
        msg["From"] = "<>"
    # Imported here, not with the module: a send imports this module for its VERP return paths
    # and needs no detector (flufl.bounce and its 30 detectors: about 40 ms of every send).
    import flufl.bounce

    temporary, permanent = flufl.bounce.all_failures(msg)
    failures, kind, first = (
        (permanent, Kind.HARD, "5") if permanent else (temporary, Kind.SOFT, "4")
    )
    recipients = _addresses(a.decode("utf-8", "replace") for a in sorted(failures))
    if not recipients:
        return None
    status, line = "", ""
    for text in _text_parts(msg):
        for candidate in text.splitlines():
            found = ENHANCED_STATUS.search(candidate)
            if found and found.group(1) == first:
                status, line = found.group(), candidate
                break
        if status:
            break
    return _Finding(kind, recipients, status, line or _subject(msg))


def _autoreply(msg: Message) -> _Finding | None:
    submitted = _header(msg, "Auto-Submitted").strip().lower()
    precedence = _header(msg, "Precedence").strip().lower()
    marked = (
        submitted.startswith("auto-replied")
        or any(msg.get(name) is not None for name in ("X-Autoreply", "X-Autorespond"))
        or precedence == "auto_reply"
        or bool(AUTOREPLY_SUBJECT.search(_subject(msg)))
    )
    return _Finding(Kind.AUTOREPLY, detail=_subject(msg)) if marked else None


def _is_report(msg: Message, report_type: str) -> bool:
    return (
        msg.get_content_type() == "multipart/report"
        and str(msg.get_param("report-type", "")).strip().lower() == report_type
    )


def _first_part(msg: Message, content_type: str) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            payload = part.get_payload()
            if content_type == "message/delivery-status":
                return part
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            if isinstance(payload, str):
                return HeaderParser(policy=email.policy.compat32).parsestr(payload)
    return None


def _original_headers(msg: Message) -> Message | None:
    """Return the headers of the quoted original message (message/rfc822 or rfc822-headers)."""
    for content_type in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
        for part in msg.walk():
            if part.get_content_type() != content_type:
                continue
            if content_type == "message/rfc822":
                quoted = part.get_payload()
                if isinstance(quoted, list) and quoted and isinstance(quoted[0], Message):
                    return quoted[0]
                continue
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return HeaderParser(policy=email.policy.compat32).parsestr(
                    payload.decode("utf-8", "replace")
                )
    return None


def _quoted_message_id(msg: Message, raw: bytes) -> str | None:
    original = _original_headers(msg)
    if original is not None:
        found = _message_id(_header(original, "Message-ID"))
        if found:
            return found
    # Bounces that paste the original into their text (qmail, Exim, many others): the first
    # Message-ID line after the report's own headers.
    _, _, body = raw.partition(b"\n\n") if b"\r\n\r\n" not in raw else raw.partition(b"\r\n\r\n")
    matched = QUOTED_MESSAGE_ID.search(body)
    return _message_id(matched.group(1).decode("ascii")) if matched else None


def _original_sender(msg: Message) -> str | None:
    fields = (
        _first_part(msg, "message/feedback-report") if _is_report(msg, "feedback-report") else None
    )
    original = _original_headers(msg)
    for source, name in ((fields, "Original-Mail-From"), (original, "Return-Path")):
        found = _addresses(_field_values(source, name)) if source is not None else ()
        if found:
            return found[0]
    return None


def _recipient_of(block: Message) -> str | None:
    for name in ("Original-Recipient", "Final-Recipient"):
        kind, _, value = _header(block, name).partition(";")
        if kind.strip().lower() != "rfc822":
            continue
        found = _addresses([value])
        if found:
            return found[0]
    return None


def _diagnostic(block: Message) -> str:
    kind, semicolon, text = _header(block, "Diagnostic-Code").partition(";")
    return text.strip() if semicolon else kind.strip()


def _text_parts(msg: Message) -> Iterator[str]:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                yield payload.decode(part.get_content_charset() or "utf-8", "replace")


def _envelope_to(msg: Message) -> tuple[str, ...]:
    return _addresses(value for name in ENVELOPE_HEADERS for value in _field_values(msg, name))


def _field_values(msg: Message, name: str) -> list[str]:
    return [str(value) for value in msg.get_all(name, [])]


def _header(msg: Message | None, name: str) -> str:
    if msg is None:
        return ""
    value = msg.get(name)
    if isinstance(value, Header):  # raw 8-bit bytes in the header: most servers mean UTF-8
        return "".join(_decoded(chunk, charset) for chunk, charset in decode_header(value))
    return "" if value is None else str(value)


def _decoded(chunk: bytes | str, charset: str | None) -> str:
    if isinstance(chunk, str):
        return chunk
    try:
        return chunk.decode(
            charset if charset not in (None, "unknown-8bit") else "utf-8", "replace"
        )
    except LookupError:  # a charset Python does not know
        return chunk.decode("utf-8", "replace")


def _subject(msg: Message) -> str:
    value = _header(msg, "Subject")
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # a broken encoded word is shown as it came
        return value


def _addresses(values: Iterable[str]) -> tuple[str, ...]:
    """Return the plain, lower-cased addresses in `values`, each once, in order."""
    found: list[str] = []
    for _, address in getaddresses([v.replace("\r", " ").replace("\n", " ") for v in values]):
        address = address.strip().strip("<>").lower()
        if len(address) <= 254 and ADDRESS.fullmatch(address) and address.isascii():
            found.append(address)
    return _unique(found)


def _message_id(value: str) -> str | None:
    found = MESSAGE_ID.fullmatch(value.strip())
    return found.group(1) if found and len(found.group(1)) <= 250 else None


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _safe(work: Callable[[], T]) -> T | None:
    try:
        return work()
    except Exception:  # a part we cannot read is a part we leave out
        return None
