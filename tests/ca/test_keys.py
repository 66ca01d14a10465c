"""ca.keys: key generation per type, 0600 key files from the first byte, passphrases, atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.keys import (
    KeyFileError,
    KeyType,
    generate_private_key,
    load_private_key,
    public_key_der,
    signature_hash_for,
    write_certificate,
    write_private_key,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
def p256_key():
    return generate_private_key(KeyType.ECDSA_P256)


@pytest.mark.parametrize(
    ("key_type", "kind", "size"),
    [
        (KeyType.ECDSA_P256, ec.EllipticCurvePrivateKey, 256),
        (KeyType.ECDSA_P384, ec.EllipticCurvePrivateKey, 384),
        (KeyType.RSA_2048, rsa.RSAPrivateKey, 2048),
        (KeyType.RSA_3072, rsa.RSAPrivateKey, 3072),
        (KeyType.RSA_4096, rsa.RSAPrivateKey, 4096),
    ],
)
def test_generate_private_key_per_type(key_type, kind, size):
    key = generate_private_key(key_type)
    assert isinstance(key, kind)
    assert key.key_size == size


def test_generate_private_key_accepts_the_string_value_and_defaults_to_p256():
    assert isinstance(generate_private_key("ecdsa-p384").curve, ec.SECP384R1)
    assert isinstance(generate_private_key().curve, ec.SECP256R1)


def test_key_type_values_are_the_configuration_strings():
    assert [t.value for t in KeyType] == ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096"]


def test_signature_hash_follows_key_strength():
    assert isinstance(signature_hash_for(generate_private_key(KeyType.ECDSA_P384)), hashes.SHA384)
    assert isinstance(signature_hash_for(generate_private_key(KeyType.ECDSA_P256)), hashes.SHA256)
    assert isinstance(signature_hash_for(generate_private_key(KeyType.RSA_2048)), hashes.SHA256)


def test_key_file_is_0600_even_with_permissive_umask(tmp_path, p256_key):
    path = tmp_path / "k.key"
    old = os.umask(0)
    try:
        write_private_key(path, p256_key, None)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600


def test_key_file_is_created_0600_exclusively(tmp_path, p256_key, monkeypatch):
    """The mode is given to the very open() that creates the file: no readable instant."""
    calls = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        calls.append((Path(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    write_private_key(tmp_path / "k.key", p256_key, None)
    creating = [(p, f, m) for p, f, m in calls if f & os.O_CREAT]
    assert len(creating) == 1
    created_path, flags, mode = creating[0]
    assert flags & os.O_EXCL
    assert mode == 0o600
    assert created_path.parent == tmp_path and created_path.name != "k.key"  # a temp file, then renamed


def test_key_file_replaces_an_existing_world_readable_file(tmp_path, p256_key):
    path = tmp_path / "k.key"
    path.write_text("old")
    path.chmod(0o644)
    write_private_key(path, p256_key, None)
    assert _mode(path) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()


def test_missing_parent_directory_is_created_0700(tmp_path, p256_key):
    path = tmp_path / "a" / "b" / "k.key"
    write_private_key(path, p256_key, None)
    assert _mode(path.parent) & 0o077 == 0
    assert _mode(path) == 0o600


def test_no_temporary_files_are_left_behind(tmp_path, p256_key):
    write_private_key(tmp_path / "k.key", p256_key, b"pw")
    write_certificate(tmp_path / "c.pem", b"-----BEGIN CERTIFICATE-----\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pem", "k.key"]


def test_unencrypted_round_trip(tmp_path, p256_key):
    path = tmp_path / "k.key"
    write_private_key(path, p256_key, None)
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_der(load_private_key(path, None)) == public_key_der(p256_key)


@pytest.mark.parametrize("key_type", [KeyType.ECDSA_P384, KeyType.RSA_2048])
def test_passphrase_round_trip(tmp_path, key_type):
    key = generate_private_key(key_type)
    path = tmp_path / "k.key"
    write_private_key(path, key, b"correct horse")
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert public_key_der(load_private_key(path, b"correct horse")) == public_key_der(key)


@pytest.mark.parametrize(
    ("written_with", "loaded_with", "message"),
    [
        (b"right", b"wrong", "wrong passphrase"),
        (b"right", None, "passphrase is required"),
        (None, b"surplus", "not encrypted, but a passphrase was given"),
    ],
)
def test_passphrase_errors_name_the_file(tmp_path, p256_key, written_with, loaded_with, message):
    path = tmp_path / "intermediate.key"
    write_private_key(path, p256_key, written_with)
    with pytest.raises(KeyFileError, match=message) as caught:
        load_private_key(path, loaded_with)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_missing_key_file_is_a_key_file_error(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read key file .*nope.key"):
        load_private_key(tmp_path / "nope.key", None)


def test_garbage_key_file_is_a_key_file_error(tmp_path):
    path = tmp_path / "k.key"
    path.write_bytes(b"not a key")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(path, None)


def test_unsupported_key_algorithm_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = tmp_path / "k.key"
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    with pytest.raises(KeyFileError, match="only ECDSA and RSA"):
        load_private_key(path, None)


def test_write_certificate_replaces_content_with_mode_0644(tmp_path):
    path = tmp_path / "c.pem"
    write_certificate(path, b"one")
    write_certificate(path, b"two")
    assert path.read_bytes() == b"two"
    assert _mode(path) == 0o644


def test_public_key_der_is_the_same_for_private_and_public_key(p256_key):
    assert public_key_der(p256_key) == public_key_der(p256_key.public_key())
    assert public_key_der(p256_key).startswith(b"\x30")
