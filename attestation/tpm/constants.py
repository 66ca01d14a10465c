"""TPM 2.0 constants used by the structure parsers, each from the table that defines it.

Citations are to *Trusted Platform Module Library, Part 2: Structures*, Family "2.0",
Level 00, Revision 01.59 (November 2019). Values are wire values (big-endian on the wire).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

from cryptography.hazmat.primitives import hashes

# Part 2 §6.2, Table 7 — TPM_GENERATED: the first four bytes of every structure the TPM
# signs itself ("\xffTCG"); a restricted signing key refuses to sign outside data that
# starts with it, which is what makes a TPMS_ATTEST trustworthy.
TPM_GENERATED_VALUE = 0xFF544347


class Alg(IntEnum):
    """Part 2 §6.3, Table 9 — TPM_ALG_ID (only the identifiers this package can meet)."""

    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    MGF1 = 0x0007
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    SM4 = 0x0013
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CAMELLIA = 0x0026
    SHA3_256 = 0x0027
    SHA3_384 = 0x0028
    SHA3_512 = 0x0029
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


def alg_name(value: int) -> str:
    """`0x000b (SHA256)` for messages; unknown values print as bare hex."""
    try:
        return f"{value:#06x} ({Alg(value).name})"
    except ValueError:
        return f"{value:#06x}"


class EccCurve(IntEnum):
    """Part 2 §6.4, Table 10 — TPM_ECC_CURVE (the NIST curves this package supports)."""

    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005


# Coordinate size in bytes of each supported curve (TPMS_ECC_POINT, Part 2 §11.2.5.2).
ECC_COORDINATE_SIZE = {EccCurve.NIST_P256: 32, EccCurve.NIST_P384: 48, EccCurve.NIST_P521: 66}


class St(IntEnum):
    """Part 2 §6.9, Table 19 — TPM_ST values that TPMI_ST_ATTEST (§10.12.10) admits."""

    ATTEST_NV = 0x8014
    ATTEST_COMMAND_AUDIT = 0x8015
    ATTEST_SESSION_AUDIT = 0x8016
    ATTEST_CERTIFY = 0x8017
    ATTEST_QUOTE = 0x8018
    ATTEST_TIME = 0x8019
    ATTEST_CREATION = 0x801A
    ATTEST_NV_DIGEST = 0x801C


class ObjectAttr(IntFlag):
    """Part 2 §8.3.2 — TPMA_OBJECT bits (§8.3.3 describes each)."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18
    X509_SIGN = 1 << 19


# Bits 0, 3, 8-9, 12-15 and 20-31 of TPMA_OBJECT are reserved and shall be clear.
OBJECT_ATTR_RESERVED = 0xFFF0F309

# Digest sizes of the hash algorithms a TPM2B_NAME / TPM2B_DIGEST may carry (TPMU_HA,
# Part 2 §10.3.1). SM3_256 is listed so its names parse; it cannot be computed here.
DIGEST_SIZE = {
    Alg.SHA1: 20,
    Alg.SHA256: 32,
    Alg.SHA384: 48,
    Alg.SHA512: 64,
    Alg.SM3_256: 32,
    Alg.SHA3_256: 32,
    Alg.SHA3_384: 48,
    Alg.SHA3_512: 64,
}

# The hash algorithms whose digests this package can compute (for Names).
HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    Alg.SHA1: hashes.SHA1,
    Alg.SHA256: hashes.SHA256,
    Alg.SHA384: hashes.SHA384,
    Alg.SHA512: hashes.SHA512,
    Alg.SHA3_256: hashes.SHA3_256,
    Alg.SHA3_384: hashes.SHA3_384,
    Alg.SHA3_512: hashes.SHA3_512,
}

# Size limits of the sized buffers (Part 2 §10.4, §10.5.3, §11.2.4.5, §11.2.5.1), for the
# largest algorithms a TPM may implement: TPMU_HA is 64 bytes (SHA-512), TPMT_HA 66,
# MAX_RSA_KEY_BYTES 512 (RSA-4096), MAX_ECC_KEY_BYTES 66 (P-521).
MAX_DIGEST = 64
MAX_NAME = 66
MAX_DATA = 66
MAX_RSA_KEY_BYTES = 512
MAX_ECC_KEY_BYTES = 66

RSA_KEY_BITS = frozenset({1024, 2048, 3072, 4096})  # TPMI_RSA_KEY_BITS, §11.2.4.6
RSA_DEFAULT_EXPONENT = 65537  # exponent 0 in TPMS_RSA_PARMS means 2^16 + 1 (§12.2.3.5)

SYM_OBJECT_ALGS = frozenset({Alg.AES, Alg.SM4, Alg.CAMELLIA})  # TPMI_ALG_SYM_OBJECT, §9.30
SYM_MODES = frozenset({Alg.CTR, Alg.OFB, Alg.CBC, Alg.CFB, Alg.ECB})  # TPMI_ALG_SYM_MODE, §9.31
SYM_KEY_BITS = frozenset({128, 192, 256})

# Schemes whose details are a TPMS_SCHEME_HASH (a single hash algorithm), §11.2.3.5 and
# §11.2.3.2; RSAES has empty details, ECDAA adds a count (TPMS_SCHEME_ECDAA, §11.1.18).
RSA_SCHEMES_WITH_HASH = frozenset({Alg.RSASSA, Alg.RSAPSS, Alg.OAEP})
RSA_SCHEMES_EMPTY = frozenset({Alg.RSAES})
ECC_SCHEMES_WITH_HASH = frozenset({Alg.ECDSA, Alg.ECDH, Alg.SM2, Alg.ECSCHNORR, Alg.ECMQV})
KDF_SCHEMES = frozenset({Alg.MGF1, Alg.KDF1_SP800_56A, Alg.KDF2, Alg.KDF1_SP800_108})

# Part 2 §11.3.3, TPMU_SIGNATURE: the signature schemes whose signature is a
# TPMS_SIGNATURE_RSA (§11.3.1) or a TPMS_SIGNATURE_ECC (§11.3.2). HMAC (a TPMT_HA) and NULL
# (empty) are the remaining TPMI_ALG_SIG_SCHEME values.
RSA_SIGNATURE_SCHEMES = frozenset({Alg.RSASSA, Alg.RSAPSS})
ECC_SIGNATURE_SCHEMES = frozenset({Alg.ECDSA, Alg.ECDAA, Alg.SM2, Alg.ECSCHNORR})
