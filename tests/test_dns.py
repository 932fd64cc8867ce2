"""send/dns.py against a real authoritative DNS server on loopback (tests/dnsserver.py)."""

from __future__ import annotations

import pytest

from digest.send.dns import Lookup
from dnsserver import Zone


@pytest.fixture
def lookup(dns_server: Zone) -> Lookup:
    return Lookup(("127.0.0.1", dns_server.port), timeout=2.0)


def test_txt_records_are_read_whole(dns_server: Zone, lookup: Lookup) -> None:
    """A DKIM key longer than one 255-byte DNS string must be read as the one record it is."""
    long = "v=DKIM1; k=rsa; p=" + "A" * 400
    dns_server.txt("sel._domainkey.example.edu", long)
    dns_server.txt("example.edu", "v=spf1 -all", "google-site-verification=x")
    assert lookup.txt("sel._domainkey.example.edu").values == (long,)
    assert sorted(lookup.txt("example.edu").values) == ["google-site-verification=x", "v=spf1 -all"]


def test_missing_name_and_missing_record_are_told_apart(dns_server: Zone, lookup: Lookup) -> None:
    """The doctor must say "does not exist" for a typo'd domain, not "has no record"."""
    dns_server.add("example.edu", "A", "192.0.2.1")
    missing = lookup.txt("nowhere.example.edu")
    assert (missing.kind, missing.describe()) == (
        "nxdomain",
        "nowhere.example.edu does not exist (NXDOMAIN)",
    )
    empty = lookup.txt("example.edu")
    assert (empty.kind, empty.describe()) == ("nodata", "example.edu has no such record")


def test_addresses_and_mail_exchangers(dns_server: Zone, lookup: Lookup) -> None:
    """SPF's a and mx mechanisms are judged on the addresses the names really have."""
    dns_server.add("relay.example.edu", "A", "192.0.2.25")
    dns_server.add("relay.example.edu", "AAAA", "2001:db8::25")
    dns_server.add("example.edu", "MX", "20 backup.example.edu.")
    dns_server.add("example.edu", "MX", "10 relay.example.edu.")
    assert lookup.addresses("relay.example.edu").values == ("192.0.2.25", "2001:db8::25")
    assert lookup.mx("example.edu").values == ("relay.example.edu", "backup.example.edu")


def test_a_silent_resolver_is_a_timeout(dns_server: Zone) -> None:
    """A resolver that never answers must give a timeout line within the lifetime, not a hang."""
    dns_server.add("example.edu", "TXT", '"v=spf1 -all"')
    dns_server.silent.add("example.edu")
    answer = Lookup(("127.0.0.1", dns_server.port), timeout=0.3).txt("example.edu")
    assert answer.kind == "timeout"
    assert answer.describe() == "the resolver did not answer for example.edu (no reply in 0.3 s)"


def test_tcp_is_served_too(dns_server: Zone) -> None:
    """A truncated UDP answer is asked again over TCP: the test server must answer there as well."""
    import dns.message
    import dns.query

    dns_server.txt("example.edu", "v=spf1 -all")
    query = dns.message.make_query("example.edu", "TXT")
    reply = dns.query.tcp(query, "127.0.0.1", port=dns_server.port, timeout=2)
    assert [b"".join(r.strings) for r in reply.answer[0]] == [b"v=spf1 -all"]
