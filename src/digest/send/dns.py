"""DNS lookups for `digest doctor`: TXT, address and MX records, each answer sorted into a kind.

dnspython asks the resolver `DIGEST_DNS_SERVER` names (tests, split-horizon networks), else the
system's (/etc/resolv.conf), with a short lifetime so that an unreachable resolver costs seconds,
not minutes. Nothing here raises for an answer: a missing name, a name without such records, a
timeout and a refusal are each an `Answer` of their own kind, which the doctor words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

Kind = Literal["ok", "nxdomain", "nodata", "timeout", "error"]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the resolver said about one name: `values` when `kind` is "ok", else why not."""

    name: str
    kind: Kind
    values: tuple[str, ...] = ()
    detail: str = ""

    @property
    def found(self) -> bool:
        return self.kind == "ok"

    def describe(self) -> str:
        """Return, for people, why there are no values (an empty string when there are)."""
        if self.kind == "nxdomain":
            return f"{self.name} does not exist (NXDOMAIN)"
        if self.kind == "nodata":
            return f"{self.name} has no such record"
        if self.kind == "timeout":
            return f"the resolver did not answer for {self.name} ({self.detail})"
        if self.kind == "error":
            return f"the lookup of {self.name} failed ({self.detail})"
        return ""


class Lookup:
    """A resolver: the one `server` names (an address and a port), else the system's."""

    def __init__(self, server: tuple[str, int] | None = None, *, timeout: float = 5.0) -> None:
        self.server = server
        self.timeout = timeout
        self._resolver: dns.resolver.Resolver | None = None
        self._broken = ""

    def describe(self) -> str:
        """Return which resolver is asked, for people."""
        if self.server is None:
            return "the system's resolver"
        host, port = self.server
        shown = f"[{host}]" if ":" in host else host
        return f"the resolver at {shown}:{port}"

    def resolver(self) -> dns.resolver.Resolver | None:
        """Return the dnspython resolver, made on first use; None when there is none to ask."""
        if self._resolver is None and not self._broken:
            try:
                resolver = dns.resolver.Resolver(configure=self.server is None)
            except dns.resolver.NoResolverConfiguration as exc:
                self._broken = f"no resolver is configured on this machine: {exc}"
                return None
            if self.server is not None:
                resolver.nameservers = [self.server[0]]
                resolver.port = self.server[1]
            resolver.lifetime = self.timeout
            resolver.timeout = self.timeout
            self._resolver = resolver
        return self._resolver

    def txt(self, name: str) -> Answer:
        """Return the TXT records of `name`, each one's strings joined (as SPF and DKIM read)."""
        return self._ask(name, "TXT")

    def addresses(self, name: str) -> Answer:
        """Return the IPv4 and IPv6 addresses of `name` (A and AAAA together)."""
        four = self._ask(name, "A")
        six = self._ask(name, "AAAA")
        if four.found or six.found:
            return Answer(name, "ok", four.values + six.values)
        return four if four.kind != "nodata" else six

    def mx(self, name: str) -> Answer:
        """Return the mail exchangers of `name`, by preference."""
        return self._ask(name, "MX")

    def _ask(self, name: str, rdtype: str) -> Answer:
        resolver = self.resolver()
        if resolver is None:
            return Answer(name, "error", detail=self._broken)
        try:
            answer = resolver.resolve(
                dns.name.from_text(name), rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return Answer(name, "nxdomain")
        except dns.resolver.LifetimeTimeout:
            return Answer(name, "timeout", detail=f"no reply in {self.timeout:g} s")
        except dns.resolver.NoNameservers as exc:
            return Answer(name, "error", detail=_first_line(exc))
        except (dns.exception.DNSException, ValueError) as exc:
            return Answer(name, "error", detail=_first_line(exc))
        if answer.rrset is None:
            return Answer(name, "nodata")
        records = list(answer.rrset)
        if rdtype == "MX":
            records.sort(key=lambda rdata: int(getattr(rdata, "preference", 0)))
        return Answer(name, "ok", tuple(_value(rdata, rdtype) for rdata in records))


def _value(rdata: object, rdtype: str) -> str:
    if rdtype == "TXT":
        strings: tuple[bytes, ...] = getattr(rdata, "strings", ())
        return b"".join(strings).decode("utf-8", "replace")
    if rdtype == "MX":
        return str(getattr(rdata, "exchange", "")).rstrip(".").lower()
    return str(rdata)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
