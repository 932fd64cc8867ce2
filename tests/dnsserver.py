"""A small authoritative DNS server for tests, written with dnspython: UDP and TCP on one port.

The test says what it serves: `records[name]` is a list of (type, text) pairs in zone-file
syntax (`("TXT", '"v=spf1 -all"')`, `("A", "192.0.2.1")`, `("MX", "10 mx.example.edu.")`).
A name that is not in `records` is NXDOMAIN; a name that is, asked for a type it lacks, is an
empty NOERROR answer (NODATA). A name in `silent` is never answered (a resolver that times out).
Every answer is authoritative, so no recursion is ever needed. `asked` counts the questions.

Names are compared in lower case without the final dot. Used through the `dns_server` fixture in
tests/conftest.py, which points DIGEST_DNS_SERVER at it.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass
class Zone:
    """What the server answers, changeable while it runs."""

    records: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    asked: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0  # set by the fixture once the server listens

    def txt(self, name: str, *texts: str) -> None:
        """Serve `texts` as TXT records of `name` (each split in 255-byte strings, as DNS must)."""
        for text in texts:
            data = text.encode()
            chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
            quoted = " ".join('"' + _escape(c.decode()) + '"' for c in chunks)
            self.add(name, "TXT", quoted)

    def add(self, name: str, rdtype: str, text: str) -> None:
        """Serve one record of `name`."""
        with self.lock:
            self.records.setdefault(_key(name), []).append((rdtype, text))

    def forget(self, name: str) -> None:
        """Make `name` NXDOMAIN again."""
        with self.lock:
            self.records.pop(_key(name), None)

    def answer(self, wire: bytes) -> bytes | None:
        """Return the reply to one query's bytes; None for a query to leave unanswered."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = _key(question.name.to_text())
            kind = dns.rdatatype.to_text(question.rdtype)
            with self.lock:
                self.asked[(name, kind)] += 1
                if name in self.silent:
                    return None
                found = self.records.get(name)
                matching = [text for rdtype, text in found or [] if rdtype == kind]
            if found is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif matching:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 300, "IN", kind, matching)
                )
        return response.to_wire()


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class DnsServer:
    """Serves a Zone on 127.0.0.1, UDP and TCP on the same free port, in daemon threads."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.udp, self.tcp = _bind_pair()
        self.port = int(self.udp.getsockname()[1])
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        self._stopping = threading.Event()

    @property
    def address(self) -> str:
        """Return the server as DIGEST_DNS_SERVER takes it: 127.0.0.1:PORT."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        # Closing a socket does not wake a thread blocked on it: a datagram wakes recvfrom, a
        # shutdown wakes accept.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waker:
            waker.sendto(b"", ("127.0.0.1", self.port))
        self.tcp.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        self.udp.close()
        self.tcp.close()

    def _serve_udp(self) -> None:
        while not self._stopping.is_set():
            try:
                wire, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            if self._stopping.is_set():
                return
            reply = self.zone.answer(wire)
            if reply is not None:
                try:
                    self.udp.sendto(reply, peer)
                except OSError:
                    return

    def _serve_tcp(self) -> None:
        while not self._stopping.is_set():
            try:
                peer, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._one_tcp, args=(peer,), daemon=True).start()

    def _one_tcp(self, peer: socket.socket) -> None:
        with peer, peer.makefile("rb") as stream:
            while True:
                prefix = stream.read(2)
                if len(prefix) < 2:
                    return
                wire = stream.read(int.from_bytes(prefix, "big"))
                reply = self.zone.answer(wire)
                if reply is None:
                    return
                peer.sendall(len(reply).to_bytes(2, "big") + reply)


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """Return a UDP and a TCP socket bound to the same free loopback port (TCP listening)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise RuntimeError("no free port for both UDP and TCP on 127.0.0.1")
