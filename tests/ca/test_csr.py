"""ca.csr: one row per rejection reason at finalize, plus the CSRs that must pass."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ca.csr import KeyPolicy, check_csr
from ca.identifiers import Identifier, IdentifierType
from ca.keys import KeyType, generate_private_key
from ca.problems import BadCSR, RejectedIdentifier
from ca.san import encode_other_name

DNS, IP = IdentifierType.DNS, IdentifierType.IP
PERM, HW = IdentifierType.PERMANENT_IDENTIFIER, IdentifierType.HARDWARE_MODULE
SERVER_ORDER = frozenset({Identifier(DNS, "www.example.com"), Identifier(DNS, "example.com"), Identifier(IP, "192.0.2.7")})
DEVICE_ORDER = frozenset({Identifier(PERM, "C02XK0AAJG5J"), Identifier(HW, "ABCD/1.3.6.1.4.1.41482.3.7")})

ACCOUNT_KEY = generate_private_key(KeyType.ECDSA_P256)
CSR_KEY = generate_private_key(KeyType.ECDSA_P256)


def _csr(names=(), *, key=CSR_KEY, common_name=None, subject=None) -> bytes:
    attributes = list(subject or [])
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def _dns(*names):
    return [x509.DNSName(n) for n in names]


def _ip(*addresses):
    return [x509.IPAddress(ip_address(a)) for a in addresses]


def _device(*values):
    return [encode_other_name(Identifier(PERM if "/" not in v else HW, v)) for v in values]


SERVER_NAMES = _dns("www.example.com", "example.com") + _ip("192.0.2.7")


def _check(csr_der, identifiers=SERVER_ORDER, policy=KeyPolicy()):
    return check_csr(csr_der, identifiers=identifiers, account_public_key=ACCOUNT_KEY.public_key(), key_policy=policy)


def _tampered_signature() -> bytes:
    der = bytearray(_csr(SERVER_NAMES))
    der[-1] ^= 0x01  # the last octet belongs to the signature value
    return bytes(der)


def _unparseable_other_name() -> bytes:
    bad = x509.OtherName(x509.ObjectIdentifier("1.3.6.1.5.5.7.8.4"), b"\x04\x01A")
    return _csr([bad])


def _bad_version() -> bytes:
    der = _csr(SERVER_NAMES)
    at = der.index(bytes.fromhex("020100"))  # the first INTEGER 0 is CertificationRequestInfo.version
    return der[:at] + bytes.fromhex("020101") + der[at + 3:]


def _device_other_name(value_hex: str) -> bytes:
    return _csr([x509.OtherName(x509.ObjectIdentifier("1.3.6.1.5.5.7.8.3"), bytes.fromhex(value_hex))])


REJECTIONS = [
    ("not-der", lambda: b"\x30\x03\x02\x01\x00", SERVER_ORDER, "not a parseable DER"),
    ("pem-not-der", lambda: b"-----BEGIN CERTIFICATE REQUEST-----", SERVER_ORDER, "not a parseable DER"),
    ("bad-signature", _tampered_signature, SERVER_ORDER, "signature does not verify"),
    ("curve-p521", lambda: _csr(SERVER_NAMES, key=ec.generate_private_key(ec.SECP521R1())), SERVER_ORDER, "curve secp521r1 is not allowed"),
    ("rsa-1024", lambda: _csr(SERVER_NAMES, key=rsa.generate_private_key(65537, 1024)), SERVER_ORDER, "RSA key of 1024 bits is not allowed"),
    ("ed25519", lambda: _csr(SERVER_NAMES, key=ed25519.Ed25519PrivateKey.generate()), SERVER_ORDER, "key type Ed25519PublicKey is not allowed"),
    ("account-key", lambda: _csr(SERVER_NAMES, key=ACCOUNT_KEY), SERVER_ORDER, "is the ACME account key"),
    ("missing-name", lambda: _csr(_dns("www.example.com") + _ip("192.0.2.7")), SERVER_ORDER, "missing dns:example.com"),
    ("extra-name", lambda: _csr(SERVER_NAMES + _dns("evil.example")), SERVER_ORDER, "not in the order dns:evil.example"),
    ("extra-ip", lambda: _csr(SERVER_NAMES + _ip("::1")), SERVER_ORDER, r"not in the order ip:::1"),
    ("no-names", lambda: _csr(), SERVER_ORDER, "missing dns:example.com, dns:www.example.com, ip:192.0.2.7"),
    ("cn-not-in-order", lambda: _csr(SERVER_NAMES, common_name="other.example"), SERVER_ORDER, "common name 'other.example' is not one"),
    ("uri-san-in-server-order", lambda: _csr(SERVER_NAMES + [x509.UniformResourceIdentifier("spiffe://t/a")]), SERVER_ORDER, "UniformResourceIdentifier spiffe://t/a"),
    ("device-csr-with-dns", lambda: _csr(_dns("www.example.com")), DEVICE_ORDER, "must not carry dNSName or iPAddress"),
    ("device-csr-with-ip", lambda: _csr(_ip("192.0.2.7")), DEVICE_ORDER, "must not carry dNSName or iPAddress"),
    ("device-csr-other-device", lambda: _csr(_device("ANOTHER-SERIAL")), DEVICE_ORDER, "permanent-identifier:ANOTHER-SERIAL is not one"),
    ("device-csr-other-assigner", lambda: _csr(_device("C02XK0AAJG5J/1.2.3")), DEVICE_ORDER, "C02XK0AAJG5J/1.2.3 is not one"),
    ("device-csr-bad-othername", _unparseable_other_name, DEVICE_ORDER, "CSR SAN cannot be read: HardwareModuleName is not valid DER"),
    ("device-csr-othername-wrong-tag", lambda: _device_other_name("30094703414243f5022a03"), DEVICE_ORDER, "CSR SAN cannot be read: PermanentIdentifier is not valid DER"),
    ("device-csr-othername-truncated-oid", lambda: _device_other_name("30090c034142260602bfe6"), DEVICE_ORDER, "CSR SAN cannot be read: PermanentIdentifier is not valid DER"),
    ("bad-version", _bad_version, SERVER_ORDER, "CSR version field is 1, not 0"),
    ("device-csr-email", lambda: _csr([x509.RFC822Name("a@example.com")]), DEVICE_ORDER, "RFC822Name a@example.com is not one"),
]  # fmt: skip


@pytest.mark.parametrize(("make_csr", "identifiers", "message"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_rejections_name_the_failed_check(make_csr, identifiers, message):
    with pytest.raises(BadCSR, match=message) as caught:
        _check(make_csr(), identifiers)
    assert caught.value.code == "badCSR" and caught.value.status == 400


def test_missing_and_extra_are_both_named():
    with pytest.raises(BadCSR) as caught:
        _check(_csr(_dns("www.example.com", "evil.example") + _ip("192.0.2.7")))
    assert "missing dns:example.com" in caught.value.detail
    assert "not in the order dns:evil.example" in caught.value.detail


def test_mixed_order_is_rejected_as_identifier_problem():
    with pytest.raises(RejectedIdentifier):
        _check(_csr(SERVER_NAMES), SERVER_ORDER | DEVICE_ORDER)


# --- accepted -------------------------------------------------------------------------------


def test_exact_server_names_pass_and_return_the_csr():
    csr = _check(_csr(SERVER_NAMES))
    assert isinstance(csr, x509.CertificateSigningRequest)
    assert csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == CSR_KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("common_name", ["www.example.com", "WWW.Example.COM", "192.0.2.7"])
def test_common_name_from_the_order_passes(common_name):
    _check(_csr(SERVER_NAMES, common_name=common_name))


def test_common_name_counts_as_a_requested_name():
    _check(_csr(_dns("www.example.com") + _ip("192.0.2.7"), common_name="example.com"))


def test_dns_names_compare_case_insensitively():
    _check(_csr(_dns("WWW.Example.com", "EXAMPLE.COM") + _ip("192.0.2.7")))


def test_ipv6_names_compare_in_canonical_form():
    order = frozenset({Identifier(IP, "2001:db8::1")})
    _check(_csr(_ip("2001:0db8:0000::0001")), order)


def test_device_csr_without_san_passes_and_its_subject_is_ignored():
    mdm_subject = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example MDM"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Jane's MacBook"),
    ]
    _check(_csr(subject=mdm_subject), DEVICE_ORDER)


def test_device_csr_with_its_own_identifiers_passes():
    _check(_csr(_device("C02XK0AAJG5J", "ABCD/1.3.6.1.4.1.41482.3.7")), DEVICE_ORDER)
    _check(_csr(_device("C02XK0AAJG5J")), DEVICE_ORDER)  # a subset is fine: the rest may be withheld


@pytest.mark.parametrize("key_type", list(KeyType))
def test_every_default_key_type_passes_the_default_policy(key_type):
    _check(_csr(SERVER_NAMES, key=generate_private_key(key_type)))


# --- key policy -----------------------------------------------------------------------------


def test_custom_policy_narrows_what_is_accepted():
    policy = KeyPolicy(ecdsa_curves=frozenset({"secp384r1"}), rsa_min_bits=3072, rsa_max_bits=4096)
    with pytest.raises(BadCSR, match="curve secp256r1 is not allowed; allowed curves: secp384r1"):
        policy.check(CSR_KEY.public_key())
    with pytest.raises(BadCSR, match="RSA key of 2048 bits is not allowed; allowed: 3072 to 4096"):
        policy.check(generate_private_key(KeyType.RSA_2048).public_key())
    policy.check(generate_private_key(KeyType.ECDSA_P384).public_key())


@pytest.mark.parametrize(("low", "high"), [(1024, 4096), (2048, 16384), (4096, 2048)])
def test_policy_refuses_unsafe_rsa_bounds(low, high):
    with pytest.raises(ValueError, match="RSA key sizes"):
        KeyPolicy(rsa_min_bits=low, rsa_max_bits=high)
