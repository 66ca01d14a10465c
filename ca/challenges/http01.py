"""The http-01 validator (RFC 8555 §8.3; RFC 8738 §3 for ip identifiers).

The CA fetches `http://<identifier>:<port>/.well-known/acme-challenge/<token>` itself,
connecting to the addresses its own `Resolver` returns (in order, IPv4 first) with the
identifier in the Host header, and compares the body with the key authorization.
Redirects are followed by hand so that each hop is checked (http or https only, and only
to the configured ports, as Let's Encrypt does) and shown in the validationRecord.
HTTPS certificates are not verified: http-01 proves control of the host, not a WebPKI
certificate, and a redirect to https is often where a new site has no valid one yet.

Problem classes: `Connection` when the CA cannot reach the server or refuses to follow a
redirect, `TLS` when an https handshake fails, `IncorrectResponse` for what the server
sent (status, body), `DNS` from the resolver, `RejectedIdentifier` for an identifier type
http-01 cannot validate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from ca.challenges import ValidationRequest, ValidationResult
from ca.challenges.resolver import IPAddress, Resolver, addresses_of
from ca.identifiers import Identifier, IdentifierType
from ca.problems import TLS, Connection, IncorrectResponse, RejectedIdentifier

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class _Reply:
    status: int
    location: str | None
    body: bytes
    record: dict[str, Any]


class Http01Validator:
    def __init__(self, resolver: Resolver, *, port: int = 80, https_port: int = 443, timeout: float = 10,
                 max_redirects: int = 10, max_body: int = 8192) -> None:
        self.resolver = resolver
        self.port = port
        self.https_port = https_port
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.max_body = max_body
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    async def validate(self, request: ValidationRequest) -> ValidationResult:
        url = URL.build(scheme="http", host=_host_of(request.identifier), port=self.port,
                        path=f"/.well-known/acme-challenge/{request.token}")
        records: list[dict[str, Any]] = []
        session = self._client()
        for _ in range(self.max_redirects + 1):
            reply = await self._fetch(session, url)
            records.append(reply.record)
            if reply.status not in _REDIRECTS:
                _check_reply(url, reply, request.key_authorization, self.max_body)
                return ValidationResult(records[0], further_records=tuple(records[1:]))
            url = self._redirect_target(url, reply.location)
        raise Connection(f"too many redirects: more than {self.max_redirects}, the last to {url}")

    def _client(self) -> aiohttp.ClientSession:
        """The validator's HTTP client, one per event loop, made on first use."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session, self._session_loop = _session(), loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def _fetch(self, session: aiohttp.ClientSession, url: URL) -> _Reply:
        assert url.host is not None
        addresses = await addresses_of(self.resolver, url.host)
        record: dict[str, Any] = {"url": str(url), "hostname": url.host, "port": str(url.port),
                                  "addressesResolved": [str(a) for a in addresses]}
        failures = []
        # Each address gets a share of the time to connect, so that one that drops the SYN
        # silently still leaves time to try the next (the fetch itself has the whole timeout).
        connect_timeout = self.timeout / (len(addresses) + 1)
        for address in addresses:
            if (refusal := _refused_address(address)) is not None:
                failures.append(f"{address}: {refusal}")
                continue
            record["addressUsed"] = str(address)
            try:
                return await self._get(session, url, address, record, connect_timeout)
            except (aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError) as exc:
                raise TLS(f"TLS handshake with {address} for {url} failed: {exc}") from None
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                failures.append(f"{address}: {_describe(exc)}")  # not reached: try the next address
        raise Connection(f"could not connect to {url.host} for {url}: " + "; ".join(failures))

    async def _get(self, session: aiohttp.ClientSession, url: URL, address: IPAddress,
                   record: dict[str, Any], connect_timeout: float) -> _Reply:
        is_name = url.host != str(address)
        try:
            async with session.get(
                url.with_host(str(address)),
                headers={"Host": url.host_port_subcomponent or "", "Accept": "*/*", "User-Agent": "acmeda-validator"},
                allow_redirects=False, ssl=False, timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=connect_timeout),
                server_hostname=url.host if url.scheme == "https" and is_name else None,
            ) as response:
                body = await _read_capped(response, self.max_body)
                return _Reply(response.status, response.headers.get("Location"), body, record)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.ClientSSLError):
            raise  # handled by _fetch: connect failures fall back to the next address
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Connection(f"fetching {url} from {address} failed: {_describe(exc)}") from None

    def _redirect_target(self, url: URL, location: str | None) -> URL:
        if not location:
            raise IncorrectResponse(f"{url} answered with a redirect but no Location header")
        try:
            target = url.join(URL(location)).with_fragment(None)
        except ValueError as exc:
            raise Connection(f"redirect from {url} to {location!r} refused: not a valid URL ({exc})") from None
        allowed = {"http": self.port, "https": self.https_port}
        if target.scheme not in allowed:
            raise Connection(f"redirect from {url} to {target} refused: only http and https redirects are followed")
        if target.port != allowed[target.scheme]:
            raise Connection(f"redirect from {url} to {target} refused: port {target.port} is not the "
                             f"{target.scheme} port {allowed[target.scheme]}")
        if not target.host:
            raise Connection(f"redirect from {url} to {location!r} refused: the target names no host")
        return target


