"""TPM 2.0 structures as declared dataclasses: `parse()` is strict, `to_bytes()` marshals.

TPM structures are not ASN.1: they are big-endian fields in a fixed order, sized buffers
(TPM2B: a UINT16 length then the bytes) and unions selected by an earlier field. Each
dataclass below declares one structure of *TPM 2.0 Library Part 2: Structures* (rev 01.59)
and reads it field by field with `struct` through `Reader`, which names the field that is
truncated or wrong. Parsing is strict: a truncated field, a buffer over its size limit, a
reserved bit, an unknown selector or a trailing byte is an error, never skipped.

Errors: a structure that is not what Part 2 allows raises `MalformedStatement`; a valid
structure using an algorithm this package does not implement (KEYEDHASH objects, an SM3
nameAlg, BN curves …) raises `UnsupportedFormat`. The `check` of every error is
`tpm-public` (TPMT_PUBLIC) or `tpm-attest` (TPMS_ATTEST), or `tpm-attest-magic` /
`tpm-attest-type` for those two header fields, or `tpm-signature` (TPMT_SIGNATURE).

`to_bytes()` is the exact inverse of `parse()` (the TPM marshalling is canonical), so tests
and the test fleet build real structures from the same declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attestation.errors import MalformedStatement, UnsupportedFormat
from attestation.tpm.constants import (
    DIGEST_SIZE, ECC_COORDINATE_SIZE, ECC_SCHEMES_WITH_HASH, ECC_SIGNATURE_SCHEMES, HASHES,
    KDF_SCHEMES, MAX_DATA, MAX_DIGEST, MAX_ECC_KEY_BYTES, MAX_NAME, MAX_RSA_KEY_BYTES,
    OBJECT_ATTR_RESERVED, RSA_DEFAULT_EXPONENT, RSA_KEY_BITS, RSA_SCHEMES_EMPTY,
    RSA_SCHEMES_WITH_HASH, RSA_SIGNATURE_SCHEMES, SYM_KEY_BITS, SYM_MODES, SYM_OBJECT_ALGS,
    TPM_GENERATED_VALUE, Alg, EccCurve, St, alg_name,
)
from attestation.tpm.wire import Reader, u8, u16, u32, u64, sized

_CURVES = {EccCurve.NIST_P256: ec.SECP256R1, EccCurve.NIST_P384: ec.SECP384R1, EccCurve.NIST_P521: ec.SECP521R1}
MAX_PCR_SELECTIONS = 16  # TPML_PCR_SELECTION.count is at most HASH_COUNT (one per PCR bank)


def compute_name(name_alg: int, encoded_public: bytes) -> bytes:
    """The Name of an object (Part 2 §12.2.4): nameAlg (UINT16) || H_nameAlg(the TPMT_PUBLIC bytes)."""
    hash_cls = HASHES.get(name_alg)
    if hash_cls is None:
        raise UnsupportedFormat(f"nameAlg {alg_name(name_alg)} cannot be computed", check="tpm-public")
    digest = hashes.Hash(hash_cls())
    digest.update(encoded_public)
    return u16(name_alg) + digest.finalize()


# --- Part 2 §11: algorithm parameters ----------------------------------------------------


@dataclass(frozen=True)
class SymDefObject:
    """TPMT_SYM_DEF_OBJECT (Part 2 §11.1.7): algorithm, then keyBits and mode unless NULL."""

    algorithm: int = Alg.NULL
    key_bits: int = 0
    mode: int = 0

    @classmethod
    def read(cls, r: Reader) -> SymDefObject:
        algorithm = r.u16("symmetric.algorithm")
        if algorithm == Alg.NULL:
            return cls()
        if algorithm not in SYM_OBJECT_ALGS:
            raise r.unsupported(f"symmetric.algorithm {alg_name(algorithm)} is not a TPMI_ALG_SYM_OBJECT")
        key_bits = r.u16("symmetric.keyBits")
        if key_bits not in SYM_KEY_BITS:
            raise r.fail(f"symmetric.keyBits {key_bits} is not 128, 192 or 256")
        mode = r.u16("symmetric.mode")
        if mode not in SYM_MODES:
            raise r.fail(f"symmetric.mode {alg_name(mode)} is not a TPMI_ALG_SYM_MODE")
        return cls(algorithm, key_bits, mode)

    def to_bytes(self) -> bytes:
        if self.algorithm == Alg.NULL:
            return u16(Alg.NULL)
        return u16(self.algorithm) + u16(self.key_bits) + u16(self.mode)


@dataclass(frozen=True)
class Scheme:
    """TPMT_RSA_SCHEME (§11.2.4.2), TPMT_ECC_SCHEME (§11.2.5.6) or TPMT_KDF_SCHEME (§11.2.3.3).

    A selector, then its details: nothing for NULL and RSAES, a TPMS_SCHEME_HASH (one hash
    algorithm) for the others, plus a UINT16 count for ECDAA (TPMS_SCHEME_ECDAA, §11.1.18).
    """

    scheme: int = Alg.NULL
    hash_alg: int | None = None
    count: int | None = None

    @classmethod
    def read(cls, r: Reader, field: str, with_hash: frozenset, empty: frozenset = frozenset(), ecdaa: bool = False) -> Scheme:
        scheme = r.u16(f"{field}.scheme")
        if scheme == Alg.NULL or scheme in empty:
            return cls(scheme)
        if scheme in with_hash:
            return cls(scheme, r.hash_alg(f"{field}.details.hashAlg"))
        if ecdaa and scheme == Alg.ECDAA:
            return cls(scheme, r.hash_alg(f"{field}.details.hashAlg"), r.u16(f"{field}.details.count"))
        raise r.unsupported(f"{field}.scheme {alg_name(scheme)} is not allowed here")

    def to_bytes(self) -> bytes:
        out = u16(self.scheme)
        if self.hash_alg is not None:
            out += u16(self.hash_alg)
        if self.count is not None:
            out += u16(self.count)
        return out


@dataclass(frozen=True)
class RsaParms:
    """TPMS_RSA_PARMS (Part 2 §12.2.3.5). `exponent` 0 means the default 2^16 + 1."""

    symmetric: SymDefObject
    scheme: Scheme
    key_bits: int
    exponent: int

    @classmethod
    def read(cls, r: Reader) -> RsaParms:
        symmetric = SymDefObject.read(r)
        scheme = Scheme.read(r, "scheme", RSA_SCHEMES_WITH_HASH, RSA_SCHEMES_EMPTY)
        key_bits = r.u16("keyBits")
        if key_bits not in RSA_KEY_BITS:
            raise r.unsupported(f"keyBits {key_bits} is not a supported RSA key size")
        return cls(symmetric, scheme, key_bits, r.u32("exponent"))

    @property
    def effective_exponent(self) -> int:
        return self.exponent or RSA_DEFAULT_EXPONENT

    def to_bytes(self) -> bytes:
        return self.symmetric.to_bytes() + self.scheme.to_bytes() + u16(self.key_bits) + u32(self.exponent)


@dataclass(frozen=True)
class EccParms:
    """TPMS_ECC_PARMS (Part 2 §12.2.3.6)."""

    symmetric: SymDefObject
    scheme: Scheme
    curve_id: int
    kdf: Scheme

    @classmethod
    def read(cls, r: Reader) -> EccParms:
        symmetric = SymDefObject.read(r)
        scheme = Scheme.read(r, "scheme", ECC_SCHEMES_WITH_HASH, ecdaa=True)
        curve_id = r.u16("curveID")
        if curve_id not in ECC_COORDINATE_SIZE:
            raise r.unsupported(f"curveID {curve_id:#06x} is not NIST P-256, P-384 or P-521")
        return cls(symmetric, scheme, curve_id, Scheme.read(r, "kdf", KDF_SCHEMES))

    def to_bytes(self) -> bytes:
        return self.symmetric.to_bytes() + self.scheme.to_bytes() + u16(self.curve_id) + self.kdf.to_bytes()


@dataclass(frozen=True)
class EccPoint:
    """TPMS_ECC_POINT (Part 2 §11.2.5.2): two TPM2B_ECC_PARAMETER coordinates."""

    x: bytes
    y: bytes

    @classmethod
    def read(cls, r: Reader, curve_id: int) -> EccPoint:
        size = ECC_COORDINATE_SIZE[EccCurve(curve_id)]
        x = r.sized("unique.x", MAX_ECC_KEY_BYTES)
        y = r.sized("unique.y", MAX_ECC_KEY_BYTES)
        for label, coordinate in (("x", x), ("y", y)):
            if not 0 < len(coordinate) <= size:
                raise r.fail(f"unique.{label} is {len(coordinate)} bytes; the curve needs 1..{size}")
        return cls(x, y)

    def to_bytes(self) -> bytes:
        return sized(self.x) + sized(self.y)


# --- Part 2 §12.2.4: the public area -----------------------------------------------------


@dataclass(frozen=True)
class TpmtPublic:
    """TPMT_PUBLIC (Part 2 §12.2.4), for RSA and ECC keys.

    type (TPMI_ALG_PUBLIC), nameAlg (TPMI_ALG_HASH), objectAttributes (TPMA_OBJECT §8.3),
    authPolicy (TPM2B_DIGEST), parameters (TPMU_PUBLIC_PARMS §12.2.3.7: TPMS_RSA_PARMS or
    TPMS_ECC_PARMS) and unique (TPMU_PUBLIC_ID §12.2.3.2: TPM2B_PUBLIC_KEY_RSA §11.2.4.5
    or TPMS_ECC_POINT).
    """

    type: int
    name_alg: int
    object_attributes: int
    auth_policy: bytes
    parameters: Union[RsaParms, EccParms]
    unique: Union[bytes, EccPoint]

    @classmethod
    def parse(cls, data: bytes) -> TpmtPublic:
        r = Reader(data, "TPMT_PUBLIC", "tpm-public")
        public = cls.read(r)
        r.finish()
        return public

    @classmethod
    def read(cls, r: Reader) -> TpmtPublic:
        type_ = r.u16("type")
        if type_ not in (Alg.RSA, Alg.ECC):
            raise r.unsupported(f"type {alg_name(type_)} is not supported (RSA and ECC keys only)")
        name_alg = r.u16("nameAlg")
        if name_alg not in HASHES:
            raise r.unsupported(f"nameAlg {alg_name(name_alg)} is not a supported hash algorithm")
        attributes = r.u32("objectAttributes")
        if attributes & OBJECT_ATTR_RESERVED:
            raise r.fail(f"objectAttributes {attributes:#010x} sets reserved bits")
        auth_policy = r.sized("authPolicy", MAX_DIGEST)
        if type_ == Alg.RSA:
            rsa_parms = RsaParms.read(r)
            modulus = r.sized("unique", MAX_RSA_KEY_BYTES)
            if len(modulus) != rsa_parms.key_bits // 8:
                raise r.fail(f"unique is {len(modulus)} bytes; keyBits {rsa_parms.key_bits} needs {rsa_parms.key_bits // 8}")
            return cls(type_, name_alg, attributes, auth_policy, rsa_parms, modulus)
        ecc_parms = EccParms.read(r)
        return cls(type_, name_alg, attributes, auth_policy, ecc_parms, EccPoint.read(r, ecc_parms.curve_id))

    def to_bytes(self) -> bytes:
        unique = self.unique.to_bytes() if isinstance(self.unique, EccPoint) else sized(self.unique)
        return (
            u16(self.type) + u16(self.name_alg) + u32(self.object_attributes)
            + sized(self.auth_policy) + self.parameters.to_bytes() + unique
        )

    def name(self) -> bytes:
        """This object's Name: nameAlg || H_nameAlg(TPMT_PUBLIC)."""
        return compute_name(self.name_alg, self.to_bytes())

    def public_key(self) -> Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey]:
        """The key as a `cryptography` public key; MalformedStatement if it is not a valid key."""
        try:
            if isinstance(self.parameters, RsaParms):
                modulus = int.from_bytes(self.unique, "big")
                return rsa.RSAPublicNumbers(self.parameters.effective_exponent, modulus).public_key()
            size = ECC_COORDINATE_SIZE[EccCurve(self.parameters.curve_id)]
            point = b"\x04" + self.unique.x.rjust(size, b"\x00") + self.unique.y.rjust(size, b"\x00")
            return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[self.parameters.curve_id](), point)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise MalformedStatement(f"TPMT_PUBLIC: unique is not a valid public key: {exc}", check="tpm-public") from exc

    def spki(self) -> bytes:
        """The key as DER SubjectPublicKeyInfo."""
        return self.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- Part 2 §10.11–10.12: attestation structures -----------------------------------------


