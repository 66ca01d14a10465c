"""http-01 validator against real local servers: aiohttp on 127.0.0.1/::1, the test DNS server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
from typing import AsyncIterator

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.challenges import ValidationRequest, key_authorization
from ca.challenges.http01 import Http01Validator
from ca.challenges.resolver import Resolver
from ca.identifiers import Identifier, IdentifierType
from ca.problems import DNS, TLS, Connection, IncorrectResponse, RejectedIdentifier
from tests.support.dns_server import DnsServer

THUMB = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
NAME = "site.example.test"
WELL_KNOWN = "/.well-known/acme-challenge/"
SECRET = "AWS_SECRET_ACCESS_KEY=internal-only"  # what an internal page a redirect points at would hold


def request_for(identifier: Identifier, token: str) -> ValidationRequest:
    return ValidationRequest(identifier, token, key_authorization(token, THUMB), {}, THUMB)


def dns_id(name: str = NAME) -> Identifier:
    return Identifier(IdentifierType.DNS, name)


def ip_id(value: str) -> Identifier:
    return Identifier(IdentifierType.IP, value)


def challenge_app(seen: list[web.Request], ports: dict[str, int]) -> web.Application:
    """Each token selects a behaviour, so one server serves every row.

    Redirects lead to `/answer/<token>`, which serves the key authorization of the token
    the validator started from.
    """

    async def answer(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(text=key_authorization(request.match_info["token"], THUMB))

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        token = request.match_info["token"]
        ka = key_authorization(token, THUMB)
        port, https_port = ports.get("http", 1), ports.get("https", 1)
        behaviours = {
            "ok": lambda: web.Response(text=ka),
            "ok-crlf": lambda: web.Response(text=ka + "\r\n  \n"),
            "wrong": lambda: web.Response(text="not-the-key-authorization"),
            "long-wrong": lambda: web.Response(text="y" * 200),
            "missing": lambda: web.Response(status=404, text="nothing here"),
            "other-account": lambda: web.Response(text=key_authorization(token, "another-accounts-thumbprint")),
            "empty": lambda: web.Response(text="  \r\n"),
            "to-internal-page": _redirect(f"http://{NAME}:{port}/internal"),
            "to-metadata": _redirect(f"http://169.254.169.254:{port}/latest/meta-data/"),
            "to-metadata-v6": _redirect(f"http://[fe80::a9fe:a9fe]:{port}/latest/meta-data/"),
            "to-mapped-metadata": _redirect(f"http://[::ffff:169.254.169.254]:{port}/latest/meta-data/"),
            "big": lambda: web.Response(text=ka + "x" * 20000),
            "relative": _redirect(f"/answer/{token}"),
            "other-host": _redirect(f"http://other.example.test:{port}/answer/{token}"),
            "to-https": _redirect(f"https://{NAME}:{https_port}/answer/{token}"),
            "to-plain-as-https": _redirect(f"https://{NAME}:{port}/answer/{token}"),
            "ftp": _redirect(f"ftp://{NAME}/answer/{token}"),
            "other-port": _redirect(f"http://{NAME}:{port + 1}/answer/{token}"),
            "loop": _redirect(WELL_KNOWN + "loop"),
            "no-location": lambda: web.Response(status=302),
            "nxdomain-redirect": _redirect(f"http://gone.example.test:{port}/answer/{token}"),
        }
        if token == "slow":
            await asyncio.sleep(5)
        return behaviours.get(token, behaviours["ok"])()

    async def internal(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(text=SECRET)

    app = web.Application()
    app.router.add_get(WELL_KNOWN + "{token}", handle)
    app.router.add_get("/answer/{token}", answer)
    app.router.add_get("/internal", internal)
    return app


def _redirect(location: str):
    return lambda: web.Response(status=302, headers={"Location": location})


@contextlib.asynccontextmanager
async def serve(app: web.Application, host: str, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def self_signed_context(tmp_path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-signed")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return context


@pytest.fixture
def dns():
    with DnsServer() as server:
        server.add_a(NAME, "127.0.0.1")
        server.add_a("other.example.test", "127.0.0.1")
        yield server


@pytest.fixture
async def site(dns):
    """An http server on 127.0.0.1 and an https server (self-signed) serving the same app."""
    seen: list[web.Request] = []
    ports: dict[str, int] = {}
    async with serve(challenge_app(seen, ports), "127.0.0.1") as port:
        ports["http"] = port
        yield ports, port, seen


def validator(dns: DnsServer, port: int, **kwargs) -> Http01Validator:
    return Http01Validator(Resolver([dns.nameserver], timeout=1), port=port, **kwargs)


async def test_dns_identifier_passes_and_records_the_request(dns, site):
    _, port, seen = site
    result = await validator(dns, port).validate(request_for(dns_id(), "ok"))
    assert result.record == {
        "url": f"http://{NAME}:{port}{WELL_KNOWN}ok", "hostname": NAME, "port": str(port),
        "addressesResolved": ["127.0.0.1"], "addressUsed": "127.0.0.1",
    }
    assert result.further_records == ()
    assert seen[-1].headers["Host"] == f"{NAME}:{port}"  # the identifier, never the address


async def test_trailing_whitespace_is_ignored(dns, site):
    _, port, _ = site
    await validator(dns, port).validate(request_for(dns_id(), "ok-crlf"))


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_ip_identifier_connects_to_the_address(dns, address):
    seen: list[web.Request] = []
    async with serve(challenge_app(seen, {}), address) as port:
        result = await validator(dns, port).validate(request_for(ip_id(address), "ok"))
    shown = f"[{address}]" if ":" in address else address
    assert result.record["url"] == f"http://{shown}:{port}{WELL_KNOWN}ok"
    assert result.record["addressUsed"] == address
    assert seen[-1].headers["Host"] == f"{shown}:{port}"
    assert dns.queries == []  # RFC 8738: no DNS look-up for an ip identifier


async def test_falls_back_to_the_next_address(dns):
    dns.add_a("dual.example.test", "127.0.0.1")
    dns.add_aaaa("dual.example.test", "::1")
    async with serve(challenge_app([], {}), "::1") as port:  # nothing listens on 127.0.0.1 at this port
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip("the port happens to be taken on 127.0.0.1")
        result = await validator(dns, port).validate(request_for(dns_id("dual.example.test"), "ok"))
    assert result.record["addressesResolved"] == ["127.0.0.1", "::1"]
    assert result.record["addressUsed"] == "::1"


@pytest.mark.parametrize("token, hops", [("relative", 2), ("other-host", 2)])
async def test_redirects_are_followed_and_recorded(dns, site, token, hops):
    _, port, _ = site
    result = await validator(dns, port).validate(request_for(dns_id(), token))
    assert len(result.records) == hops
    assert result.records[-1]["url"].endswith(f"/answer/{token}")


async def test_redirect_to_https_skips_certificate_checks(dns, site, tmp_path):
    ports, port, seen = site
    async with serve(challenge_app(seen, ports), "127.0.0.1", self_signed_context(tmp_path)) as https_port:
        ports["https"] = https_port
        result = await validator(dns, port, https_port=https_port).validate(request_for(dns_id(), "to-https"))
    assert result.further_records[0]["url"] == f"https://{NAME}:{https_port}/answer/to-https"
    assert seen[-1].headers["Host"] == f"{NAME}:{https_port}"


REJECTIONS = [
    # token, problem class, words the detail must contain
    ("wrong", IncorrectResponse, "does not equal the key authorization: it is 25 bytes that do not start with the challenge's token"),
    ("long-wrong", IncorrectResponse, "it is 200 bytes that do not start with the challenge's token"),
    ("missing", IncorrectResponse, "answered HTTP 404, not 200"),
    ("other-account", IncorrectResponse, "it has the token but not this account's key thumbprint"),
    ("empty", IncorrectResponse, "the body is empty"),
    ("to-internal-page", IncorrectResponse, "it is 35 bytes that do not start with the challenge's token"),
    ("to-metadata", Connection, "169.254.169.254: refused: a link-local address"),
    ("to-metadata-v6", Connection, "fe80::a9fe:a9fe: refused: a link-local address"),
    ("to-mapped-metadata", Connection, "::ffff:a9fe:a9fe: refused: a link-local address"),
    ("big", IncorrectResponse, "longer than 8192 bytes"),
    ("no-location", IncorrectResponse, "redirect but no Location header"),
    ("ftp", Connection, "only http and https redirects are followed"),
    ("other-port", Connection, "is not the http port"),
    ("loop", Connection, "too many redirects: more than 10"),
    ("to-plain-as-https", TLS, "TLS handshake"),
    ("nxdomain-redirect", DNS, "NXDOMAIN looking up A for gone.example.test"),
]


@pytest.mark.parametrize("token, problem, detail", REJECTIONS, ids=[r[0] for r in REJECTIONS])
async def test_rejections(dns, site, token, problem, detail):
    ports, port, _ = site
    ports["https"] = port
    with pytest.raises(problem) as caught:
        await validator(dns, port, https_port=port).validate(request_for(dns_id(), token))
    assert type(caught.value) is problem
    assert detail in caught.value.detail
    # RFC 8555 §10.2: nothing the validator fetched is echoed to the client
    assert "nothing here" not in caught.value.detail and SECRET not in caught.value.detail
    assert "not-the-key" not in caught.value.detail and "yyyy" not in caught.value.detail


async def test_a_link_local_ip_identifier_is_not_fetched(dns):
    with pytest.raises(Connection) as caught:
        await validator(dns, 80).validate(request_for(ip_id("169.254.169.254"), "ok"))
    assert "169.254.169.254: refused: a link-local address" in caught.value.detail


async def test_an_address_that_drops_the_connection_attempt_leaves_time_for_the_next(dns):
    """127.0.0.1's listen queue is full, so the kernel drops further SYNs and connect() hangs
    there; the site answers on ::1. With its share of the timeout spent, the validator moves on."""
    dns.add_a("dual.example.test", "127.0.0.1")
    dns.add_aaaa("dual.example.test", "::1")
    async with serve(challenge_app([], {}), "::1") as port:
        with socket.socket() as full:
            full.bind(("127.0.0.1", port))
            full.listen(0)
            fillers = [socket.socket() for _ in range(8)]
            try:
                for filler in fillers:
                    filler.setblocking(False)
                    filler.connect_ex(("127.0.0.1", port))
                await asyncio.sleep(0.2)
                result = await validator(dns, port, timeout=2).validate(request_for(dns_id("dual.example.test"), "ok"))
            finally:
                for filler in fillers:
                    filler.close()
    assert result.record["addressUsed"] == "::1"


async def test_connection_refused(dns):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the validator connects
    with pytest.raises(Connection) as caught:
        await validator(dns, port).validate(request_for(dns_id(), "ok"))
    assert f"could not connect to {NAME}" in caught.value.detail
    assert "127.0.0.1: Connection refused" in caught.value.detail


async def test_timeout(dns, site):
    _, port, _ = site
    with pytest.raises(Connection) as caught:
        await validator(dns, port, timeout=0.3).validate(request_for(dns_id(), "slow"))
    assert "timed out" in caught.value.detail


async def test_unknown_name(dns, site):
    _, port, _ = site
    with pytest.raises(DNS) as caught:
        await validator(dns, port).validate(request_for(dns_id("nowhere.example.test"), "ok"))
    assert "NXDOMAIN looking up A for nowhere.example.test" in caught.value.detail


@pytest.mark.parametrize("identifier", [
    Identifier(IdentifierType.PERMANENT_IDENTIFIER, "serial-1"),
    Identifier(IdentifierType.DNS, "*.example.test"),
])
async def test_identifier_http01_cannot_validate(dns, identifier):
    with pytest.raises(RejectedIdentifier) as caught:
        await validator(dns, 80).validate(request_for(identifier, "ok"))
    assert "http-01 cannot validate the identifier" in caught.value.detail
