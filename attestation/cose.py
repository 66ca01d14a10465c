"""A small COSE_Sign1 reader (RFC 9052 §4.2) and its ECDSA signature check (RFC 9053 §2.1).

Only what attestation formats need: decode a tagged (18) or untagged COSE_Sign1 from
untrusted bytes, strictly, into its four members, and verify an ECDSA signature over its
Sig_structure `["Signature1", protected, external_aad, payload]`. Structure parsing uses
cbor2 alone; the signature check is `cryptography`'s, after turning COSE's fixed-size
`r || s` into the DER form `cryptography` takes (`encode_dss_signature`).

Strict decoding (`decode_cbor`): exactly one CBOR item, no trailing bytes, no tags, no
duplicate map keys, bounded depth. Detached payloads (nil), counter-signatures and `crit`
headers are not supported and are refused. Failures raise `MalformedStatement`
(check `cose-structure`), or `InvalidSignature` / `UnsupportedFormat` (a non-ECDSA alg),
both with check `cose-signature`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import cbor2
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation.errors import InvalidSignature, MalformedStatement, UnsupportedFormat
from attestation.strict import strict_cbor

SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_CRIT = 2
CHECK_STRUCTURE = "cose-structure"
CHECK_SIGNATURE = "cose-signature"
_MAX_DEPTH = 8
# The preferred (one-byte) and the one-byte-argument encodings of tag 18.
_TAG_PREFIXES = (bytes([0xC0 | SIGN1_TAG]), bytes([0xD8, SIGN1_TAG]))


@dataclass(frozen=True)
class EcdsaAlg:
    """A COSE ECDSA algorithm: its name, hash, curve and the octet size of r and of s."""

    name: str
    hash: type[hashes.HashAlgorithm]
    curve: str
    size: int


ECDSA: Mapping[int, EcdsaAlg] = {
    -7: EcdsaAlg("ES256", hashes.SHA256, "secp256r1", 32),
    -35: EcdsaAlg("ES384", hashes.SHA384, "secp384r1", 48),
    -36: EcdsaAlg("ES512", hashes.SHA512, "secp521r1", 66),
}


@dataclass(frozen=True)
class Sign1:
    """A decoded COSE_Sign1. `protected` is the header bucket's bytes exactly as signed."""

    protected: bytes
    protected_header: Mapping[Any, Any]
    unprotected_header: Mapping[Any, Any]
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> Any:
        """The protected `alg` header (label 1); None when absent. Unprotected `alg` is never read."""
        return self.protected_header.get(HEADER_ALG)

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        """The Sig_structure of RFC 9052 §4.4 for a COSE_Sign1."""
        return cbor2.dumps(["Signature1", self.protected, external_aad, self.payload])


def decode_cbor(data: bytes, what: str, *, check: str = CHECK_STRUCTURE) -> Any:
    """Exactly one CBOR item from `data`, strictly (see the module docstring)."""
    return strict_cbor(data, what, check=check, max_depth=_MAX_DEPTH)


def decode_sign1(data: bytes, what: str = "COSE_Sign1") -> Sign1:
    """Decode a COSE_Sign1, tagged 18 or untagged; any deviation is MalformedStatement."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise MalformedStatement(f"{what} is not a non-empty byte string", check=CHECK_STRUCTURE)
    data = bytes(data)
    for prefix in _TAG_PREFIXES:
        if data.startswith(prefix):
            data = data[len(prefix):]
            break
    item = decode_cbor(data, what)
    if not isinstance(item, list) or len(item) != 4:
        raise MalformedStatement(f"{what} is not an array of 4 members", check=CHECK_STRUCTURE)
    protected, unprotected, payload, signature = item
    if not isinstance(protected, bytes):
        raise MalformedStatement(f"{what} protected header is not a byte string", check=CHECK_STRUCTURE)
    protected_header = decode_cbor(protected, f"{what} protected header") if protected else {}
    for bucket, header in (("protected", protected_header), ("unprotected", unprotected)):
        if not isinstance(header, dict):
            raise MalformedStatement(f"{what} {bucket} header is not a map", check=CHECK_STRUCTURE)
        if HEADER_CRIT in header:
            raise MalformedStatement(f"{what} {bucket} header has crit parameters, which are not supported",
                                     check=CHECK_STRUCTURE)
    if set(protected_header) & set(unprotected):
        raise MalformedStatement(f"{what} repeats a header label in both buckets (RFC 9052 §3)", check=CHECK_STRUCTURE)
    if not isinstance(payload, bytes):
        raise MalformedStatement(f"{what} payload is not a byte string (detached payloads are not supported)",
                                 check=CHECK_STRUCTURE)
    if not isinstance(signature, bytes):
        raise MalformedStatement(f"{what} signature is not a byte string", check=CHECK_STRUCTURE)
    return Sign1(protected, protected_header, unprotected, payload, signature)


def verify_ecdsa(sign1: Sign1, public_key: Any, what: str = "COSE_Sign1") -> None:
    """Verify the ECDSA signature of `sign1` (protected `alg`) with `public_key`; else InvalidSignature."""
    alg = ECDSA.get(sign1.alg) if isinstance(sign1.alg, int) and not isinstance(sign1.alg, bool) else None
    if alg is None:
        raise UnsupportedFormat(f"{what} alg {sign1.alg!r} is not an ECDSA algorithm (ES256, ES384, ES512)",
                                check=CHECK_SIGNATURE)
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != alg.curve:
        raise InvalidSignature(f"{what} alg {alg.name} needs a {alg.curve} key; the signing key is not one",
                               check=CHECK_SIGNATURE)
    if len(sign1.signature) != 2 * alg.size:
        raise InvalidSignature(f"{what} {alg.name} signature is {len(sign1.signature)} octets, not {2 * alg.size} (r || s)",
                               check=CHECK_SIGNATURE)
    r = int.from_bytes(sign1.signature[:alg.size], "big")
    s = int.from_bytes(sign1.signature[alg.size:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), sign1.to_be_signed(), ec.ECDSA(alg.hash()))
    except _CryptoInvalidSignature:
        raise InvalidSignature(f"{what} {alg.name} signature does not verify over its Sig_structure with the signing key",
                               check=CHECK_SIGNATURE) from None