def _read_name(r: Reader, field: str) -> bytes:
    """A TPM2B_NAME (Part 2 §10.5.3): a 4-byte handle, or a hash algorithm and its digest."""
    name = r.sized(field, MAX_NAME)
    if len(name) == 4:
        return name
    if len(name) < 2:
        raise r.fail(f"{field} is {len(name)} bytes: neither a handle nor a digest")
    alg = int.from_bytes(name[:2], "big")
    size = DIGEST_SIZE.get(alg)
    if size is None:
        raise r.unsupported(f"{field} uses hash {alg_name(alg)}")
    if len(name) != 2 + size:
        raise r.fail(f"{field} holds {len(name) - 2} digest bytes; {alg_name(alg)} has {size}")
    return name


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO (Part 2 §10.11.1). resetCount and restartCount are obfuscated when
    the signing key is outside the endorsement and platform hierarchies."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool

    @classmethod
    def read(cls, r: Reader) -> ClockInfo:
        clock, reset_count, restart_count = r.u64("clockInfo.clock"), r.u32("clockInfo.resetCount"), r.u32("clockInfo.restartCount")
        safe = r.u8("clockInfo.safe")
        if safe not in (0, 1):
            raise r.fail(f"clockInfo.safe {safe} is not a TPMI_YES_NO")
        return cls(clock, reset_count, restart_count, bool(safe))

    def to_bytes(self) -> bytes:
        return u64(self.clock) + u32(self.reset_count) + u32(self.restart_count) + u8(int(self.safe))


