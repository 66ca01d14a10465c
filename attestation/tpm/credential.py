"""TPM2_MakeCredential in software: the verifier's half of TPM 2.0 credential activation.

Citations are to *TPM 2.0 Library Part 1: Architecture* (rev 01.59): §24 Credential
Protection, §11.4.9.1 / §11.4.10 key derivation (KDFa, KDFe), Annex B.10.4 (RSA) and
C.6.4 (ECC) secret sharing with the label "IDENTITY".

Given a TPM's EK (the *protector*), the Name of an AK and a secret, `make_credential` returns
what TPM2_ActivateCredential takes: the TPM2B_ID_OBJECT (credential blob) and the
TPM2B_ENCRYPTED_SECRET (the seed, sealed to the EK). Only the TPM that holds the EK's
private key recovers the seed, and it releases the secret only while an object with that
Name is loaded in it (it recomputes the HMAC over the Name), so the right answer proves
that the AK lives in the same TPM as the EK.

    seed          random, |H| bytes (H = the EK's nameAlg). RSA EK: RSA-OAEP(H, MGF1(H),
                  label "IDENTITY\\0"). ECC EK: an ephemeral key Qe, Z = ECDH(Qe, EK).x,
                  seed = KDFe(H, Z, "IDENTITY", Qe.x, EK.x, |H| * 8)
    symKey        KDFa(H, seed, "STORAGE", Name(AK), "", EK symmetric keyBits)
    encIdentity   AES-CFB(symKey, IV = 0) of the credential as a TPM2B_DIGEST
    HMACkey       KDFa(H, seed, "INTEGRITY", "", "", |H| * 8)
    outerHMAC     HMAC_H(HMACkey, encIdentity || Name(AK))
    credentialBlob  TPM2B_ID_OBJECT( TPM2B_DIGEST(outerHMAC) || encIdentity )

KDFa (§11.4.10.2) is NIST SP 800-108 counter mode with HMAC-H, K(i) = HMAC(seed, [i]32 ||
Label || 00 || contextU || contextV || [bits]32): `cryptography`'s KBKDFHMAC (CounterMode,
rlen 4, llen 4, counter before the fixed input), which writes the 00 after the label itself.
KDFe (§11.4.10.3) is the SP 800-56A concatenation KDF, H([i]32 || Z || Use || 00 ||
PartyUInfo || PartyVInfo): `ConcatKDFHash` with that otherinfo. Only the TPM-specific
composition is written here; every primitive is `cryptography`'s.

nameAlg and the symmetric algorithm are the EK's (§24.4: those of the protector). A pinned
EK's TPMT_PUBLIC states them (`Protector.from_public_area`); an EK certificate holds only
the key, so `Protector.for_key` takes them from the default EK templates of the TCG EK
Credential Profile for TPM 2.0 (v2.5 §B.3: RSA 2048 and ECC P-256 use SHA-256 and AES-128,
ECC P-384 / RSA 3072 / RSA 4096 SHA-384 and AES-256, ECC P-521 SHA-512 and AES-256, all CFB).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Union

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.decrepit.ciphers.modes import CFB  # the TPM's mode; `cryptography` files CFB as decrepit
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import CounterLocation, KBKDFHMAC, Mode

from attestation.errors import MalformedStatement, UnsupportedFormat
from attestation.tpm.constants import DIGEST_SIZE, HASHES, Alg, alg_name
from attestation.tpm.structs import TpmtPublic
from attestation.tpm.wire import sized

PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey]
IDENTITY = b"IDENTITY"
STORAGE = b"STORAGE"
INTEGRITY = b"INTEGRITY"
AES_BLOCK_BYTES = 16

# TCG EK Credential Profile v2.5 §B.3 default templates: (nameAlg, AES key bits) by key.
_RSA_TEMPLATES = {2048: (Alg.SHA256, 128), 3072: (Alg.SHA384, 256), 4096: (Alg.SHA384, 256)}
_ECC_TEMPLATES = {"secp256r1": (Alg.SHA256, 128), "secp384r1": (Alg.SHA384, 256), "secp521r1": (Alg.SHA512, 256)}


def _hash(name_alg: int) -> hashes.HashAlgorithm:
    hash_cls = HASHES.get(name_alg)
    if hash_cls is None:
        raise UnsupportedFormat(f"nameAlg {alg_name(name_alg)} cannot be used to make a credential", check="tpm-credential")
    return hash_cls()


def kdfa(name_alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa (Part 1 §11.4.10.2) for a whole number of octets; `label` without its terminating 0."""
    if bits <= 0 or bits % 8:
        raise ValueError(f"KDFa output of {bits} bits is not a positive whole number of octets")
    kdf = KBKDFHMAC(
        algorithm=_hash(name_alg), mode=Mode.CounterMode, length=bits // 8, rlen=4, llen=4,
        location=CounterLocation.BeforeFixed, label=label, context=context_u + context_v, fixed=None,
    )
    return kdf.derive(key)


