"""A real, programmable DNS server on the loopback interface, for tests.

It answers UDP and TCP queries on one port of 127.0.0.1 (or ::1) from a zone the test
fills in: A, AAAA and TXT records per name, optional catch-all A/AAAA answers (e.g. every
name → 127.0.0.1, so a real ACME client's domains all reach the local CA's validators),
names that answer with a chosen RCODE and names that never answer (to provoke timeouts).
It also accepts RFC 2136 UPDATE messages (any record type), optionally TSIG-signed, so a
real ACME client's dns-01 plugin (certbot-dns-rfc2136, lego's rfc2136 provider) can publish
its TXT records here. It runs in daemon threads, so synchronous tests (subprocess clients)
and asyncio tests can both use it::

    with DnsServer(catch_all_a="127.0.0.1") as dns:
        dns.add_txt("_acme-challenge.example.test", value)
        resolver = Resolver([dns.nameserver])

Messages are parsed and built with dnspython; nothing here is a mock.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from typing import Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.tsigkeyring
import dns.update

_A, _AAAA, _TXT = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class DnsServer:
    """A UDP+TCP DNS server with a zone held in memory; use as a context manager."""

    def __init__(self, *, host: str = "127.0.0.1", catch_all_a: str | None = None,
                 catch_all_aaaa: str | None = None, ttl: int = 0, tsig_keys: dict[str, str] | None = None) -> None:
        self.host = host
        # name → base64 secret; when set, UPDATE messages must be signed with one of them.
        self.keyring = dns.tsigkeyring.from_text(tsig_keys) if tsig_keys else None
        self.catch_all = {_A: catch_all_a, _AAAA: catch_all_aaaa}
        self.ttl = ttl  # 0 by default: tests change records between look-ups
        self.queries: list[tuple[str, str]] = []  # (name, type) of every question received
        self._zone: dict[str, dict[int, list[str]]] = {}
        self._rcodes: dict[str, int] = {}
        self._silent: set[str] = set()
        self._lock = threading.Lock()
        self._servers: list[socketserver.BaseServer] = []
        self.port = 0

    # --- the zone -------------------------------------------------------------------------

    def add_a(self, name: str, *addresses: str) -> None:
        self._add(name, _A, addresses)

    def add_aaaa(self, name: str, *addresses: str) -> None:
        self._add(name, _AAAA, addresses)

    def add_txt(self, name: str, *values: str) -> None:
        self._add(name, _TXT, values)

    def records(self, name: str, rdtype: str) -> list[str]:
        """The values held for `name` and type ("A", "AAAA", "TXT"), e.g. after an UPDATE."""
        with self._lock:
            return list(self._zone.get(_key(name), {}).get(dns.rdatatype.from_text(rdtype), []))

    def set_rcode(self, name: str, rcode: int = dns.rcode.SERVFAIL) -> None:
        """Answer every question for `name` with this RCODE and no records."""
        with self._lock:
            self._rcodes[_key(name)] = rcode

    def silence(self, name: str) -> None:
        """Never answer questions for `name` (the client times out)."""
        with self._lock:
            self._silent.add(_key(name))

    def remove(self, name: str) -> None:
        with self._lock:
            key = _key(name)
            self._zone.pop(key, None)
            self._rcodes.pop(key, None)
            self._silent.discard(key)

    def clear(self) -> None:
        with self._lock:
            self._zone.clear()
            self._rcodes.clear()
            self._silent.clear()

    def _add(self, name: str, rdtype: int, values: Iterable[str]) -> None:
        with self._lock:
            self._zone.setdefault(_key(name), {}).setdefault(rdtype, []).extend(values)

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def nameserver(self) -> str:
        """The "host:port" (or "[v6]:port") spelling `ca.challenges.resolver.Resolver` takes."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> "DnsServer":
        udp, tcp = _bind_pair(self)
        self._servers = [udp, tcp]
        self.port = udp.server_address[1]
        for server in self._servers:
            # A short poll interval keeps stop() (and so fixture teardown) fast.
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                             name=f"dns-{self.port}", daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- answering ------------------------------------------------------------------------

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query in wire format, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire, keyring=self.keyring)
        except dns.exception.DNSException:
            return None  # not DNS, or a bad TSIG signature: drop it
        response = dns.message.make_response(query)  # signed with the query's TSIG key, if any
        if isinstance(query, dns.update.UpdateMessage):
            response.set_rcode(self._update(query))
            return response.to_wire()
        response.flags |= dns.flags.AA
        for question in query.question:
            key = _key(question.name.to_text())
            with self._lock:
                self.queries.append((key, dns.rdatatype.to_text(question.rdtype)))
                if key in self._silent:
                    return None
                response.set_rcode(self._fill(response, question.name, question.rdtype, key))
        return response.to_wire()

    def _fill(self, response: dns.message.Message, qname: dns.name.Name, rdtype: int, key: str) -> int:
        if key in self._rcodes:
            return self._rcodes[key]
        values = self._zone.get(key, {}).get(rdtype) or self._catch_all(rdtype)
        if values:
            rdatas = [self._rdata(rdtype, v) for v in values]
            response.answer.append(dns.rrset.from_rdata_list(qname, self.ttl, rdatas))
            return dns.rcode.NOERROR
        exists = key in self._zone or any(self.catch_all.values())
        return dns.rcode.NOERROR if exists else dns.rcode.NXDOMAIN  # NOERROR, no answer: NODATA

    def _update(self, update: dns.update.UpdateMessage) -> int:
        """Apply an RFC 2136 update section (§2.5): add, delete an RRset, a name or one RR."""
        if self.keyring is not None and not update.had_tsig:
            return dns.rcode.REFUSED
        with self._lock:
            for rrset in update.update:
                key = _key(rrset.name.to_text())
                self.queries.append((key, "UPDATE"))
                types = self._zone.setdefault(key, {})
                values = [_value(rdata) for rdata in rrset]
                # dnspython keeps the class of a deletion (ANY or NONE) in `deleting`.
                if rrset.deleting == dns.rdataclass.ANY and rrset.rdtype == dns.rdatatype.ANY:
                    types.clear()
                elif rrset.deleting == dns.rdataclass.ANY:
                    types.pop(rrset.rdtype, None)
                elif rrset.deleting == dns.rdataclass.NONE:
                    types[rrset.rdtype] = [v for v in types.get(rrset.rdtype, []) if v not in values]
                else:
                    held = types.setdefault(rrset.rdtype, [])
                    held.extend(v for v in values if v not in held)
                if not any(types.values()):
                    self._zone.pop(key, None)
        return dns.rcode.NOERROR

    def _catch_all(self, rdtype: int) -> list[str]:
        value = self.catch_all.get(rdtype)
        return [value] if value else []

    @staticmethod
    def _rdata(rdtype: int, value: str) -> dns.rdata.Rdata:
        if rdtype == _TXT:
            # A TXT character-string holds at most 255 octets; longer values are split.
            raw = value.encode()
            chunks = [raw[i:i + 255] for i in range(0, max(len(raw), 1), 255)]
            return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, _TXT, chunks)
        return dns.rdata.from_text(dns.rdataclass.IN, rdtype, value)


