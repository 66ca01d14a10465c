"""ca.pki: zero-config CA creation, reuse, consistency checks, and the server's own TLS certificate."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

from ca import pki
from ca.clock import FrozenClock
from ca.keys import (
    KeyFileError,
    KeyType,
    generate_private_key,
    load_private_key,
    public_key_der,
    write_private_key,
)
from ca.pki import CAStoreError, load_or_create_ca, load_or_create_tls_certificate

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
CA_FILES = ("intermediate.key", "intermediate.pem", "root.key", "root.pem")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _new_ca(data_dir, key_type=KeyType.ECDSA_P256, passphrase=None, clock=None, **kwargs):
    return load_or_create_ca(
        data_dir, key_type=key_type, passphrase=passphrase, clock=clock or FrozenClock(NOW), **kwargs
    )


def _ext(certificate, kind):
    return certificate.extensions.get_extension_for_class(kind)


def test_first_start_creates_the_four_files_with_private_keys_0600(tmp_path):
    ca, created = _new_ca(tmp_path)
    ca_dir = tmp_path / "ca"
    assert created
    assert sorted(p.name for p in ca_dir.iterdir()) == list(CA_FILES)
    assert _mode(ca_dir / "root.key") == 0o600
    assert _mode(ca_dir / "intermediate.key") == 0o600
    assert _mode(ca_dir) & 0o077 == 0
    assert ca.root_path == ca_dir / "root.pem"
    assert [p.name for p in tmp_path.iterdir()] == ["ca"]  # no staging directory left


def test_second_start_reuses_the_ca(tmp_path):
    first, _ = _new_ca(tmp_path)
    second, created = _new_ca(tmp_path, clock=FrozenClock(NOW + timedelta(days=30)))
    assert not created
    assert second.root_fingerprint_sha256 == first.root_fingerprint_sha256
    assert second.intermediate == first.intermediate


def test_fingerprint_and_pem_properties(tmp_path):
    ca, _ = _new_ca(tmp_path)
    assert ca.root_fingerprint_sha256 == ca.root.fingerprint(hashes.SHA256()).hex()
    assert len(ca.root_fingerprint_sha256) == 64 and ":" not in ca.root_fingerprint_sha256
    assert ca.root_fingerprint_sha256 == ca.root_fingerprint_sha256.lower()
    assert ca.root_pem == (tmp_path / "ca" / "root.pem").read_bytes()
    assert x509.load_pem_x509_certificate(ca.intermediate_pem) == ca.intermediate


@pytest.mark.parametrize(
    ("key_type", "hash_type"),
    [
        (KeyType.ECDSA_P256, hashes.SHA256),
        (KeyType.ECDSA_P384, hashes.SHA384),
        (KeyType.RSA_2048, hashes.SHA256),
        (KeyType.RSA_3072, hashes.SHA256),
        (KeyType.RSA_4096, hashes.SHA256),
    ],
)
def test_each_key_type_makes_a_chain_that_verifies(tmp_path, key_type, hash_type):
    ca, _ = _new_ca(tmp_path, key_type=key_type)
    ca.root.verify_directly_issued_by(ca.root)
    ca.intermediate.verify_directly_issued_by(ca.root)
    expected = ec.EllipticCurvePublicKey if key_type.value.startswith("ecdsa") else rsa.RSAPublicKey
    assert isinstance(ca.root.public_key(), expected)
    assert isinstance(ca.intermediate_key.public_key(), expected)
    assert isinstance(ca.intermediate.signature_hash_algorithm, hash_type)
    assert _new_ca(tmp_path, key_type=key_type)[1] is False


def test_ca_certificate_contents(tmp_path):
    ca, _ = _new_ca(tmp_path, common_name="Example Corp")
    root, intermediate = ca.root, ca.intermediate
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Example Corp Root CA"
    assert intermediate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Example Corp Intermediate CA"
    assert root.issuer == root.subject and intermediate.issuer == root.subject
    for certificate, path_length in ((root, None), (intermediate, 0)):
        constraints = _ext(certificate, x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca and constraints.value.path_length == path_length
        usage = _ext(certificate, x509.KeyUsage)
        assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
        assert not usage.value.digital_signature
    root_ski = _ext(root, x509.SubjectKeyIdentifier).value
    assert root_ski == x509.SubjectKeyIdentifier.from_public_key(root.public_key())
    assert _ext(intermediate, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski.digest
    assert _ext(intermediate, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        ca.intermediate_key.public_key()
    )
    assert root.serial_number != intermediate.serial_number


def test_ca_validity_periods_come_from_the_clock(tmp_path):
    ca, _ = _new_ca(tmp_path)
    assert ca.root.not_valid_before_utc <= NOW <= ca.root.not_valid_before_utc + timedelta(hours=1)
    root_years = (ca.root.not_valid_after_utc - ca.root.not_valid_before_utc).days / 365.25
    intermediate_years = (ca.intermediate.not_valid_after_utc - ca.intermediate.not_valid_before_utc).days / 365.25
    assert round(root_years) == 10 and round(intermediate_years) == 5


def test_serials_come_from_the_injected_source(tmp_path):
    values = iter([0xABC, 0xDEF])
    ca, _ = _new_ca(tmp_path, randbits=lambda bits: next(values))
    assert (ca.root.serial_number, ca.intermediate.serial_number) == (0xABC, 0xDEF)


def test_passphrase_protects_both_keys(tmp_path):
    _new_ca(tmp_path, passphrase=b"s3cret")
    for name in ("root.key", "intermediate.key"):
        assert (tmp_path / "ca" / name).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert _new_ca(tmp_path, passphrase=b"s3cret")[1] is False
    with pytest.raises(KeyFileError, match="intermediate.key"):
        _new_ca(tmp_path, passphrase=b"wrong")
    with pytest.raises(KeyFileError, match="passphrase is required"):
        _new_ca(tmp_path, passphrase=None)


def test_root_key_may_be_moved_offline(tmp_path):
    first, _ = _new_ca(tmp_path)
    (tmp_path / "ca" / "root.key").unlink()
    second, created = _new_ca(tmp_path)
    assert not created and second.root_fingerprint_sha256 == first.root_fingerprint_sha256


def test_incomplete_ca_directory_is_refused_not_replaced(tmp_path):
    _new_ca(tmp_path)
    (tmp_path / "ca" / "intermediate.key").unlink()
    with pytest.raises(CAStoreError, match="incomplete.*intermediate.key"):
        _new_ca(tmp_path)
    assert (tmp_path / "ca" / "root.pem").exists()


def test_intermediate_from_another_root_is_refused(tmp_path):
    _new_ca(tmp_path / "a")
    _new_ca(tmp_path / "b")
    for name in ("intermediate.pem", "intermediate.key"):
        shutil.copy(tmp_path / "b" / "ca" / name, tmp_path / "a" / "ca" / name)
    with pytest.raises(CAStoreError, match="intermediate.pem is not signed by .*root.pem"):
        _new_ca(tmp_path / "a")


def test_intermediate_key_that_does_not_match_is_refused(tmp_path):
    _new_ca(tmp_path)
    write_private_key(tmp_path / "ca" / "intermediate.key", generate_private_key(KeyType.ECDSA_P256), None)
    with pytest.raises(CAStoreError, match="intermediate.key is not the key of"):
        _new_ca(tmp_path)


def test_corrupt_certificate_is_refused(tmp_path):
    _new_ca(tmp_path)
    (tmp_path / "ca" / "root.pem").write_bytes(b"garbage")
    with pytest.raises(CAStoreError, match="cannot load certificate .*root.pem"):
        _new_ca(tmp_path)


def test_expired_intermediate_is_refused(tmp_path):
    _new_ca(tmp_path)
    with pytest.raises(CAStoreError, match="intermediate.pem is valid from .* re-issue it"):
        _new_ca(tmp_path, clock=FrozenClock(NOW + timedelta(days=6 * 365)))


def test_losing_a_creation_race_keeps_the_winners_ca(tmp_path):
    winner, _ = _new_ca(tmp_path)
    created = pki._create_ca(tmp_path / "ca", KeyType.ECDSA_P256, None, NOW, "acmeda", secrets.randbits)
    assert created is False
    assert _new_ca(tmp_path)[0].root_fingerprint_sha256 == winner.root_fingerprint_sha256
    assert [p.name for p in tmp_path.iterdir()] == ["ca"]


# --- the server's own TLS certificate ---------------------------------------------------------


@pytest.fixture
def ca_dir(tmp_path):
    ca, _ = _new_ca(tmp_path)
    return tmp_path, ca


def _load_chain(path):
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_tls_certificate_verifies_for_every_name(ca_dir):
    data_dir, ca = ca_dir
    chain_path, key_path = load_or_create_tls_certificate(data_dir, ca, ["acme.example.com", "10.0.0.7"], FrozenClock(NOW))
    assert (chain_path, key_path) == (data_dir / "tls" / "server.pem", data_dir / "tls" / "server.key")
    assert _mode(key_path) == 0o600
    leaf, *intermediates = _load_chain(chain_path)
    assert intermediates == [ca.intermediate]
    builder = PolicyBuilder().store(Store([ca.root])).time(NOW)
    for subject in (
        DNSName("acme.example.com"),
        DNSName("localhost"),
        IPAddress(ip_address("127.0.0.1")),
        IPAddress(ip_address("::1")),
        IPAddress(ip_address("10.0.0.7")),
    ):
        chain = builder.build_server_verifier(subject).verify(leaf, intermediates)
        assert chain[-1] == ca.root
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "acme.example.com"


def test_tls_certificate_profile(ca_dir):
    data_dir, ca = ca_dir
    chain_path, _ = load_or_create_tls_certificate(data_dir, ca, [], FrozenClock(NOW))
    leaf = _load_chain(chain_path)[0]
    assert isinstance(leaf.public_key().curve, ec.SECP256R1)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=90)
    assert _ext(leaf, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([ca.root])).time(NOW).build_server_verifier(DNSName("other.example")).verify(
            leaf, [ca.intermediate]
        )


def test_tls_certificate_is_reused_while_fresh(ca_dir):
    data_dir, ca = ca_dir
    chain_path, key_path = load_or_create_tls_certificate(data_dir, ca, ["a.example"], FrozenClock(NOW))
    before = chain_path.read_bytes(), key_path.read_bytes()
    load_or_create_tls_certificate(data_dir, ca, ["A.example"], FrozenClock(NOW + timedelta(days=59)))
    assert (chain_path.read_bytes(), key_path.read_bytes()) == before


def test_tls_certificate_is_reissued_with_a_third_of_its_life_left(ca_dir):
    data_dir, ca = ca_dir
    chain_path, key_path = load_or_create_tls_certificate(data_dir, ca, [], FrozenClock(NOW))
    old_key = key_path.read_bytes()
    later = NOW + timedelta(days=61)
    load_or_create_tls_certificate(data_dir, ca, [], FrozenClock(later))
    leaf = _load_chain(chain_path)[0]
    assert leaf.not_valid_before_utc > NOW and leaf.not_valid_after_utc > later + timedelta(days=89)
    assert key_path.read_bytes() != old_key


def test_tls_certificate_is_reissued_when_names_change(ca_dir):
    data_dir, ca = ca_dir
    chain_path, _ = load_or_create_tls_certificate(data_dir, ca, ["a.example"], FrozenClock(NOW))
    load_or_create_tls_certificate(data_dir, ca, ["b.example"], FrozenClock(NOW))
    san = _ext(_load_chain(chain_path)[0], x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["b.example", "localhost"]


def test_tls_certificate_is_reissued_for_a_new_ca(ca_dir, tmp_path_factory):
    data_dir, ca = ca_dir
    chain_path, _ = load_or_create_tls_certificate(data_dir, ca, [], FrozenClock(NOW))
    other_ca, _ = _new_ca(tmp_path_factory.mktemp("other"))
    load_or_create_tls_certificate(data_dir, other_ca, [], FrozenClock(NOW))
    _load_chain(chain_path)[0].verify_directly_issued_by(other_ca.intermediate)


def test_tls_certificate_is_reissued_when_the_key_does_not_match(ca_dir):
    data_dir, ca = ca_dir
    chain_path, key_path = load_or_create_tls_certificate(data_dir, ca, [], FrozenClock(NOW))
    write_private_key(key_path, generate_private_key(KeyType.ECDSA_P256), None)
    stray_key = key_path.read_bytes()
    load_or_create_tls_certificate(data_dir, ca, [], FrozenClock(NOW))
    assert key_path.read_bytes() != stray_key
    assert _mode(key_path) == 0o600
    leaf = _load_chain(chain_path)[0]
    assert public_key_der(load_private_key(key_path, None)) == public_key_der(leaf.public_key())
