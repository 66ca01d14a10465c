"""The tls-alpn-01 validator (RFC 8737; RFC 8738 §6 for ip identifiers).

The CA opens a TLS connection to the identifier on the configured port (443 by default)
offering only the ALPN protocol "acme-tls/1", with SNI set to the domain name (for an ip
identifier: its reverse-DNS name, e.g. `1.0.0.127.in-addr.arpa`). The certificate the
server presents is self-signed by design, so the handshake verifies nothing; instead the
validator checks the certificate itself (RFC 8737 §3):

- the negotiated ALPN protocol is acme-tls/1;
- the subjectAltName holds exactly one name, the identifier (dNSName or iPAddress);
- the acmeIdentifier extension (id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31) is present,
  critical, and its value is the DER OCTET STRING of SHA-256(key authorization).

Problem classes: `Connection` when the server cannot be reached, `TLS` for a failed
handshake or a missing acme-tls/1 ALPN, `IncorrectResponse` for a certificate that fails
a check, `DNS` from the resolver, `RejectedIdentifier` for device identifiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import ssl
from typing import Any

from asn1crypto import core
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from ca.challenges import ValidationRequest, ValidationResult, key_authorization_digest
from ca.challenges.resolver import IPAddress, Resolver, addresses_of
from ca.identifiers import Identifier, IdentifierType
from ca.problems import TLS, Connection, IncorrectResponse, RejectedIdentifier

ACME_TLS_ALPN = "acme-tls/1"
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


class TlsAlpn01Validator:
    def __init__(self, resolver: Resolver, *, port: int = 443, timeout: float = 10) -> None:
        self.resolver = resolver
        self.port = port
        self.timeout = timeout

    async def validate(self, request: ValidationRequest) -> ValidationResult:
        identifier = request.identifier
        sni = server_name(identifier)
        addresses = await addresses_of(self.resolver, identifier.value)
        record: dict[str, Any] = {"hostname": identifier.value, "port": str(self.port),
                                  "addressesResolved": [str(a) for a in addresses]}
        der = await self._fetch_certificate(addresses, sni, record)
        check_certificate(der, identifier, request.key_authorization)
        return ValidationResult(record)

    async def _fetch_certificate(self, addresses: list[IPAddress], sni: str, record: dict[str, Any]) -> bytes:
        failures = []
        for address in addresses:
            record["addressUsed"] = str(address)
            try:
                return await self._handshake(address, sni)
            except ssl.SSLError as exc:
                raise TLS(f"TLS handshake with {address}:{self.port} (SNI {sni}) failed: {exc}") from None
            except (OSError, asyncio.TimeoutError) as exc:
                failures.append(f"{address}: {_describe(exc)}")  # not reached: try the next address
        raise Connection(f"could not connect to {record['hostname']} on port {self.port}: " + "; ".join(failures))

    async def _handshake(self, address: IPAddress, sni: str) -> bytes:
        async with asyncio.timeout(self.timeout):
            _, writer = await asyncio.open_connection(str(address), self.port, ssl=_client_context(),
                                                      server_hostname=sni)
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol()
            if alpn != ACME_TLS_ALPN:
                raise TLS(f"the server at {address}:{self.port} (SNI {sni}) did not negotiate the ALPN "
                          f"protocol {ACME_TLS_ALPN} (negotiated: {alpn or 'none'})")
            der = ssl_object.getpeercert(binary_form=True)
            if not der:
                raise TLS(f"the server at {address}:{self.port} (SNI {sni}) presented no certificate")
            return der
        finally:
            writer.close()  # the certificate is all we need; no application data is exchanged
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1)


def server_name(identifier: Identifier) -> str:
    """The SNI to send: the domain name, or for an IP its reverse-DNS name (RFC 8738 §6)."""
    if identifier.type is IdentifierType.DNS and not identifier.is_wildcard:
        return identifier.value
    if identifier.type is IdentifierType.IP:
        return ipaddress.ip_address(identifier.value).reverse_pointer
    raise RejectedIdentifier(f"tls-alpn-01 cannot validate the identifier {identifier}")


def check_certificate(der: bytes, identifier: Identifier, key_authorization: str) -> None:
    """Apply the RFC 8737 §3 checks to the presented certificate; raise `IncorrectResponse`."""
    try:
        cert = x509.load_der_x509_certificate(der)
        extensions = cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.InvalidVersion) as exc:
        raise IncorrectResponse(f"the tls-alpn-01 certificate cannot be parsed: {exc}") from None
    _check_san(extensions, identifier)
    _check_acme_identifier(extensions, key_authorization)


def _check_san(extensions: x509.Extensions, identifier: Identifier) -> None:
    try:
        names = list(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        raise IncorrectResponse("the tls-alpn-01 certificate has no subjectAltName extension") from None
    expected = _expected_name(identifier)
    if len(names) != 1:
        raise IncorrectResponse(f"the tls-alpn-01 certificate's subjectAltName must hold exactly one name, "
                                f"{_show(expected)}; it holds {len(names)}: {', '.join(map(_show, names))}")
    if not _same_name(names[0], expected):
        raise IncorrectResponse(f"the tls-alpn-01 certificate's subjectAltName is {_show(names[0])}, "
                                f"not {_show(expected)}")


def _check_acme_identifier(extensions: x509.Extensions, key_authorization: str) -> None:
    try:
        extension = extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    except x509.ExtensionNotFound:
        raise IncorrectResponse("the tls-alpn-01 certificate has no acmeIdentifier extension") from None
    if not extension.critical:
        raise IncorrectResponse("the tls-alpn-01 certificate's acmeIdentifier extension is not critical")
    value = extension.value
    assert isinstance(value, x509.UnrecognizedExtension)
    try:
        # Authorization ::= OCTET STRING (SIZE (32)) (RFC 8737 §3), DER-encoded in extnValue.
        digest = core.OctetString.load(value.value, strict=True).native
    except (ValueError, TypeError) as exc:
        raise IncorrectResponse(
            f"the tls-alpn-01 acmeIdentifier extension is not a DER OCTET STRING: {exc}") from None
    if len(digest) != 32:
        raise IncorrectResponse(f"the tls-alpn-01 acmeIdentifier extension holds {len(digest)} bytes, not 32")
    if digest != key_authorization_digest(key_authorization):
        raise IncorrectResponse("the tls-alpn-01 acmeIdentifier extension does not equal "
                                "SHA-256 of the key authorization")


def _expected_name(identifier: Identifier) -> x509.GeneralName:
    if identifier.type is IdentifierType.IP:
        return x509.IPAddress(ipaddress.ip_address(identifier.value))
    return x509.DNSName(identifier.value)


def _same_name(name: x509.GeneralName, expected: x509.GeneralName) -> bool:
    if isinstance(name, x509.DNSName) and isinstance(expected, x509.DNSName):
        return name.value.lower() == expected.value.lower()  # DNS names compare without case (RFC 4343)
    return name == expected


def _show(name: x509.GeneralName) -> str:
    kind = {x509.DNSName: "dNSName", x509.IPAddress: "iPAddress"}.get(type(name), type(name).__name__)
    return f"{kind} {name.value}"


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    # The certificate is self-signed by design (RFC 8737 §3): the validator checks it itself.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([ACME_TLS_ALPN])
    return context


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # "Connection refused", not asyncio's "Connect call failed"
    return str(exc) or type(exc).__name__
