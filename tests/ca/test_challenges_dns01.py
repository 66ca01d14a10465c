"""dns-01 validator and the resolver, against the real local DNS server of tests.support."""

from __future__ import annotations

import base64
import hashlib
import ipaddress

import dns.asyncquery
import dns.message
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

from ca.challenges import ValidationRequest, dns01_txt_value, key_authorization
from ca.challenges.dns01 import Dns01Validator
from ca.challenges.resolver import Resolver, parse_nameserver
from ca.identifiers import Identifier, IdentifierType
from ca.problems import DNS, IncorrectResponse, RejectedIdentifier
from tests.support.dns_server import DnsServer

THUMB = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KA = key_authorization(TOKEN, THUMB)


def request_for(value: str, kind: IdentifierType = IdentifierType.DNS) -> ValidationRequest:
    return ValidationRequest(Identifier(kind, value), TOKEN, KA, {}, THUMB)


@pytest.fixture
def zone():
    with DnsServer() as server:
        yield server


def dns01(server: DnsServer, timeout: float = 1) -> Dns01Validator:
    return Dns01Validator(Resolver([server.nameserver], timeout=timeout))


def test_key_authorization_and_txt_value():
    assert KA == TOKEN + "." + THUMB
    digest = hashlib.sha256(KA.encode()).digest()
    assert dns01_txt_value(KA) == base64.b64encode(digest, altchars=b"-_").decode().rstrip("=")
    assert "=" not in dns01_txt_value(KA) and len(dns01_txt_value(KA)) == 43


async def test_matching_record_among_others_passes(zone):
    zone.add_txt("_acme-challenge.example.test", "stale-value", dns01_txt_value(KA))
    result = await dns01(zone).validate(request_for("example.test"))
    assert result.record == {"hostname": "example.test", "txtQuery": "_acme-challenge.example.test"}
    assert ("_acme-challenge.example.test", "TXT") in zone.queries


async def test_wildcard_validates_at_the_base_domain(zone):
    zone.add_txt("_acme-challenge.example.test", dns01_txt_value(KA))
    result = await dns01(zone).validate(request_for("*.example.test"))
    assert result.record["hostname"] == "example.test"


REJECTIONS = [
    # how the zone is set up, problem class, words the detail must contain
    ("wrong-value", IncorrectResponse, "none of the 2 TXT record(s) at _acme-challenge.example.test equals"),
    ("nxdomain", DNS, "NXDOMAIN looking up TXT for _acme-challenge.example.test"),
    ("nodata", DNS, "no TXT records found for _acme-challenge.example.test"),
    ("servfail", DNS, "no nameserver answered the TXT query for _acme-challenge.example.test"),
    ("silent", DNS, "timed out looking up TXT for _acme-challenge.example.test"),
]


def _set_up(server: DnsServer, case: str) -> None:
    name = "_acme-challenge.example.test"
    if case == "wrong-value":
        server.add_txt(name, "not-it", dns01_txt_value(KA + "x"))
    elif case == "nodata":
        server.add_a(name, "127.0.0.1")
    elif case == "servfail":
        server.set_rcode(name)
    elif case == "silent":
        server.silence(name)


@pytest.mark.parametrize("case, problem, detail", REJECTIONS, ids=[r[0] for r in REJECTIONS])
async def test_rejections(zone, case, problem, detail):
    _set_up(zone, case)
    with pytest.raises(problem) as caught:
        await dns01(zone, timeout=0.3).validate(request_for("example.test"))
    assert type(caught.value) is problem
    assert detail in caught.value.detail


async def test_wrong_value_detail_shows_what_was_received(zone):
    zone.add_txt("_acme-challenge.example.test", "not-it")
    with pytest.raises(IncorrectResponse) as caught:
        await dns01(zone).validate(request_for("example.test"))
    assert "received 'not-it'" in caught.value.detail


async def test_ip_identifier_is_rejected(zone):
    with pytest.raises(RejectedIdentifier) as caught:
        await dns01(zone).validate(request_for("127.0.0.1", IdentifierType.IP))
    assert "dns-01 cannot validate the identifier ip:127.0.0.1" in caught.value.detail


# --- the resolver ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("::1", ("::1", 53)),
    ("[::1]:5353", ("::1", 5353)),
])
def test_parse_nameserver(spec, expected):
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize("spec", ["localhost:53", "127.0.0.1:", "127.0.0.1:99999", "[::1]"])
def test_parse_nameserver_rejects(spec):
    with pytest.raises(ValueError):
        parse_nameserver(spec)


