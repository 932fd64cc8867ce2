"""DKIM signing, as a send sets it up: the catalogue's `newsletter.dkim` and DIGEST_DKIM_KEY.

The two go together: a block without a key would send unsigned mail the office believes signed,
and a key without a block says nothing of the domain to sign as. Either alone is an error, at
`digest check` and before anything is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from digest.app.settings import Settings
from digest.errors import DigestError

if TYPE_CHECKING:
    from digest.mail.dkim import Signer
    from digest.publish.catalogue import Catalogue


def signer(settings: Settings, catalogue: Catalogue) -> Signer | None:
    """Return the Signer every message of a send goes through, or None when nothing signs."""
    where = catalogue.mailing().dkim
    key = settings.dkim_key
    if where is None and key is None:
        return None
    if where is None:
        raise DigestError(
            f"DIGEST_DKIM_KEY is set ({key}), but {catalogue.path} has no newsletter.dkim, so "
            "digest does not know which domain and selector to sign as: add "
            "`dkim: {domain: ..., selector: ...}` under newsletter, or unset DIGEST_DKIM_KEY to "
            "leave signing to the relay"
        )
    if key is None:
        raise DigestError(
            f"{catalogue.path}: newsletter.dkim asks for every message to be signed as "
            f"{where.domain}, but DIGEST_DKIM_KEY is not set: set it to the PEM file of the "
            f"private key whose public half is published at {where.selector}._domainkey."
            f"{where.domain}, or remove newsletter.dkim to leave signing to the relay"
        )
    from digest.mail import dkim

    return dkim.load(key, where)