@dataclass(frozen=True)
class CertifyInfo:
    """TPMS_CERTIFY_INFO (Part 2 §10.12.3): Name and qualified Name of the certified object."""

    name: bytes
    qualified_name: bytes

    @classmethod
    def read(cls, r: Reader) -> CertifyInfo:
        return cls(_read_name(r, "attested.name"), _read_name(r, "attested.qualifiedName"))

    def to_bytes(self) -> bytes:
        return sized(self.name) + sized(self.qualified_name)


@dataclass(frozen=True)
class PcrSelection:
    """TPMS_PCR_SELECTION (Part 2 §10.6.2): a PCR bank and a bitmap (bit i of octet j = PCR 8j+i)."""

    hash_alg: int
    select: bytes

    @classmethod
    def read(cls, r: Reader, index: int) -> PcrSelection:
        hash_alg = r.hash_alg(f"pcrSelect[{index}].hash")
        size = r.u8(f"pcrSelect[{index}].sizeofSelect")
        select = bytes(r.u8(f"pcrSelect[{index}].pcrSelect[{i}]") for i in range(size))
        return cls(hash_alg, select)

    @property
    def pcrs(self) -> tuple[int, ...]:
        return tuple(8 * octet + bit for octet, value in enumerate(self.select) for bit in range(8) if value >> bit & 1)

    def to_bytes(self) -> bytes:
        return u16(self.hash_alg) + u8(len(self.select)) + self.select


