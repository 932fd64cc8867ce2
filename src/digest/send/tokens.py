"""Signed, encrypted links for the public pages: confirm a sign-up, change one's preferences.

A token is a Fernet token (AES-128 in CBC mode with an HMAC-SHA256, from `cryptography`) under a
key derived from `DIGEST_SECRET_KEY` and the token's purpose, so a token made for one purpose
fails the check of every other, nobody without the key can make one, the address it carries is
not readable in the link (nor in a proxy's log), and every token survives a restart. The moment
a token was made is inside it: a confirmation link expires 48 hours after it was mailed.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from digest.send.unsubscribe import derive

CONFIRM = "confirm"
PREFERENCES = "preferences"
PURPOSES = (CONFIRM, PREFERENCES)
CONFIRM_FOR = timedelta(hours=48)
_LONGEST = 4096  # no genuine token comes near it


@functools.lru_cache(maxsize=8)
def _fernet(secret: str, purpose: str) -> Fernet:
    """Return the Fernet of `purpose`, made once: a send makes a preferences link per reader."""
    return Fernet(base64.urlsafe_b64encode(derive(secret, f"token:{purpose}")))


@dataclass(frozen=True, slots=True)
class Tokens:
    """Makes and reads the public pages' tokens of one installation."""

    secret: str = field(repr=False)

    def _fernet(self, purpose: str) -> Fernet:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        return _fernet(self.secret, purpose)

    def make(self, purpose: str, payload: dict[str, Any], now: datetime) -> str:
        """Return a token for `purpose` carrying `payload` (plain JSON values), made at `now`."""
        data = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
        token = self._fernet(purpose).encrypt_at_time(data, int(now.timestamp()))
        return token.decode("ascii").rstrip("=")

    def read(
        self, purpose: str, token: str, now: datetime, max_age: timedelta | None = None
    ) -> dict[str, Any] | None:
        """Return the payload of a genuine token for `purpose`; None if forged, mangled, made for
        another purpose, or older than `max_age`."""
        if not token or len(token) > _LONGEST:
            return None
        padded = token + "=" * (-len(token) % 4)
        fernet = self._fernet(purpose)
        try:
            if max_age is None:
                data = fernet.decrypt(padded.encode("ascii"))
            else:
                data = fernet.decrypt_at_time(
                    padded.encode("ascii"), int(max_age.total_seconds()), int(now.timestamp())
                )
            payload = json.loads(data)
        except (InvalidToken, ValueError, UnicodeEncodeError):
            return None
        return payload if isinstance(payload, dict) else None
