"""ca.issuance: profiles, serials, and the contents of server and device leaf certificates."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store

from ca.clock import FrozenClock
from ca.identifiers import Identifier, IdentifierType
from ca.issuance import (
    DEFAULT_PROFILES,
    DEVICE_PROFILE,
    SERVER_PROFILE,
    ExtraExtension,
    IssuanceRequest,
    Issuer,
    Profile,
    new_serial,
    profile_for,
)
from ca.keys import KeyType, generate_private_key
from ca.pki import load_or_create_ca
from ca.problems import Malformed, RejectedIdentifier, ServerInternal
from ca.san import decode_other_name

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
DNS = IdentifierType.DNS
IP = IdentifierType.IP
PERM = IdentifierType.PERMANENT_IDENTIFIER
HW = IdentifierType.HARDWARE_MODULE
SERVER_IDS = (Identifier(DNS, "www.example.com"), Identifier(IP, "192.0.2.7"), Identifier(IP, "2001:db8::1"))
DEVICE_IDS = (Identifier(PERM, "C02XK0AAJG5J"), Identifier(HW, "ABCD/1.3.6.1.4.1.41482.3.7"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return load_or_create_ca(
        tmp_path_factory.mktemp("ca"), key_type=KeyType.ECDSA_P256, passphrase=None, clock=FrozenClock(NOW)
    )[0]


@pytest.fixture(scope="module")
def leaf_key():
    return generate_private_key(KeyType.ECDSA_P256)


def _request(key, identifiers=SERVER_IDS, profile=SERVER_PROFILE, not_before=NOW, **kwargs):
    return IssuanceRequest(
        public_key=key.public_key(),
        identifiers=tuple(identifiers),
        profile=profile,
        serial=new_serial(),
        not_before=not_before,
        **kwargs,
    )


def _ext(certificate, kind):
    return certificate.extensions.get_extension_for_class(kind)


# --- profiles and serials -------------------------------------------------------------------


def test_profile_for_picks_by_identifier_kind():
    assert profile_for(SERVER_IDS) is DEFAULT_PROFILES["server"] is SERVER_PROFILE
    assert profile_for(DEVICE_IDS) is DEFAULT_PROFILES["device"] is DEVICE_PROFILE
    assert SERVER_PROFILE.lifetime == timedelta(days=7)
    assert SERVER_PROFILE.extended_key_usages == (ExtendedKeyUsageOID.SERVER_AUTH,)
    assert DEVICE_PROFILE.lifetime == timedelta(hours=24)
    assert DEVICE_PROFILE.extended_key_usages == (ExtendedKeyUsageOID.CLIENT_AUTH,)


def test_profile_for_uses_the_given_profiles():
    custom = Profile("device", timedelta(hours=1), ())
    assert profile_for(DEVICE_IDS, {"device": custom, "server": SERVER_PROFILE}) is custom
    with pytest.raises(ServerInternal, match="no 'server' certificate profile"):
        profile_for(SERVER_IDS, {"device": custom})


def test_profile_for_refuses_mixed_and_empty_orders():
    with pytest.raises(RejectedIdentifier, match="may not mix"):
        profile_for(SERVER_IDS[:1] + DEVICE_IDS[:1])
    with pytest.raises(Malformed, match="at least one identifier"):
        profile_for(())


def test_new_serial_is_128_random_bits_positive():
    serials = {new_serial() for _ in range(200)}
    assert len(serials) == 200
    assert all(0 < s < 1 << 128 for s in serials)
    assert max(s.bit_length() for s in serials) > 120  # the high bits are really used


def test_new_serial_uses_the_injected_source_and_skips_zero():
    asked = []
    values = iter([0, 42])

    def randbits(bits):
        asked.append(bits)
        return next(values)

    assert new_serial(randbits) == 42
    assert asked == [128, 128]


@pytest.mark.parametrize(("value", "message"), [(0, "keeps returning 0"), (1 << 128, "outside"), (-1, "outside")])
def test_new_serial_refuses_a_broken_source(value, message):
    with pytest.raises(ValueError, match=message):
        new_serial(lambda bits: value)


@pytest.mark.parametrize("serial", [0, -5, 1 << 159])
def test_request_refuses_serials_rfc_5280_forbids(leaf_key, serial):
    with pytest.raises(ValueError, match="20 DER octets"):
        IssuanceRequest(leaf_key.public_key(), SERVER_IDS, SERVER_PROFILE, serial, NOW)


def test_request_refuses_naive_not_before(leaf_key):
    with pytest.raises(ValueError, match="timezone-aware"):
        IssuanceRequest(leaf_key.public_key(), SERVER_IDS, SERVER_PROFILE, 1, NOW.replace(tzinfo=None))


# --- server certificates --------------------------------------------------------------------


def test_server_certificate_verifies_as_web_pki(ca, leaf_key):
    issued = Issuer(ca).issue(_request(leaf_key))
    builder = PolicyBuilder().store(Store([ca.root])).time(NOW + timedelta(hours=1))
    for subject in (DNSName("www.example.com"), IPAddress(ip_address("192.0.2.7")), IPAddress(ip_address("2001:db8::1"))):
        assert builder.build_server_verifier(subject).verify(issued.certificate, [ca.intermediate])[-1] == ca.root


def test_server_certificate_contents(ca, leaf_key):
    request = _request(leaf_key)
    issued = Issuer(ca).issue(request)
    cert = issued.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "www.example.com"
    assert cert.issuer == ca.intermediate.subject
    san = _ext(cert, x509.SubjectAlternativeName)
    assert not san.critical
    assert list(san.value) == [
        x509.DNSName("www.example.com"),
        x509.IPAddress(ip_address("192.0.2.7")),
        x509.IPAddress(ip_address("2001:db8::1")),
    ]
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_encipherment
    eku = _ext(cert, x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        leaf_key.public_key()
    )
    intermediate_ski = _ext(ca.intermediate, x509.SubjectKeyIdentifier).value.digest
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == intermediate_ski
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_issued_certificate_fields(ca, leaf_key):
    request = _request(leaf_key)
    issued = Issuer(ca).issue(request)
    assert issued.serial == request.serial == issued.certificate.serial_number
    assert issued.not_before == NOW  # exactly as requested: the caller backdates
    assert issued.not_after == NOW + timedelta(days=7)
    assert issued.der == issued.certificate.public_bytes(serialization.Encoding.DER)
    assert x509.load_pem_x509_certificates(issued.pem_chain.encode()) == [issued.certificate, ca.intermediate]
    assert issued.pem_chain.count("-----BEGIN CERTIFICATE-----") == 2


def test_serial_fits_twenty_octets(ca, leaf_key):
    issued = Issuer(ca).issue(_request(leaf_key))
    assert 0 < issued.serial < 1 << 128
    encoded = asn1_x509.Certificate.load(issued.der)["tbs_certificate"]["serial_number"].contents
    assert 1 <= len(encoded) <= 17  # 16 random octets plus at most a sign octet; RFC 5280 allows 20
    assert encoded[0] < 0x80  # positive


def test_rsa_server_key_also_gets_key_encipherment(ca):
    key = generate_private_key(KeyType.RSA_2048)
    cert = Issuer(ca).issue(_request(key)).certificate
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment


def test_p384_intermediate_signs_with_sha384(tmp_path, leaf_key):
    ca384, _ = load_or_create_ca(tmp_path, key_type=KeyType.ECDSA_P384, passphrase=None, clock=FrozenClock(NOW))
    cert = Issuer(ca384).issue(_request(leaf_key)).certificate
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    cert.verify_directly_issued_by(ca384.intermediate)


def test_explicit_common_name_must_be_an_identifier(ca, leaf_key):
    cert = Issuer(ca).issue(_request(leaf_key, subject_common_name="192.0.2.7")).certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "192.0.2.7"
    with pytest.raises(RejectedIdentifier, match="not one of the identifiers"):
        Issuer(ca).issue(_request(leaf_key, subject_common_name="evil.example"))


def test_names_too_long_for_a_common_name_leave_the_subject_empty(ca, leaf_key):
    long_name = ("a" * 60) + ".example.com"
    cert = Issuer(ca).issue(_request(leaf_key, identifiers=[Identifier(DNS, long_name)])).certificate
    assert cert.subject == x509.Name([])
    assert _ext(cert, x509.SubjectAlternativeName).critical


# --- device certificates --------------------------------------------------------------------


def test_device_certificate_contents(ca, leaf_key):
    issued = Issuer(ca).issue(_request(leaf_key, identifiers=DEVICE_IDS, profile=DEVICE_PROFILE))
    cert = issued.certificate
    cert.verify_directly_issued_by(ca.intermediate)
    assert cert.subject == x509.Name([])
    san = _ext(cert, x509.SubjectAlternativeName)
    assert san.critical  # RFC 5280 §4.2.1.6: empty subject
    assert tuple(decode_other_name(name) for name in san.value) == DEVICE_IDS
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _ext(cert, x509.BasicConstraints).critical
    assert issued.not_after - issued.not_before == timedelta(hours=24)


def test_rsa_device_key_gets_digital_signature_only(ca):
    key = generate_private_key(KeyType.RSA_2048)
    cert = Issuer(ca).issue(_request(key, identifiers=DEVICE_IDS, profile=DEVICE_PROFILE)).certificate
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment


def test_device_certificate_refuses_a_common_name(ca, leaf_key):
    with pytest.raises(ValueError, match="empty subject"):
        Issuer(ca).issue(
            _request(leaf_key, identifiers=DEVICE_IDS, profile=DEVICE_PROFILE, subject_common_name="C02XK0AAJG5J")
        )


def test_malformed_device_identifier_is_refused(ca, leaf_key):
    with pytest.raises(Malformed, match="lacks the '/'"):
        Issuer(ca).issue(_request(leaf_key, identifiers=[Identifier(HW, "no-type")], profile=DEVICE_PROFILE))


def test_mixed_request_is_refused(ca, leaf_key):
    with pytest.raises(RejectedIdentifier):
        Issuer(ca).issue(_request(leaf_key, identifiers=SERVER_IDS + DEVICE_IDS))


# --- lifetime clamp, extra extensions -------------------------------------------------------


def test_lifetime_is_clamped_to_the_intermediate(ca, leaf_key):
    ca_end = ca.intermediate.not_valid_after_utc
    issued = Issuer(ca).issue(_request(leaf_key, not_before=ca_end - timedelta(days=2)))
    assert issued.not_after == ca_end
    assert issued.not_before == ca_end - timedelta(days=2)


def test_issuing_after_the_intermediate_expired_fails(ca, leaf_key):
    with pytest.raises(ServerInternal, match="intermediate CA certificate expires"):
        Issuer(ca).issue(_request(leaf_key, not_before=ca.intermediate.not_valid_after_utc))


def test_extra_extensions_are_added_with_their_criticality(ca, leaf_key):
    posture = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.25.55515455809226192695543010104513035564.1"), b"\x05\x00")
    policy = x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.1"), None)])
    extras = (ExtraExtension(posture), ExtraExtension(policy, critical=True))
    cert = Issuer(ca).issue(_request(leaf_key, extra_extensions=extras)).certificate
    found = cert.extensions.get_extension_for_oid(posture.oid)
    assert not found.critical and found.value.value == b"\x05\x00"
    assert _ext(cert, x509.CertificatePolicies).critical


def test_extra_extensions_cannot_override_the_issuers(leaf_key):
    rogue = ExtraExtension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    with pytest.raises(ValueError, match="set by the issuer"):
        _request(leaf_key, extra_extensions=(rogue,))


def test_serial_is_taken_from_the_request(ca, leaf_key):
    serial = secrets.randbits(64) | 1
    request = IssuanceRequest(leaf_key.public_key(), SERVER_IDS, SERVER_PROFILE, serial, NOW)
    assert Issuer(ca).issue(request).certificate.serial_number == serial