async def test_addresses_ipv4_first(zone):
    zone.add_aaaa("dual.example.test", "::1")
    zone.add_a("dual.example.test", "127.0.0.1")
    addresses = await Resolver([zone.nameserver]).resolve_addresses("dual.example.test")
    assert addresses == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


async def test_addresses_single_family_is_enough(zone):
    zone.add_aaaa("v6.example.test", "::1")
    assert await Resolver([zone.nameserver]).resolve_addresses("v6.example.test") == [ipaddress.ip_address("::1")]


async def test_no_addresses_is_a_dns_problem(zone):
    zone.add_txt("txt-only.example.test", "x")
    with pytest.raises(DNS) as caught:
        await Resolver([zone.nameserver]).resolve_addresses("txt-only.example.test")
    assert "no A or AAAA records found for txt-only.example.test" in caught.value.detail


async def test_long_txt_values_are_joined(zone):
    zone.add_txt("long.example.test", "a" * 600)
    assert await Resolver([zone.nameserver]).txt("long.example.test") == ["a" * 600]


async def test_catch_all_answers_every_name():
    with DnsServer(host="::1", catch_all_a="127.0.0.1") as server:
        resolver = Resolver([server.nameserver])
        assert await resolver.resolve_addresses("anything.example.test") == [ipaddress.ip_address("127.0.0.1")]


async def test_server_answers_over_tcp(zone):
    zone.add_a("tcp.example.test", "127.0.0.1")
    query = dns.message.make_query("tcp.example.test", "A")
    reply = await dns.asyncquery.tcp(query, "127.0.0.1", port=zone.port, timeout=2)
    assert [r.address for r in reply.answer[0]] == ["127.0.0.1"]


SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ=="  # base64, as certbot-dns-rfc2136 takes it


async def test_rfc2136_update_publishes_and_deletes_txt():
    """What a real client's rfc2136 dns-01 plugin does, signed with TSIG."""
    with DnsServer(tsig_keys={"acme-key.": SECRET}) as server:
        keyring = dns.tsigkeyring.from_text({"acme-key.": SECRET})
        add = dns.update.UpdateMessage("example.test", keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256)
        add.add("_acme-challenge.example.test.", 60, "TXT", dns01_txt_value(KA))
        reply = await dns.asyncquery.udp(add, "127.0.0.1", port=server.port, timeout=2)
        assert reply.rcode() == dns.rcode.NOERROR and reply.had_tsig
        await dns01(server).validate(request_for("example.test"))

        delete = dns.update.UpdateMessage("example.test", keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256)
        delete.delete("_acme-challenge.example.test.", "TXT", dns01_txt_value(KA))
        await dns.asyncquery.tcp(delete, "127.0.0.1", port=server.port, timeout=2)
        assert server.records("_acme-challenge.example.test", "TXT") == []


async def test_unsigned_update_is_refused_when_keys_are_set():
    with DnsServer(tsig_keys={"acme-key.": SECRET}) as server:
        update = dns.update.UpdateMessage("example.test")
        update.add("_acme-challenge.example.test.", 60, "TXT", "forged")
        reply = await dns.asyncquery.udp(update, "127.0.0.1", port=server.port, timeout=2)
        assert reply.rcode() == dns.rcode.REFUSED
        assert server.records("_acme-challenge.example.test", "TXT") == []


async def test_when_both_families_fail_the_a_problem_is_raised(zone):
    zone.set_rcode("broken.example.test")
    with pytest.raises(DNS) as caught:
        await Resolver([zone.nameserver], timeout=0.3).resolve_addresses("broken.example.test")
    assert "no nameserver answered the A query for broken.example.test" in caught.value.detail


async def test_localhost_names_resolve_to_loopback_without_dns():
    """RFC 6761 §6.3: the resolver answers `*.localhost` itself (the README's lego example relies on it)."""
    from ipaddress import ip_address

    from ca.challenges.resolver import Resolver

    resolver = Resolver(["127.0.0.1:9"], timeout=0.5)  # a nameserver that never answers
    assert await resolver.resolve_addresses("demo.localhost") == [ip_address("127.0.0.1"), ip_address("::1")]
