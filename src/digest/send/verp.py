"""VERP return paths: each message's envelope sender says which month and recipient it was for.

With `newsletter.bounces.address` set to `bounces@provost.example.edu`, the digest of November
2025 for chan@example.org goes out with MAIL FROM `bounces+202511-k3jx7qa2mf@provost.example.edu`.
Every server that gives up on the message later sends its bounce to that address, so the bounce is
tied to its month and recipient even when the report inside it is mangled or names nobody.

The token is the month (`YYYYMM`), a hyphen, and the first 10 base32 letters (50 bits) of an
HMAC-SHA256 of the month and the recipient's address, under a key derived from DIGEST_SECRET_KEY
for this purpose alone. It is lower-case: servers may case-fold local parts. It does not carry the
address: reading it back (`Verp.match`) recomputes the code for each of the month's recipients in
the ledger and keeps the one that matches, so nothing is stored at send time and nobody without
the key can make a token that matches anyone (a tampered token matches nobody).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from digest.send.unsubscribe import derive

PURPOSE = "verp"
CODE_LENGTH = 10  # base32 letters: 50 bits
# "202511-" and the code: what publish/catalogue.py leaves room for (VERP_TOKEN_LENGTH).
TOKEN_LENGTH = 7 + CODE_LENGTH
_TOKEN = re.compile(rf"(\d{{4}})(0[1-9]|1[0-2])-([a-z2-7]{{{CODE_LENGTH}}})")


@functools.lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    """Return the VERP key of `secret`, derived once: a send makes a return path per reader."""
    return derive(secret, PURPOSE)


@dataclass(frozen=True, slots=True)
class Token:
    """A VERP token read back from an address: its month and its (unchecked) code."""

    month: str  # "YYYY-MM"
    code: str


@dataclass(frozen=True, slots=True)
class Verp:
    """Makes and reads the VERP return paths of one installation's bounce address."""

    secret: str = field(repr=False)
    address: str  # the plain bounce address, lower-case ("bounces@provost.example.edu")

    @property
    def _parts(self) -> tuple[str, str]:
        local, _, domain = self.address.lower().rpartition("@")
        return local, domain

    def _code(self, month: str, recipient: str) -> str:
        key = _key(self.secret)
        message = f"{month}\0{recipient.strip().lower()}".encode()
        digest = hmac.new(key, message, hashlib.sha256).digest()
        return base64.b32encode(digest).decode("ascii")[:CODE_LENGTH].lower()

    def token(self, month: str, recipient: str) -> str:
        """Return the token of (`month` "YYYY-MM", `recipient`)."""
        return f"{month.replace('-', '')}-{self._code(month, recipient)}"

    def sender(self, month: str, recipient: str) -> str:
        """Return the envelope sender of the message of `month` for `recipient`."""
        local, domain = self._parts
        return f"{local}+{self.token(month, recipient)}@{domain}"

    def read(self, address: str) -> Token | None:
        """Return the token in `address` if it is one of this bounce address's VERP forms."""
        local, _, domain = address.strip().strip("<>").lower().rpartition("@")
        own_local, own_domain = self._parts
        base, plus, token = local.partition("+")
        if domain != own_domain or base != own_local or not plus:
            return None
        found = _TOKEN.fullmatch(token)
        if found is None:
            return None
        return Token(f"{found.group(1)}-{found.group(2)}", found.group(3))

    def codes(self, month: str, recipients: Iterable[str]) -> dict[str, str]:
        """Return, by code, which of `recipients` each of `month`'s tokens was made for: one
        HMAC per recipient, however many bounces a run reads for the month."""
        return {self._code(month, recipient): recipient.strip().lower() for recipient in recipients}

    def match(self, token: Token, recipients: Iterable[str]) -> str | None:
        """Return which of `recipients` (the month's, from the ledger) `token` was made for, or
        None: the token is forged, tampered with, or for someone no longer in the ledger."""
        for recipient in recipients:
            if hmac.compare_digest(self._code(token.month, recipient), token.code):
                return recipient.strip().lower()
        return None