def _value(rdata: dns.rdata.Rdata) -> str:
    if rdata.rdtype == _TXT:
        return b"".join(rdata.strings).decode()  # type: ignore[attr-defined]
    return rdata.to_text()


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.dns.answer(data)  # type: ignore[attr-defined]
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:  # RFC 7766: several length-prefixed queries may share a connection
            header = self.rfile.read(2)
            if len(header) < 2:
                return
            length = struct.unpack("!H", header)[0]
            reply = self.server.dns.answer(self.rfile.read(length))  # type: ignore[attr-defined]
            if reply is None:
                return
            self.wfile.write(struct.pack("!H", len(reply)) + reply)


def _bind_pair(owner: DnsServer) -> tuple[socketserver.BaseServer, socketserver.BaseServer]:
    """A UDP and a TCP server on the same free port (retried: the TCP port may be taken)."""
    family = socket.AF_INET6 if ":" in owner.host else socket.AF_INET
    udp_cls = type("_Udp", (socketserver.ThreadingUDPServer,), {"address_family": family, "daemon_threads": True})
    tcp_cls = type("_Tcp", (socketserver.ThreadingTCPServer,),
                   {"address_family": family, "daemon_threads": True, "allow_reuse_address": True})
    for _ in range(20):
        udp = udp_cls((owner.host, 0), _UdpHandler)
        try:
            tcp = tcp_cls((owner.host, udp.server_address[1]), _TcpHandler)
        except OSError:
            udp.server_close()
            continue
        udp.dns = tcp.dns = owner  # type: ignore[attr-defined]
        return udp, tcp
    raise OSError("no free port for both UDP and TCP on " + owner.host)
