"""The DNS resolver the validators use: dnspython's async stub resolver, with ACME errors.

The CA resolves challenge targets itself rather than through the operating system, so
that it can be pointed at a chosen recursive resolver (in tests: the local DNS server of
`tests.support.dns_server`) and so every failure becomes a `DNS` problem that names the
query, as RFC 8555 §6.7 expects.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Sequence

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from ca.problems import DNS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_nameserver(spec: str) -> tuple[str, int]:
    """Split "host", "host:port", "[v6]:port" or a bare IPv6 address into (address, port)."""
    try:
        return str(ipaddress.ip_address(spec)), 53  # a bare address, IPv6 included
    except ValueError:
        pass
    if spec.startswith("["):
        host, sep, port = spec[1:].partition("]:")
    else:
        host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"nameserver {spec!r} is not host, host:port or [v6]:port")
    return str(ipaddress.ip_address(host)), int(port)


_LOOPBACK = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def _is_localhost(name: str) -> bool:
    """RFC 6761 §6.3: `localhost` and names under it are loopback, answered without asking DNS."""
    name = name.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


class Resolver:
    """Address and TXT look-ups; all failures raise `DNS` naming the query."""

    def __init__(self, nameservers: Sequence[str] | None = None, *, timeout: float = 5.0) -> None:
        if nameservers:
            # configure=False: the given servers only, no search list from /etc/resolv.conf.
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(s)) for s in nameservers]
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout

    async def resolve_addresses(self, name: str) -> list[IPAddress]:
        """The A then AAAA addresses of `name` (IPv4 first); `DNS` if there are none.

        One family failing is tolerated when the other answers (a broken AAAA set-up must not
        block an IPv4 site); when both
        fail, the A query's problem is raised, so the detail does not depend on timing.
        """
        if _is_localhost(name):
            return list(_LOOPBACK)
        results = await asyncio.gather(self._addresses(name, "A"), self._addresses(name, "AAAA"),
                                       return_exceptions=True)
        addresses: list[IPAddress] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, DNS):
                raise result
            if not isinstance(result, BaseException):
                addresses.extend(result)
        if addresses:
            return addresses
        for result in results:
            if isinstance(result, DNS):
                raise result
        raise DNS(f"no A or AAAA records found for {name}")

    async def txt(self, name: str) -> list[str]:
        """Every TXT record at `name`, each record's strings joined (RFC 7208 §3.3 style)."""
        try:
            answer = await self._query(name, "TXT")
        except _NoRecords as exc:
            raise DNS(exc.detail) from None  # callers see the public problem class only
        return [b"".join(rdata.strings).decode("utf-8", errors="replace") for rdata in answer]

    async def _addresses(self, name: str, rdtype: str) -> list[IPAddress]:
        try:
            answer = await self._query(name, rdtype)
        except _NoRecords:
            return []  # one family missing is fine; resolve_addresses checks both
        return [ipaddress.ip_address(rdata.address) for rdata in answer]

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer:
        qname = _absolute(name, rdtype)
        try:
            return await self._resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise DNS(f"NXDOMAIN looking up {rdtype} for {name}") from None
        except dns.resolver.NoAnswer:
            raise _NoRecords(f"no {rdtype} records found for {name}") from None
        except dns.resolver.NoNameservers as exc:
            raise DNS(f"no nameserver answered the {rdtype} query for {name} (SERVFAIL or refused): {exc}") from None
        except dns.exception.Timeout:
            raise DNS(f"timed out looking up {rdtype} for {name}") from None
        except dns.exception.DNSException as exc:
            raise DNS(f"DNS error looking up {rdtype} for {name}: {exc}") from None


class _NoRecords(DNS):
    """NoAnswer (NODATA): the name exists but holds no record of the type asked for."""


def _absolute(name: str, rdtype: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name)  # relative to the root: no search domains apply
    except dns.exception.DNSException as exc:
        raise DNS(f"cannot look up {rdtype} for {name!r}: {exc}") from None


async def addresses_of(resolver: Resolver, host: str) -> list[IPAddress]:
    """The addresses to connect to for `host`: itself when it is an IP literal (RFC 8738)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        return await resolver.resolve_addresses(host)
