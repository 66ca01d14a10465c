"""ca.san: otherName codecs for the device identifiers, text forms of draft-ietf-acme-device-attest."""

from __future__ import annotations

import ipaddress

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509

from ca.identifiers import Identifier, IdentifierType
from ca.san import (
    ID_ON_HARDWARE_MODULE_NAME,
    ID_ON_PERMANENT_IDENTIFIER,
    HardwareModuleName,
    OtherNameError,
    PermanentIdentifier,
    decode_other_name,
    encode_general_name,
    encode_other_name,
    split_hardware_module,
    split_permanent_identifier,
)

PERM = IdentifierType.PERMANENT_IDENTIFIER
HW = IdentifierType.HARDWARE_MODULE


@pytest.mark.parametrize(
    "identifier",
    [
        Identifier(PERM, "ABCDEF123456"),
        Identifier(PERM, "ABCDEF123456/1.2.3.4"),
        Identifier(PERM, "Gerät-7ß"),
        Identifier(PERM, "C02X/2.999.12345678901234567890"),
        Identifier(HW, "ABCD/1.2.3.4"),
        Identifier(HW, "0123abcd/1.3.6.1.4.1.41482.3.7"),
        Identifier(HW, "sérial/0.39"),
    ],
)
def test_round_trip(identifier):
    name = encode_other_name(identifier)
    assert decode_other_name(name) == identifier
    assert encode_general_name(identifier) == name


@pytest.mark.parametrize(
    ("identifier", "type_id", "der_hex"),
    [
        # SEQUENCE { UTF8String "ABCDEF123456" }
        (Identifier(PERM, "ABCDEF123456"), ID_ON_PERMANENT_IDENTIFIER, "300e0c0c414243444546313233343536"),
        # SEQUENCE { UTF8String "ABCDEF123456", OID 1.2.3.4 }
        (
            Identifier(PERM, "ABCDEF123456/1.2.3.4"),
            ID_ON_PERMANENT_IDENTIFIER,
            "30130c0c41424344454631323334353606032a0304",
        ),
        # SEQUENCE { OID 1.2.3.4, OCTET STRING "ABCD" }
        (Identifier(HW, "ABCD/1.2.3.4"), ID_ON_HARDWARE_MODULE_NAME, "300b06032a0304040441424344"),
    ],
)
def test_der_vectors(identifier, type_id, der_hex):
    name = encode_other_name(identifier)
    assert name.type_id == type_id
    assert name.value.hex() == der_hex


def test_san_extension_reads_back_with_an_independent_decoder():
    """asn1crypto's own GeneralNames parser sees the otherName values the draft specifies."""
    san = x509.SubjectAlternativeName(
        [encode_other_name(Identifier(PERM, "SN1/1.2.3")), encode_other_name(Identifier(HW, "TPM9/2.23.133.1"))]
    )
    parsed = asn1_x509.GeneralNames.load(san.public_bytes())
    perm, hw = (general_name.chosen.native for general_name in parsed)
    assert perm["type_id"] == "1.3.6.1.5.5.7.8.3"
    assert perm["value"] == {"0": "SN1", "1": "1.2.3"}
    assert hw["type_id"] == "1.3.6.1.5.5.7.8.4"
    assert hw["value"] == {"0": "2.23.133.1", "1": b"TPM9"}


def test_network_identifiers_map_to_dns_and_ip_names():
    assert encode_general_name(Identifier(IdentifierType.DNS, "a.example")) == x509.DNSName("a.example")
    assert encode_general_name(Identifier(IdentifierType.IP, "::1")) == x509.IPAddress(ipaddress.ip_address("::1"))


def test_dns_has_no_other_name_form():
    with pytest.raises(OtherNameError, match="no otherName form"):
        encode_other_name(Identifier(IdentifierType.DNS, "a.example"))


def test_split_forms():
    assert split_permanent_identifier("ABC") == ("ABC", None)
    assert split_permanent_identifier("ABC/1.2.840.113635") == ("ABC", "1.2.840.113635")
    assert split_hardware_module("ABC/2.5") == ("ABC", "2.5")