def kdfe(name_alg: int, z: bytes, use: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe (Part 1 §11.4.10.3); `use` without its terminating 0."""
    if bits <= 0 or bits % 8:
        raise ValueError(f"KDFe output of {bits} bits is not a positive whole number of octets")
    kdf = ConcatKDFHash(algorithm=_hash(name_alg), length=bits // 8, otherinfo=use + b"\x00" + party_u + party_v)
    return kdf.derive(z)


@dataclass(frozen=True)
class Protector:
    """The EK as MakeCredential uses it: its public key, nameAlg and AES-CFB key size."""

    public_key: PublicKey
    name_alg: int
    sym_key_bits: int

    @classmethod
    def for_key(cls, public_key: PublicKey) -> Protector:
        """The parameters of the TCG default EK template for a key of this type and size."""
        if isinstance(public_key, rsa.RSAPublicKey):
            template = _RSA_TEMPLATES.get(public_key.key_size)
            what = f"RSA {public_key.key_size}"
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            template = _ECC_TEMPLATES.get(public_key.curve.name)
            what = f"ECC {public_key.curve.name}"
        else:
            template, what = None, type(public_key).__name__
        if template is None:
            raise UnsupportedFormat(f"an EK with a {what} key has no TCG default template", check="ek-key")
        return cls(public_key, *template)

    @classmethod
    def from_public_area(cls, public: TpmtPublic) -> Protector:
        """The parameters a TPMT_PUBLIC states; its symmetric algorithm must be AES in CFB mode."""
        symmetric = public.parameters.symmetric
        if symmetric.algorithm != Alg.AES or symmetric.mode != Alg.CFB:
            raise UnsupportedFormat(
                f"the EK's symmetric algorithm {alg_name(symmetric.algorithm)} mode {alg_name(symmetric.mode)} "
                "is not AES-CFB, the one credential protection is implemented for", check="ek-symmetric")
        return cls(public.public_key(), public.name_alg, symmetric.key_bits)

    @property
    def digest_size(self) -> int:
        return DIGEST_SIZE[self.name_alg]


@dataclass(frozen=True)
class MadeCredential:
    """TPM2_MakeCredential's output, each marshalled with its UINT16 size as the TPM takes it."""

    credential_blob: bytes  # TPM2B_ID_OBJECT
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET


def _coordinate(value: int, key: ec.EllipticCurvePublicKey) -> bytes:
    return value.to_bytes((key.curve.key_size + 7) // 8, "big")


def _rsa_seed(protector: Protector, seed: bytes) -> bytes:
    assert isinstance(protector.public_key, rsa.RSAPublicKey)
    hash_ = _hash(protector.name_alg)
    oaep = padding.OAEP(mgf=padding.MGF1(hash_), algorithm=hash_, label=IDENTITY + b"\x00")
    return protector.public_key.encrypt(seed, oaep)


def _ecc_seed(protector: Protector, ephemeral: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    """(seed, TPMS_ECC_POINT of the ephemeral key) by one-pass ECDH (Part 1 Annex C.6.4)."""
    ek = protector.public_key
    assert isinstance(ek, ec.EllipticCurvePublicKey)
    if ephemeral.curve.name != ek.curve.name:
        raise ValueError("the ephemeral key is not on the EK's curve")
    z = ephemeral.exchange(ec.ECDH(), ek)
    point = ephemeral.public_key().public_numbers()
    qe_x, qe_y = _coordinate(point.x, ek), _coordinate(point.y, ek)
    seed = kdfe(protector.name_alg, z, IDENTITY, qe_x, _coordinate(ek.public_numbers().x, ek), protector.digest_size * 8)
    return seed, sized(qe_x) + sized(qe_y)


def _aes_cfb(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), CFB(b"\x00" * AES_BLOCK_BYTES)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def make_credential(
    protector: Protector,
    name: bytes,
    credential: bytes,
    *,
    seed: bytes | None = None,
    ephemeral: ec.EllipticCurvePrivateKey | None = None,
) -> MadeCredential:
    """Protect `credential` for the object named `name` in the TPM holding `protector`.

    `seed` (RSA EKs) and `ephemeral` (ECC EKs) default to fresh randomness; tests fix them.
    """
    if not 0 < len(credential) <= protector.digest_size:
        raise MalformedStatement(
            f"a credential is 1 to {protector.digest_size} bytes for this EK (a TPM2B_DIGEST), not {len(credential)}",
            check="tpm-credential")
    name_digest_size = DIGEST_SIZE.get(int.from_bytes(name[:2], "big"))
    if name_digest_size is None or len(name) != 2 + name_digest_size:
        raise MalformedStatement("the AK Name is not a hash algorithm and its digest", check="tpm-credential")
    if isinstance(protector.public_key, rsa.RSAPublicKey):
        seed = secrets.token_bytes(protector.digest_size) if seed is None else seed
        secret = _rsa_seed(protector, seed)
    else:
        key = ephemeral or ec.generate_private_key(protector.public_key.curve)
        seed, secret = _ecc_seed(protector, key)
    sym_key = kdfa(protector.name_alg, seed, STORAGE, name, b"", protector.sym_key_bits)
    enc_identity = _aes_cfb(sym_key, sized(credential))
    hmac_key = kdfa(protector.name_alg, seed, INTEGRITY, b"", b"", protector.digest_size * 8)
    mac = HMAC(hmac_key, _hash(protector.name_alg))
    mac.update(enc_identity + name)
    outer_hmac = mac.finalize()
    return MadeCredential(credential_blob=sized(sized(outer_hmac) + enc_identity), encrypted_secret=sized(secret))
