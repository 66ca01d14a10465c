"""Key types, key generation and the files that hold keys and certificates.

Private keys are written as PEM PKCS#8, encrypted when the operator gives a passphrase.
Every file is written atomically (a temporary file in the same directory, fsync, rename),
and key files are created with mode 0600 from their first byte: the mode is given to
`os.open` itself, so there is no window in which a key is readable by others.
"""

from __future__ import annotations

import os
import secrets
from enum import Enum
from pathlib import Path
from typing import Union

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey]

_KEY_FILE_MODE = 0o600
_CERT_FILE_MODE = 0o644
_DIR_MODE = 0o700


class KeyType(str, Enum):
    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"


DEFAULT_KEY_TYPE = KeyType.ECDSA_P256

_CURVES: dict[KeyType, ec.EllipticCurve] = {
    KeyType.ECDSA_P256: ec.SECP256R1(),
    KeyType.ECDSA_P384: ec.SECP384R1(),
}
_RSA_BITS: dict[KeyType, int] = {
    KeyType.RSA_2048: 2048,
    KeyType.RSA_3072: 3072,
    KeyType.RSA_4096: 4096,
}


class KeyFileError(ValueError):
    """A key file cannot be read: missing, unreadable, or the passphrase is missing or wrong."""


def generate_private_key(key_type: KeyType = DEFAULT_KEY_TYPE) -> PrivateKey:
    key_type = KeyType(key_type)
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type])
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])


def signature_hash_for(key: PrivateKey | PublicKey) -> hashes.HashAlgorithm:
    """The hash a CA key signs with: SHA-384 for P-384 (matching its strength), else SHA-256."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(
        key.curve, ec.SECP384R1
    ):
        return hashes.SHA384()
    return hashes.SHA256()


def public_key_der(key: PrivateKey | PublicKey) -> bytes:
    """The SubjectPublicKeyInfo DER of a key: the one way keys are compared."""
    public = key.public_key() if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)) else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes | None) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    _write_atomically(Path(path), pem, _KEY_FILE_MODE)


def load_private_key(path: Path, passphrase: bytes | None) -> PrivateKey:
    path = Path(path)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    key = _parse_private_key(path, pem, passphrase)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise KeyFileError(f"key file {path} holds a {type(key).__name__}; only ECDSA and RSA keys are supported")
    return key


def _parse_private_key(path: Path, pem: bytes, passphrase: bytes | None):
    try:
        return serialization.load_pem_private_key(pem, password=passphrase or None)
    except TypeError:
        # cryptography says TypeError for "encrypted but no password" and the reverse.
        if passphrase:
            raise KeyFileError(f"key file {path} is not encrypted, but a passphrase was given") from None
        raise KeyFileError(f"key file {path} is encrypted: a passphrase is required") from None
    except ValueError:
        if passphrase:
            raise KeyFileError(f"cannot decrypt key file {path}: wrong passphrase or corrupt file") from None
        raise KeyFileError(f"key file {path} is not a PEM private key") from None


def write_certificate(path: Path, pem_bytes: bytes) -> None:
    _write_atomically(Path(path), pem_bytes, _CERT_FILE_MODE)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` so a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, mode)
    try:
        # The umask may have narrowed `mode`; set it exactly (never wider than asked).
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry itself reaches the disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