def _refused_address(address: IPAddress) -> str | None:
    """Why the validator will not connect to `address`, or None.

    Link-local addresses are where cloud instance metadata services answer (169.254.169.254,
    fe80::/10), and no site is served from one; a redirect must not turn the CA into a reader of
    them (RFC 8555 §10.2). Private and loopback addresses stay reachable: a private CA validates
    hosts on its own networks.
    """
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    for candidate in (address, mapped) if mapped else (address,):
        if candidate.is_link_local:
            return "refused: a link-local address (where cloud metadata services answer)"
        if candidate.is_unspecified or candidate.is_multicast:
            return "refused: not a unicast host address"
    return None


def _host_of(identifier: Identifier) -> str:
    if identifier.type not in (IdentifierType.DNS, IdentifierType.IP) or identifier.is_wildcard:
        raise RejectedIdentifier(f"http-01 cannot validate the identifier {identifier}")
    return identifier.value


def _session() -> aiohttp.ClientSession:
    # No cookies, no proxy from the environment, one new connection per request (as Boulder):
    # each fetch must reach the address the CA resolved for it and nothing else. No limit on
    # connections at once: a validation never waits for another's.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0),
                                 cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(4096):
        body += chunk
        if len(body) > limit:
            break  # enough to know it is not a key authorization; do not read it all
    return bytes(body)


def _check_reply(url: URL, reply: _Reply, key_authorization: str, max_body: int) -> None:
    # The detail never quotes what was fetched: a redirect can point the CA at any URL on the
    # http(s) ports, and the detail goes back to the client (RFC 8555 §10.2: no echo of internal
    # pages). It says how the body differs from the key authorization instead.
    if reply.status != 200:
        raise IncorrectResponse(f"{url} answered HTTP {reply.status}, not 200")
    if len(reply.body) > max_body:
        raise IncorrectResponse(f"the body at {url} does not equal the key authorization: "
                                f"it is longer than {max_body} bytes")
    # RFC 8555 §8.3: the server SHOULD ignore whitespace characters at the end of the body.
    body = reply.body.rstrip(b" \t\r\n")
    expected = key_authorization.encode("utf-8")
    if body != expected:
        raise IncorrectResponse(f"the body at {url} does not equal the key authorization: {_difference(body, expected)}")


def _difference(body: bytes, expected: bytes) -> str:
    """How `body` differs from the key authorization `token.thumbprint`, without quoting it."""
    token = expected.split(b".", 1)[0] + b"."
    if not body:
        return "the body is empty"
    if body.startswith(token):
        return "it has the token but not this account's key thumbprint (is it another account's key authorization?)"
    return f"it is {len(body)} bytes that do not start with the challenge's token"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno:
        return os.strerror(exc.os_error.errno)  # "Connection refused", not aiohttp's wrapper text
    return str(exc) or type(exc).__name__
