"""tls-alpn-01 validator against a real asyncio TLS server presenting generated certificates."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from typing import AsyncIterator

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.challenges import ValidationRequest, key_authorization, key_authorization_digest
from ca.challenges.resolver import Resolver
from ca.challenges.tlsalpn01 import ACME_TLS_ALPN, ID_PE_ACME_IDENTIFIER, TlsAlpn01Validator, check_certificate, server_name
from ca.identifiers import Identifier, IdentifierType
from ca.problems import DNS, TLS, Connection, IncorrectResponse, RejectedIdentifier
from tests.support.dns_server import DnsServer

THUMB = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KA = key_authorization(TOKEN, THUMB)
NAME = "tls.example.test"


@dataclass
class Cert:
    """What the challenge certificate holds; each negative row changes one field."""

    names: list[x509.GeneralName] = field(default_factory=lambda: [x509.DNSName(NAME)])
    ext_value: bytes | None = field(default_factory=lambda: core.OctetString(key_authorization_digest(KA)).dump())
    critical: bool = True


def build(spec: Cert, tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-tls-alpn-01")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(hours=1)))
    if spec.names:
        builder = builder.add_extension(x509.SubjectAlternativeName(spec.names), critical=False)
    if spec.ext_value is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, spec.ext_value),
                                        critical=spec.critical)
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@contextlib.asynccontextmanager
async def tls_server(cert: tuple[str, str], *, host: str = "127.0.0.1", alpn: list[str] | None = None,
                     sni_seen: list[str] | None = None) -> AsyncIterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    if sni_seen is not None:
        context.sni_callback = lambda sock, name, ctx: sni_seen.append(name)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, host, 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture
def zone():
    with DnsServer() as server:
        server.add_a(NAME, "127.0.0.1")
        yield server


def request_for(identifier: Identifier) -> ValidationRequest:
    return ValidationRequest(identifier, TOKEN, KA, {}, THUMB)


def validator(zone: DnsServer, port: int, timeout: float = 2) -> TlsAlpn01Validator:
    return TlsAlpn01Validator(Resolver([zone.nameserver], timeout=1), port=port, timeout=timeout)


async def test_dns_identifier_passes(zone, tmp_path):
    sni: list[str] = []
    async with tls_server(build(Cert(), tmp_path), alpn=[ACME_TLS_ALPN], sni_seen=sni) as port:
        result = await validator(zone, port).validate(request_for(Identifier(IdentifierType.DNS, NAME)))
    assert result.record == {"hostname": NAME, "port": str(port), "addressesResolved": ["127.0.0.1"],
                             "addressUsed": "127.0.0.1"}
    assert sni == [NAME]


@pytest.mark.parametrize("address, reverse", [
    ("127.0.0.1", "1.0.0.127.in-addr.arpa"),
    ("::1", "1." + "0." * 31 + "ip6.arpa"),
])
async def test_ip_identifier_uses_reverse_name_as_sni(zone, tmp_path, address, reverse):
    sni: list[str] = []
    cert = build(Cert(names=[x509.IPAddress(ipaddress.ip_address(address))]), tmp_path)
    async with tls_server(cert, host=address, alpn=[ACME_TLS_ALPN], sni_seen=sni) as port:
        result = await validator(zone, port).validate(request_for(Identifier(IdentifierType.IP, address)))
    assert sni == [reverse]
    assert result.record["addressUsed"] == address
    assert zone.queries == []


def _digest_der(data: bytes) -> bytes:
    return core.OctetString(data).dump()


REJECTIONS = [
    # row id, certificate, problem class, words the detail must contain
    ("wrong-digest", Cert(ext_value=_digest_der(key_authorization_digest(KA + "x"))),
     IncorrectResponse, "acmeIdentifier extension does not equal SHA-256 of the key authorization"),
    ("short-digest", Cert(ext_value=_digest_der(b"\x00" * 31)), IncorrectResponse, "holds 31 bytes, not 32"),
    ("raw-digest-not-der", Cert(ext_value=key_authorization_digest(KA)), IncorrectResponse,
     "acmeIdentifier extension is not a DER OCTET STRING"),
    ("integer-not-octet-string", Cert(ext_value=core.Integer(5).dump()), IncorrectResponse,
     "acmeIdentifier extension is not a DER OCTET STRING"),
    ("not-critical", Cert(critical=False), IncorrectResponse, "acmeIdentifier extension is not critical"),
    ("no-extension", Cert(ext_value=None), IncorrectResponse, "has no acmeIdentifier extension"),
    ("wrong-san", Cert(names=[x509.DNSName("other.example.test")]), IncorrectResponse,
     "subjectAltName is dNSName other.example.test, not dNSName tls.example.test"),
    ("two-sans", Cert(names=[x509.DNSName(NAME), x509.DNSName("other.example.test")]), IncorrectResponse,
     "must hold exactly one name, dNSName tls.example.test; it holds 2"),
    ("ip-san-for-dns", Cert(names=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), IncorrectResponse,
     "subjectAltName is iPAddress 127.0.0.1, not dNSName tls.example.test"),
    ("no-san", Cert(names=[]), IncorrectResponse, "has no subjectAltName extension"),
]


@pytest.mark.parametrize("case, cert, problem, detail", REJECTIONS, ids=[r[0] for r in REJECTIONS])
async def test_certificate_rejections(zone, tmp_path, case, cert, problem, detail):
    async with tls_server(build(cert, tmp_path), alpn=[ACME_TLS_ALPN]) as port:
        with pytest.raises(problem) as caught:
            await validator(zone, port).validate(request_for(Identifier(IdentifierType.DNS, NAME)))
    assert type(caught.value) is problem
    assert detail in caught.value.detail


@pytest.mark.parametrize("alpn", [None, ["http/1.1"]], ids=["server-without-alpn", "server-other-alpn"])
async def test_alpn_not_negotiated(zone, tmp_path, alpn):
    async with tls_server(build(Cert(), tmp_path), alpn=alpn) as port:
        with pytest.raises(TLS) as caught:
            await validator(zone, port).validate(request_for(Identifier(IdentifierType.DNS, NAME)))
    assert "did not negotiate the ALPN protocol acme-tls/1 (negotiated: none)" in caught.value.detail


async def test_handshake_failure_is_a_tls_problem(zone):
    async def not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_tls, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(TLS) as caught:
            await validator(zone, port).validate(request_for(Identifier(IdentifierType.DNS, NAME)))
    assert "TLS handshake with 127.0.0.1" in caught.value.detail


async def test_connection_refused(zone):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Connection) as caught:
        await validator(zone, port).validate(request_for(Identifier(IdentifierType.DNS, NAME)))
    assert f"could not connect to {NAME} on port {port}: 127.0.0.1: Connection refused" in caught.value.detail


async def test_handshake_timeout(zone):
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answers the ClientHello

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(Connection) as caught:
            await validator(zone, port, timeout=0.3).validate(request_for(Identifier(IdentifierType.DNS, NAME)))
        for writer in accepted:  # Server.close() leaves accepted connections open before 3.12
            writer.close()
    assert "timed out" in caught.value.detail


async def test_unknown_name(zone):
    with pytest.raises(DNS) as caught:
        await validator(zone, 443).validate(request_for(Identifier(IdentifierType.DNS, "gone.example.test")))
    assert "NXDOMAIN looking up A for gone.example.test" in caught.value.detail


@pytest.mark.parametrize("identifier", [
    Identifier(IdentifierType.HARDWARE_MODULE, "hwm"),
    Identifier(IdentifierType.DNS, "*.example.test"),
])
def test_identifier_tlsalpn01_cannot_validate(identifier):
    with pytest.raises(RejectedIdentifier) as caught:
        server_name(identifier)
    assert "tls-alpn-01 cannot validate the identifier" in caught.value.detail


async def test_dns_name_compares_without_case(zone, tmp_path):
    """RFC 4343: a certificate for Tls.Example.TEST proves tls.example.test."""
    async with tls_server(build(Cert(names=[x509.DNSName("Tls.Example.TEST")]), tmp_path), alpn=[ACME_TLS_ALPN]) as port:
        result = await validator(zone, port).validate(request_for(Identifier(IdentifierType.DNS, NAME)))
    assert result.record["addressUsed"] == "127.0.0.1"


def test_certificate_with_an_unknown_version_is_an_incorrect_response(tmp_path):
    cert_path, _ = build(Cert(), tmp_path)
    der = x509.load_pem_x509_certificate(open(cert_path, "rb").read()).public_bytes(serialization.Encoding.DER)
    bad = der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x05", 1)  # version v3 (2) -> 5
    assert bad != der
    with pytest.raises(IncorrectResponse) as caught:
        check_certificate(bad, Identifier(IdentifierType.DNS, NAME), KA)
    assert "certificate cannot be parsed" in caught.value.detail
