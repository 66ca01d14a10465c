"""ca.identifiers: parsing of dns, ip, permanent-identifier and hardware-module identifiers.

One row per accepted form and per rejection reason, with the problem type it must give.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ca.identifiers import Identifier, IdentifierType, parse_identifier
from ca.problems import Malformed, RejectedIdentifier, UnsupportedIdentifier

PERM = "permanent-identifier"
HW = "hardware-module"


def parse(type_: str, value: str) -> Identifier:
    return parse_identifier({"type": type_, "value": value})


# --- the identifier object ---------------------------------------------------------------------

@pytest.mark.parametrize("obj", [
    None, [], "dns:example.com", {"type": "dns"}, {"value": "example.com"},
    {"type": "dns", "value": "example.com", "extra": 1}, {"type": 1, "value": "example.com"},
    {"type": "dns", "value": None}, {"type": "dns", "value": ["example.com"]},
], ids=["null", "array", "string", "no-value", "no-type", "extra-field", "type-number", "value-null", "value-array"])
def test_identifier_object_shape(obj):
    with pytest.raises(Malformed):
        parse_identifier(obj)


@pytest.mark.parametrize("type_", ["DNS", "email", "Permanent-Identifier", "hardware_module", ""])
def test_unknown_types_are_unsupported_and_listed(type_):
    with pytest.raises(UnsupportedIdentifier) as info:
        parse(type_, "x")
    assert "dns, ip, permanent-identifier, hardware-module" in info.value.detail


def test_identifier_json_and_text():
    ident = parse("dns", "*.example.com")
    assert ident.to_json() == {"type": "dns", "value": "*.example.com"}
    assert str(ident) == "dns:*.example.com"
    assert ident.is_wildcard and not parse("dns", "example.com").is_wildcard
    assert IdentifierType.HARDWARE_MODULE.is_device and not IdentifierType.IP.is_device


# --- dns (RFC 8555 §7.1.4, §7.1.3 wildcards) ----------------------------------------------------

@pytest.mark.parametrize("value", [
    "example.com", "a.b.c.example.com", "xn--bcher-kva.example", "a-b.example", "*.example.com",
    "0.example.com", "example.com0", "a" * 63 + ".example", "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,
])
def test_dns_accepted(value):
    assert parse("dns", value) == Identifier(IdentifierType.DNS, value)


@pytest.mark.parametrize("value, problem, detail", [
    ("Example.com", Malformed, "lower case"),
    ("EXAMPLE.COM", Malformed, "lower case"),
    ("example.com.", Malformed, "must not end with a dot"),
    ("a" * 250 + ".com", Malformed, "longer than 253"),
    ("example..com", Malformed, "invalid label ''"),
    (".example.com", Malformed, "invalid label ''"),
    ("-a.example.com", Malformed, "invalid label '-a'"),
    ("a-.example.com", Malformed, "invalid label 'a-'"),
    ("ex_ample.com", Malformed, "invalid label 'ex_ample'"),
    ("a" * 64 + ".example", Malformed, "invalid label"),
    ("bücher.example", Malformed, "invalid label 'bücher'"),
    ("exa mple.com", Malformed, "invalid label"),
    ("1.2.3.4", Malformed, "use the ip type"),
    ("example.123", Malformed, "use the ip type"),
    ("localhost", RejectedIdentifier, "not a fully qualified"),
    ("", RejectedIdentifier, "not a fully qualified"),
    ("*", RejectedIdentifier, "at least two labels"),
    ("*.com", RejectedIdentifier, "at least two labels"),
    ("*.*.example.com", Malformed, "invalid label '*'"),
    ("a.*.example.com", Malformed, "invalid label '*'"),
    ("*a.example.com", Malformed, "invalid label '*a'"),
    ("a*.example.com", Malformed, "invalid label 'a*'"),
    ("**.example.com", Malformed, "invalid label '**'"),
])
def test_dns_rejected(value, problem, detail):
    with pytest.raises(problem) as info:
        parse("dns", value)
    assert type(info.value) is problem
    assert detail in info.value.detail


def test_dns_trailing_newline_is_rejected():
    with pytest.raises(Malformed):
        parse("dns", "example.com\n")


# --- ip (RFC 8738: canonical text form) ---------------------------------------------------------

@pytest.mark.parametrize("value", ["192.0.2.1", "0.0.0.0", "2001:db8::1", "::1", "::", "2001:db8:0:1:1:1:1:1"])
def test_ip_accepted(value):
    assert parse("ip", value) == Identifier(IdentifierType.IP, value)


@pytest.mark.parametrize("value, detail", [
    ("192.0.2.01", "not an IPv4 or IPv6 address"),
    ("192.0.2", "not an IPv4 or IPv6 address"),
    ("192.0.2.256", "not an IPv4 or IPv6 address"),
    (" 192.0.2.1", "not an IPv4 or IPv6 address"),
    ("192.0.2.1\n", "not an IPv4 or IPv6 address"),
    ("example.com", "not an IPv4 or IPv6 address"),
    ("", "not an IPv4 or IPv6 address"),
    ("[2001:db8::1]", "not an IPv4 or IPv6 address"),
    ("2001:DB8::1", "not in canonical form (2001:db8::1)"),
    ("2001:db8:0:0:0:0:0:1", "not in canonical form (2001:db8::1)"),
    ("2001:0db8::1", "not in canonical form (2001:db8::1)"),
    ("::0:1", "not in canonical form (::1)"),
])
def test_ip_rejected(value, detail):
    with pytest.raises(Malformed) as info:
        parse("ip", value)
    assert detail in info.value.detail


def test_ip_zone_index_is_rejected():
    with pytest.raises(Malformed):
        parse("ip", "fe80::1%eth0")


# --- permanent-identifier (draft-ietf-acme-device-attest-09 §3.1) -------------------------------

@pytest.mark.parametrize("value", [
    "ABCDEF123456", "ABCDEF123456/1.2.3.4", "a", "SN 0001", "séri€-№1", "serial.with.dots", "x/0.0", "x/1.39",
    "x/2.0", "x/2.999.0.12345678901234567890", "C02XL0GJJGH5/1.2.840.113635.100.8.9.1", "🔑", "x" * 1024,
])
def test_permanent_identifier_accepted(value):
    assert parse(PERM, value) == Identifier(IdentifierType.PERMANENT_IDENTIFIER, value)


@pytest.mark.parametrize("value, detail", [
    ("", "device-identifier-value must have at least one character"),
    ("/1.2.3.4", "device-identifier-value must have at least one character"),
    ("ABC/", "assigner-value '' does not match"),
    ("ABC/1", "assigner-value '1' does not match"),
    ("ABC/3.1", "assigner-value '3.1'"),
    ("ABC/1.40", "assigner-value '1.40'"),
    ("ABC/0.05", "assigner-value '0.05'"),
    ("ABC/2.01", "assigner-value '2.01'"),
    ("ABC/1.2.03", "assigner-value '1.2.03'"),
    ("ABC/1.2.", "assigner-value '1.2.'"),
    ("ABC/1..2", "assigner-value '1..2'"),
    ("ABC/1.2.x", "assigner-value '1.2.x'"),
    ("ABC/1.2.٣", "assigner-value '1.2.٣'"),  # Arabic-Indic digit: not %x30-39
    ("ABC/ 1.2", "assigner-value ' 1.2'"),
    ("AB/CD", "assigner-value 'CD'"),
    ("AB/1.2/3.4", "assigner-value '1.2/3.4'"),
])
def test_permanent_identifier_malformed(value, detail):
    with pytest.raises(Malformed) as info:
        parse(PERM, value)
    assert 'permanent-identifier-value = device-identifier-value ["/" assigner-value]' in info.value.detail
    assert detail in info.value.detail


# --- hardware-module (draft-ietf-acme-device-attest-09 §4.1) ------------------------------------

@pytest.mark.parametrize("value", ["ABCD/1.2.3.4", "12345678/1.3.6.1.4.1.41482.3.7", "s n/2.5", "é/0.39"])
def test_hardware_module_accepted(value):
    assert parse(HW, value) == Identifier(IdentifierType.HARDWARE_MODULE, value)


@pytest.mark.parametrize("value, detail", [
    ("ABCD", 'the "/" and hw-type-value are required'),
    ("", "hw-serial-num-value must have at least one character"),
    ("/1.2.3.4", "hw-serial-num-value must have at least one character"),
    ("ABCD/", "hw-type-value '' does not match"),
    ("ABCD/7.1", "hw-type-value '7.1'"),
    ("ABCD/1.2.3.4/5", "hw-type-value '1.2.3.4/5'"),
    ("ABCD/1.2.3.04", "hw-type-value '1.2.3.04'"),
])
def test_hardware_module_malformed(value, detail):
    with pytest.raises(Malformed) as info:
        parse(HW, value)
    assert 'hardware-module-value = hw-serial-num-value "/" hw-type-value' in info.value.detail
    assert detail in info.value.detail


# --- device identifiers: encoding and acmeda's policy ------------------------------------------

@pytest.mark.parametrize("type_", [PERM, HW])
@pytest.mark.parametrize("value", ["AB\x00CD/1.2", "AB\tCD/1.2", "AB\nCD/1.2", "AB\x7fCD/1.2", "AB\x85CD/1.2"],
                         ids=["nul", "tab", "newline", "del", "c1-nel"])
def test_device_control_characters_are_rejected_by_policy(type_, value):
    with pytest.raises(RejectedIdentifier, match="control characters"):
        parse(type_, value)


@pytest.mark.parametrize("type_", [PERM, HW])
def test_device_value_over_1024_octets_is_rejected_by_policy(type_):
    value = "é" * 511 + "/1.2"  # 1022 + 4 octets
    with pytest.raises(RejectedIdentifier, match="longer than 1024 octets") as info:
        parse(type_, value)
    assert value not in info.value.detail


@pytest.mark.parametrize("type_", [PERM, HW])
def test_device_value_must_be_valid_utf8(type_):
    with pytest.raises(Malformed, match="not a valid UTF-8 string"):
        parse(type_, "AB\ud800CD/1.2")  # a lone surrogate, as json.loads yields for "\ud800"


def test_device_values_are_not_normalised():
    composed, decomposed = "\u00e9/1.2", "e\u0301/1.2"
    assert parse(HW, composed).value == composed and parse(HW, decomposed).value == decomposed
    assert parse(PERM, composed) != parse(PERM, decomposed)


_arc = st.integers(min_value=0, max_value=10**12).map(str)
_oid = st.one_of(
    st.tuples(st.sampled_from(["0", "1"]), st.integers(0, 39).map(str)),
    st.tuples(st.just("2"), _arc),
).flatmap(lambda head: st.lists(_arc, max_size=6).map(lambda tail: ".".join([*head, *tail])))
_device_text = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/"), min_size=1,
                       max_size=40)


@given(_device_text, _oid)
def test_every_draft_conforming_device_value_is_accepted(serial, oid):
    assert parse(HW, f"{serial}/{oid}").value == f"{serial}/{oid}"
    assert parse(PERM, f"{serial}/{oid}").value == f"{serial}/{oid}"
    assert parse(PERM, serial).value == serial
