"""Sign each message with DKIM (RFC 6376): the key is read once, each message signed as it goes.

A `Signer` holds the private key of `newsletter.dkim` (the PEM file DIGEST_DKIM_KEY names) and
signs a message's final bytes, the ones SMTP carries, by putting a DKIM-Signature header in front
of them: nothing else in the message changes, so a Stencil's cached bytes stay as they are and the
signature is the only part made per message. dkimpy does the signing (relaxed/relaxed); the key
decides the algorithm: rsa-sha256 for an RSA key (1024 bits at least, 2048 recommended),
ed25519-sha256 (RFC 8463) for an Ed25519 key.

Which headers are signed: every one of `SIGNED`, each named in `h=` once more than the message
has it (RFC 6376 5.4.2, "over-signing"). A header the message does not have, such as
List-Unsubscribe-Post without one-click unsubscribe, or Reply-To, is still named once, so that
nobody on the way can add one, or a second List-Unsubscribe, without breaking the signature.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import dkim as dkimpy
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from digest.errors import DigestError
from digest.publish.catalogue import Dkim

# The headers every signature covers (lower case, as `h=` lists them). RFC 8058 section 4: a
# receiver offers one-click unsubscribe only when both List-Unsubscribe headers are signed.
SIGNED = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
)

# RFC 8301: receivers must ignore signatures made with RSA keys under 1024 bits.
SHORTEST_RSA = 1024
RECOMMENDED_RSA = 2048

_GENERATE = "openssl genrsa -out dkim.pem 2048"


class SigningError(DigestError):
    """The DKIM key cannot be used, or a message cannot be signed."""


@dataclass(frozen=True, slots=True)
class Signer:
    """A loaded DKIM key and where receivers find its public half: `selector._domainkey.domain`."""

    domain: str
    selector: str
    algorithm: str  # "rsa-sha256" or "ed25519-sha256"
    bits: int  # the RSA key's length; 256 for Ed25519
    public: str  # the p= of the DNS record: base64
    path: Path
    # What dkimpy signs with: an RSA key as PKCS#1 PEM, an Ed25519 key as its base64 seed.
    _key: bytes = field(repr=False)

    @property
    def name(self) -> str:
        """Return the DNS name of the TXT record that holds the public key."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record(self) -> str:
        """Return the TXT record to publish at `name`."""
        kind = "rsa" if self.algorithm == "rsa-sha256" else "ed25519"
        return f"v=DKIM1; k={kind}; p={self.public}"

    @property
    def advice(self) -> str | None:
        """Return why the key should be replaced, though it works; None when it need not be."""
        if self.algorithm == "rsa-sha256" and self.bits < RECOMMENDED_RSA:
            return (
                f"{self.path} is a {self.bits}-bit RSA key: it works, but {RECOMMENDED_RSA} bits "
                f"are recommended (RFC 8301); make one with `{_GENERATE}` and publish its "
                "p= under a new selector"
            )
        return None

    def sign(self, message: bytes) -> bytes:
        """Return `message` (wire bytes: CRLF line ends) with its DKIM-Signature in front."""
        try:
            header = dkimpy.sign(
                message,
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self._key,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=self.algorithm.encode("ascii"),
                include_headers=signed_headers(message),
                linesep=b"\r\n",
            )
        except dkimpy.DKIMException as exc:
            raise SigningError(
                f"cannot sign a message with the DKIM key {self.path}: {exc}"
            ) from exc
        return bytes(header) + message


def signed_headers(message: bytes) -> list[bytes]:
    """Return `h=` for `message`: each of SIGNED as many times as it occurs, and once more."""
    end = message.find(b"\r\n\r\n")
    head = message[: end if end >= 0 else len(message)]
    counts = dict.fromkeys(SIGNED, 1)
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue  # a folded header's next line
        name = line.partition(b":")[0].strip().lower().decode("ascii", "replace")
        if name in counts:
            counts[name] += 1
    return [name.encode("ascii") for name in SIGNED for _ in range(counts[name])]


def load(path: Path, where: Dkim) -> Signer:
    """Read the PEM private key at `path` for signing as `where` says; refuse one that cannot sign.

    No message says anything of the key but its kind and length: never a byte of it.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(
            f"{path}: cannot read the DKIM key (DIGEST_DKIM_KEY): {exc.strerror or exc}; point "
            "DIGEST_DKIM_KEY at the PEM file of the private key (relative paths are read from "
            "the catalogue's folder)"
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningError(
            f"{path}: the DKIM key is protected by a passphrase, which digest cannot type in; "
            f"write an unprotected copy readable only by digest's user: "
            f"`openssl pkey -in {path.name} -out dkim.pem` (then `chmod 600 dkim.pem`)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        # Not chained: cryptography's message may quote what it could not read.
        raise SigningError(
            f"{path}: not a PEM private key (DIGEST_DKIM_KEY wants a file that starts "
            f"'-----BEGIN PRIVATE KEY-----'); make one with `{_GENERATE}`"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        return _rsa(path, where, key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return Signer(
            where.domain,
            where.selector,
            "ed25519-sha256",
            256,
            base64.b64encode(public).decode("ascii"),
            path,
            base64.b64encode(seed),
        )
    raise SigningError(
        f"{path}: DKIM signs with RSA or Ed25519 keys, and this is another kind of key; make an "
        f"RSA one with `{_GENERATE}`"
    )


def _rsa(path: Path, where: Dkim, key: rsa.RSAPrivateKey) -> Signer:
    if key.key_size < SHORTEST_RSA:
        raise SigningError(
            f"{path}: the DKIM key is a {key.key_size}-bit RSA key, and receivers ignore "
            f"signatures from keys under {SHORTEST_RSA} bits (RFC 8301); make a "
            f"{RECOMMENDED_RSA}-bit one with `{_GENERATE}` and publish its p= at "
            f"{where.selector}._domainkey.{where.domain}"
        )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Signer(
        where.domain,
        where.selector,
        "rsa-sha256",
        key.key_size,
        base64.b64encode(public).decode("ascii"),
        path,
        pem,
    )