@dataclass(frozen=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO (Part 2 §10.12.4): TPML_PCR_SELECTION (§10.9.7) and the PCR digest."""

    pcr_select: tuple[PcrSelection, ...]
    pcr_digest: bytes

    @classmethod
    def read(cls, r: Reader) -> QuoteInfo:
        count = r.u32("attested.pcrSelect.count")
        if count > MAX_PCR_SELECTIONS:
            raise r.fail(f"attested.pcrSelect.count {count} exceeds {MAX_PCR_SELECTIONS}")
        selections = tuple(PcrSelection.read(r, i) for i in range(count))
        return cls(selections, r.sized("attested.pcrDigest", MAX_DIGEST))

    def to_bytes(self) -> bytes:
        return u32(len(self.pcr_select)) + b"".join(s.to_bytes() for s in self.pcr_select) + sized(self.pcr_digest)


_ATTESTED = {St.ATTEST_CERTIFY: CertifyInfo, St.ATTEST_QUOTE: QuoteInfo}


@dataclass(frozen=True)
class TpmsAttest:
    """TPMS_ATTEST (Part 2 §10.12.12), the structure a TPM signs in TPM2_Certify and TPM2_Quote.

    magic (TPM_GENERATED_VALUE), type (TPMI_ST_ATTEST §10.12.10), qualifiedSigner
    (TPM2B_NAME), extraData (TPM2B_DATA §10.4.3, the caller's nonce), clockInfo,
    firmwareVersion (UINT64, vendor-defined; obfuscated like resetCount for keys outside the
    endorsement and platform hierarchies, so not a posture fact by itself) and attested
    (TPMU_ATTEST §10.12.11). CERTIFY and QUOTE bodies are parsed; the other attestation
    types are valid structures this package does not read (UnsupportedFormat).
    """

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    attested: Union[CertifyInfo, QuoteInfo]

    @classmethod
    def parse(cls, data: bytes) -> TpmsAttest:
        r = Reader(data, "TPMS_ATTEST", "tpm-attest")
        magic = r.u32("magic")
        if magic != TPM_GENERATED_VALUE:
            raise r.fail(f"magic {magic:#010x} is not TPM_GENERATED_VALUE", check="tpm-attest-magic")
        type_ = r.u16("type")
        if type_ not in St._value2member_map_:
            raise r.fail(f"type {type_:#06x} is not a TPMI_ST_ATTEST value", check="tpm-attest-type")
        body = _ATTESTED.get(St(type_))
        if body is None:
            raise r.unsupported(f"type {St(type_).name} is not parsed here", check="tpm-attest-type")
        qualified_signer = _read_name(r, "qualifiedSigner")
        extra_data = r.sized("extraData", MAX_DATA)
        clock_info = ClockInfo.read(r)
        firmware_version = r.u64("firmwareVersion")
        attest = cls(magic, type_, qualified_signer, extra_data, clock_info, firmware_version, body.read(r))
        r.finish()
        return attest

    def to_bytes(self) -> bytes:
        return (
            u32(self.magic) + u16(self.type) + sized(self.qualified_signer) + sized(self.extra_data)
            + self.clock_info.to_bytes() + u64(self.firmware_version) + self.attested.to_bytes()
        )


# --- Part 2 §11.3: signatures --------------------------------------------------------------


@dataclass(frozen=True)
class TpmtSignature:
    """TPMT_SIGNATURE (Part 2 §11.3.4): sigAlg (TPMI_ALG_SIG_SCHEME), then TPMU_SIGNATURE (§11.3.3).

    RSASSA and RSAPSS carry a TPMS_SIGNATURE_RSA (§11.3.1): hash, sig (TPM2B_PUBLIC_KEY_RSA);
    ECDSA, ECDAA, SM2 and ECSCHNORR a TPMS_SIGNATURE_ECC (§11.3.2): hash, signatureR and
    signatureS (TPM2B_ECC_PARAMETER). `rsa` or `ecc` holds the one the scheme selects. HMAC
    and NULL signatures are valid structures but prove nothing to a verifier without the
    TPM's secrets: UnsupportedFormat.
    """

    sig_alg: int
    hash_alg: int
    rsa: bytes | None = None
    ecc: tuple[bytes, bytes] | None = None

    @classmethod
    def parse(cls, data: bytes) -> TpmtSignature:
        r = Reader(data, "TPMT_SIGNATURE", "tpm-signature")
        sig_alg = r.u16("sigAlg")
        if sig_alg in RSA_SIGNATURE_SCHEMES:
            signature = cls(sig_alg, r.hash_alg("signature.hash"), rsa=r.sized("signature.sig", MAX_RSA_KEY_BYTES))
        elif sig_alg in ECC_SIGNATURE_SCHEMES:
            hash_alg = r.hash_alg("signature.hash")
            ecc = (r.sized("signature.signatureR", MAX_ECC_KEY_BYTES), r.sized("signature.signatureS", MAX_ECC_KEY_BYTES))
            signature = cls(sig_alg, hash_alg, ecc=ecc)
        elif sig_alg in (Alg.HMAC, Alg.NULL):
            raise r.unsupported(f"sigAlg {alg_name(sig_alg)} is not an asymmetric signature")
        else:
            raise r.fail(f"sigAlg {alg_name(sig_alg)} is not a TPMI_ALG_SIG_SCHEME")
        r.finish()
        return signature

    def to_bytes(self) -> bytes:
        if self.rsa is not None:
            return u16(self.sig_alg) + u16(self.hash_alg) + sized(self.rsa)
        return u16(self.sig_alg) + u16(self.hash_alg) + sized(self.ecc[0]) + sized(self.ecc[1])