@pytest.mark.parametrize(
    ("itype", "value", "message"),
    [
        (PERM, "/1.2.3", "empty device identifier"),
        (PERM, "ABC/", "not a dotted-decimal"),
        (PERM, "ABC/1.2.03", "not a dotted-decimal"),  # leading zero
        (PERM, "ABC/3.1", "not a dotted-decimal"),  # first arc is 0, 1 or 2
        (PERM, "ABC/1.40", "not a dotted-decimal"),  # second arc under 1 is at most 39
        (PERM, "ABC/1.2.3/4", "not a dotted-decimal"),  # a second "/" makes the value ambiguous
        (PERM, "ABC/1", "not a dotted-decimal"),
        (HW, "ABCD", "lacks the '/'"),
        (HW, "/1.2.3", "empty serial"),
        (HW, "ABCD/x.y", "not a dotted-decimal"),
    ],
)
def test_text_forms_outside_the_draft_abnf_are_refused(itype, value, message):
    with pytest.raises(OtherNameError, match=message):
        encode_other_name(Identifier(itype, value))


def _other(type_id, der: bytes) -> x509.OtherName:
    return x509.OtherName(type_id, der)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (_other(ID_ON_PERMANENT_IDENTIFIER, PermanentIdentifier({"assigner": "1.2.3"}).dump()), "no identifierValue"),
        (_other(ID_ON_PERMANENT_IDENTIFIER, PermanentIdentifier({"identifier_value": "A/1.2"}).dump()), "contains '/'"),
        (
            _other(ID_ON_HARDWARE_MODULE_NAME, HardwareModuleName({"hw_type": "1.2", "hw_serial_num": b"\xff"}).dump()),
            "not UTF-8",
        ),
        (
            _other(ID_ON_HARDWARE_MODULE_NAME, HardwareModuleName({"hw_type": "1.2", "hw_serial_num": b"a/b"}).dump()),
            "contains '/'",
        ),
        (
            _other(ID_ON_HARDWARE_MODULE_NAME, HardwareModuleName({"hw_type": "1.2", "hw_serial_num": b""}).dump()),
            "is empty",
        ),
        (_other(ID_ON_PERMANENT_IDENTIFIER, b"\x30\x03\x02\x01\x01"), "not valid DER"),  # INTEGER, not UTF8String
        (_other(ID_ON_HARDWARE_MODULE_NAME, b"\x04\x01A"), "not valid DER"),  # not a SEQUENCE
        (_other(ID_ON_PERMANENT_IDENTIFIER, b"\x30\x06\x0c\x01a\x02\x01\x01"), "unexpected elements"),
        (_other(ID_ON_PERMANENT_IDENTIFIER, b"\x30\x81\x03\x0c\x01a"), "not valid DER"),  # BER long length
        (_other(ID_ON_HARDWARE_MODULE_NAME, bytes.fromhex("300b06032a0304040441424344") + b"\x00"), "not valid DER"),
        (_other(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x01a"), "not a device identifier"),
        # Untrusted bytes on which asn1crypto raised other than ValueError (a 500 at finalize):
        # an ObjectDescriptor where the UTF8String belongs (AttributeError), and a truncated
        # assigner OID that fails only when re-encoded (ValueError outside the guard).
        (_other(ID_ON_PERMANENT_IDENTIFIER, bytes.fromhex("30094703414243f5022a03")), "ASN.1 type the schema does not allow"),
        (_other(ID_ON_PERMANENT_IDENTIFIER, bytes.fromhex("30090c034142260602bfe6")), "not valid DER"),
    ],
)
def test_decode_refuses_names_without_a_text_form(name, message):
    with pytest.raises(OtherNameError, match=message):
        decode_other_name(name)


def test_a_slash_in_the_value_cannot_impersonate_an_assigner():
    """identifierValue "ABC/1.2.3" without assigner must not read as "ABC" assigned by 1.2.3."""
    lookalike = _other(ID_ON_PERMANENT_IDENTIFIER, PermanentIdentifier({"identifier_value": "ABC/1.2.3"}).dump())
    with pytest.raises(OtherNameError):
        decode_other_name(lookalike)
    assert decode_other_name(encode_other_name(Identifier(PERM, "ABC/1.2.3"))) == Identifier(PERM, "ABC/1.2.3")
