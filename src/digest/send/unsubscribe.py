"""One-click unsubscribe links (RFC 8058): a per-recipient token signed with the secret key.

A token is the recipient's address (base64url, lower-cased) and an HMAC-SHA256 of it under a key
derived from `DIGEST_SECRET_KEY`, so the console can tell who asked without keeping a table of
tokens, and nobody can make a token for an address without the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field


def derive(secret: str, purpose: str) -> bytes:
    """Return a key for one purpose ("session", "unsubscribe"): one secret, separate keys."""
    return hmac.new(secret.encode("utf-8"), purpose.encode("utf-8"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Links:
    """Makes and checks the unsubscribe tokens and URLs of one installation."""

    secret: str = field(repr=False)
    public_url: str | None = None  # where the console is reachable from the outside, if anywhere

    def _mac(self, address: str) -> bytes:
        key = derive(self.secret, "unsubscribe")
        return hmac.new(key, address.encode("utf-8"), hashlib.sha256).digest()

    def token(self, address: str) -> str:
        """Return the token of `address` (the same for every month and every letter case)."""
        folded = address.strip().lower()
        return f"{_b64(folded.encode('utf-8'))}.{_b64(self._mac(folded))}"

    def address(self, token: str) -> str | None:
        """Return the address a genuine token names; None for anything forged or mangled."""
        encoded, dot, mac = token.partition(".")
        if not dot or len(token) > 1024:
            return None
        try:
            folded = _unb64(encoded).decode("utf-8")
            given = _unb64(mac)
        except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
            return None
        if not folded or not hmac.compare_digest(given, self._mac(folded)):
            return None
        return folded

    def url(self, address: str) -> str:
        """Return the public one-click URL of `address`; needs `public_url`."""
        if self.public_url is None:
            raise ValueError("no public URL is configured")
        return f"{self.public_url.rstrip('/')}/unsubscribe/{self.token(address)}"
