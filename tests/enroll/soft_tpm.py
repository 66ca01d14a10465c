"""A software stand-in for a TPM's endorsement and attestation keys, for fast enrollment tests.

`Maker` is a test TPM manufacturer (a root and an issuing intermediate) that certifies EKs
with the TCG SAN; `ak_public()` builds an AK's TPMT_PUBLIC with any attributes; `activate()`
is TPM2_ActivateCredential done with the EK's private key. The real TPM (swtpm, see
tests/support/swtpm.py) proves the credential protocol itself in tests/attestation/
test_tpm_credential.py; these helpers only stand in where a test is about the enrollment's
rules rather than the TPM. Keys are cached per process: RSA generation is slow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.x509.oid import NameOID, ObjectIdentifier

from attestation.tpm.constants import HASHES, Alg, EccCurve, ObjectAttr
from attestation.tpm.credential import INTEGRITY, STORAGE, MadeCredential, Protector, kdfa, kdfe
from attestation.tpm.structs import EccParms, EccPoint, RsaParms, Scheme, SymDefObject, TpmtPublic

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
OID_EK_CERTIFICATE = ObjectIdentifier("2.23.133.8.1")
TPM_SAN = ("id:53544D20", "ST33HTPHAHB4", "id:00490004")
AK_ATTRIBUTES = (ObjectAttr.FIXED_TPM | ObjectAttr.FIXED_PARENT | ObjectAttr.SENSITIVE_DATA_ORIGIN
                 | ObjectAttr.USER_WITH_AUTH | ObjectAttr.RESTRICTED | ObjectAttr.SIGN_ENCRYPT)
EK_ATTRIBUTES = (ObjectAttr.FIXED_TPM | ObjectAttr.FIXED_PARENT | ObjectAttr.SENSITIVE_DATA_ORIGIN
                 | ObjectAttr.ADMIN_WITH_POLICY | ObjectAttr.RESTRICTED | ObjectAttr.DECRYPT)
_CURVES = {"p256": (ec.SECP256R1, EccCurve.NIST_P256, 32), "p384": (ec.SECP384R1, EccCurve.NIST_P384, 48),
           "p521": (ec.SECP521R1, EccCurve.NIST_P521, 66)}


@lru_cache(maxsize=None)
def private_key(kind: str, slot: int = 0) -> Any:
    """"rsa" (2048), "rsa1024", or "p256" / "p384" / "p521"; `slot` tells keys apart."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(65537, int(kind[3:] or 2048))
    return ec.generate_private_key(_CURVES[kind][0]())


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(subject: str, key, issuer: x509.Name | None, issuer_key) -> x509.Certificate:
    return (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer or _name(subject))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=3650)).not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


@dataclass(frozen=True)
class Maker:
    """A test TPM manufacturer: an EK root, and the intermediate that signs EK certificates."""

    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: Any

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def ek_certificate(self, ek_public_key, *, san: tuple[str, str, str] | None = TPM_SAN,
                       not_before: datetime = NOW - timedelta(days=1), not_after: datetime = NOW + timedelta(days=3000)) -> bytes:
        """An EK certificate as the TCG EK profile writes it: empty subject, critical SAN."""
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.intermediate.subject)
            .public_key(ek_public_key).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([OID_EK_CERTIFICATE]), critical=False)
        )
        if san is not None:
            tpm = x509.Name([x509.NameAttribute(ObjectIdentifier(f"2.23.133.2.{i + 1}"), v) for i, v in enumerate(san)])
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DirectoryName(tpm)]), critical=True)
        return der(builder.sign(self.intermediate_key, hashes.SHA256()))


@lru_cache(maxsize=None)
def maker(name: str = "trusted") -> Maker:
    slot = sum(name.encode())
    root_key, ca_key = private_key("p256", slot), private_key("p256", slot + 1)
    root = _ca(f"Test TPM maker {name} EK Root CA", root_key, None, root_key)
    return Maker(root, _ca(f"Test TPM maker {name} EK CA 01", ca_key, root.subject, root_key), ca_key)


def public_area(key, attributes: int, *, name_alg: int = Alg.SHA256, symmetric: SymDefObject = SymDefObject()) -> TpmtPublic:
    """The TPMT_PUBLIC of `key` (RSA or ECC) with these attributes."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        parms = RsaParms(symmetric, Scheme(), public.key_size, 0)
        return TpmtPublic(Alg.RSA, name_alg, attributes, b"", parms, public.public_numbers().n.to_bytes(public.key_size // 8, "big"))
    _cls, curve_id, size = next(v for v in _CURVES.values() if v[0].name == public.curve.name)
    numbers = public.public_numbers()
    parms = EccParms(symmetric, Scheme(), curve_id, Scheme())
    return TpmtPublic(Alg.ECC, name_alg, attributes, b"", parms, EccPoint(numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big")))


def ak_public(kind: str = "rsa", attributes: int = AK_ATTRIBUTES, name_alg: int = Alg.SHA256, slot: int = 7) -> TpmtPublic:
    return public_area(private_key(kind, slot), attributes, name_alg=name_alg)


def ek_public(kind: str = "rsa", slot: int = 3, attributes: int = EK_ATTRIBUTES) -> TpmtPublic:
    """An EK's TPMT_PUBLIC as the TCG low-range templates make it (SHA-256, AES-128-CFB)."""
    return public_area(private_key(kind, slot), attributes, symmetric=SymDefObject(Alg.AES, 128, Alg.CFB))


def _unsized(data: bytes) -> tuple[bytes, bytes]:
    (size,) = struct.unpack(">H", data[:2])
    return data[2:2 + size], data[2 + size:]


def activate(ek_private, protector: Protector, name: bytes, made: MadeCredential) -> bytes:
    """TPM2_ActivateCredential in software: recover the seed with the EK, check the HMAC
    over encIdentity || name, decrypt. Raises ValueError where the TPM would refuse."""
    secret, rest = _unsized(made.encrypted_secret)
    assert not rest
    hash_ = HASHES[protector.name_alg]()
    if isinstance(ek_private, rsa.RSAPrivateKey):
        seed = ek_private.decrypt(secret, padding.OAEP(padding.MGF1(hash_), hash_, b"IDENTITY\x00"))
    else:
        x, rest = _unsized(secret)
        y, _ = _unsized(rest)
        point = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ek_private.curve).public_key()
        size = (ek_private.curve.key_size + 7) // 8
        ek_x = ek_private.public_key().public_numbers().x.to_bytes(size, "big")
        seed = kdfe(protector.name_alg, ek_private.exchange(ec.ECDH(), point), b"IDENTITY", x, ek_x, hash_.digest_size * 8)
    blob, rest = _unsized(made.credential_blob)
    assert not rest
    integrity, enc_identity = _unsized(blob)
    mac = HMAC(kdfa(protector.name_alg, seed, INTEGRITY, b"", b"", hash_.digest_size * 8), hash_)
    mac.update(enc_identity + name)
    try:
        mac.verify(integrity)
    except Exception:
        raise ValueError("integrity check failed (TPM_RC_INTEGRITY)") from None
    key = kdfa(protector.name_alg, seed, STORAGE, name, b"", protector.sym_key_bits)
    decryptor = Cipher(algorithms.AES(key), CFB(b"\x00" * 16)).decryptor()
    credential, rest = _unsized(decryptor.update(enc_identity) + decryptor.finalize())
    assert not rest
    return credential
