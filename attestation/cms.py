"""A tolerant reader of PKCS#7 / CMS SignedData (RFC 5652) and the check of its single signer.

Cloud metadata services sign their identity documents with PKCS#7 that strict CMS
libraries refuse, each in its own way:

- AWS EC2 `/dynamic/instance-identity/pkcs7` is BER with indefinite lengths (`30 80`),
  signs with DSA and SHA-1, and embeds no certificate.
- Azure IMDS `/metadata/attested/document` puts sha256WithRSAEncryption
  (1.2.840.113549.1.1.11) in the SignerInfo digestAlgorithm, where RFC 5652 §5.3 wants a
  digest algorithm (sha256), and signs the content directly (no signed attributes).

asn1crypto parses BER, indefinite lengths included; this module only reads the fields it
relies on and checks the signature with `cryptography`. What it accepts, deliberately:

- exactly one SignerInfo, identified by issuerAndSerialNumber or subjectKeyIdentifier;
- digestAlgorithm sha1 or sha256, or sha256WithRSAEncryption read as sha256 (the Azure
  quirk above; any other signature OID in that field is refused);
- signatureAlgorithm rsaEncryption, sha1/sha256WithRSAEncryption, dsa or dsa-with-sha1;
  a hash the signatureAlgorithm names must be the digestAlgorithm's;
- with signed attributes (§5.4): exactly one messageDigest equal to the digest of the
  content, a contentType (if present) equal to eContentType, and the signature over the
  DER re-encoding of the SET OF attributes (OpenSSL's reading, tolerant of a sender that
  did not sort them); without signed attributes the signature is over the content itself.

Which algorithms a caller accepts is its own decision (`allowed` in `verify_signer`): this
module supports RSA PKCS#1 v1.5 with SHA-256 or SHA-1 and DSA with SHA-1, and accepts none
of them unless asked. Every error is an `AttestationError` whose `check` names the step:
cms-malformed, cms-algorithm, cms-signer, cms-message-digest, cms-signature.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Collection, Iterable

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa

from attestation.errors import (
    InvalidSignature, MalformedStatement, RequirementFailed, UnsupportedFormat, catch_builtins,
)
from attestation.x509chain import parse_certificate, public_key_of

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
_SINGLE_VALUED = (_OID_CONTENT_TYPE, _OID_MESSAGE_DIGEST, _OID_SIGNING_TIME)  # RFC 5652 §11


@dataclass(frozen=True)
class Algorithm:
    """A signer's key type and digest, e.g. rsa-sha256."""

    key: str  # "rsa" or "dsa"
    digest: str  # "sha1" or "sha256"

    def __str__(self) -> str:
        return f"{self.key}-{self.digest}"


RSA_SHA256 = Algorithm("rsa", "sha256")
RSA_SHA1 = Algorithm("rsa", "sha1")
DSA_SHA1 = Algorithm("dsa", "sha1")

_DIGESTS = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.1": "sha256",
    # Azure IMDS quirk: the signature algorithm where a digest algorithm belongs. Read as
    # the digest it names; any other signature OID here is still refused.
    "1.2.840.113549.1.1.11": "sha256",
}
_SIGNATURES: dict[str, tuple[str, str | None]] = {  # OID -> (key type, the hash it names or None)
    "1.2.840.113549.1.1.1": ("rsa", None),  # rsaEncryption
    "1.2.840.113549.1.1.5": ("rsa", "sha1"),  # sha1WithRSAEncryption
    "1.2.840.113549.1.1.11": ("rsa", "sha256"),  # sha256WithRSAEncryption
    "1.2.840.10040.4.1": ("dsa", None),  # id-dsa
    "1.2.840.10040.4.3": ("dsa", "sha1"),  # id-dsa-with-sha1
}
_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}


@dataclass(frozen=True)
class SignedData:
    """What the reader extracted from a SignedData with one SignerInfo."""

    content_type: str  # eContentType, dotted
    content: bytes | None  # eContent; None when the content is detached
    certificates: tuple[bytes, ...]  # embedded X.509 certificates, DER, in the order sent
    signer: cms.SignerInfo
    algorithm: Algorithm
    signed_attributes: bytes | None  # DER of the SET OF signed attributes: what is signed
    message_digest: bytes | None
    signing_time: datetime | None
    signature: bytes

    def describe_signer(self) -> str:
        """The SignerInfo's signer identifier, for error messages."""
        sid = self.signer["sid"]
        if sid.name == "issuer_and_serial_number":
            issuer = sid.chosen["issuer"].human_friendly
            return f"issuer {issuer!r}, serial {sid.chosen['serial_number'].native:#x}"
        return f"subjectKeyIdentifier {sid.chosen.native.hex()}"


def _malformed(detail: str) -> MalformedStatement:
    return MalformedStatement(detail, check="cms-malformed")


def parse_signed_data(data: bytes, what: str = "PKCS#7 SignedData") -> SignedData:
    """Read a ContentInfo holding SignedData (BER or DER) with exactly one SignerInfo."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise _malformed(f"{what} is not a non-empty byte string")
    try:
        return _read(bytes(data), what)
    except (MalformedStatement, UnsupportedFormat):
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError and friends on bad BER
        raise _malformed(f"{what} does not parse: {type(exc).__name__}: {exc}") from exc


def _read(data: bytes, what: str) -> SignedData:
    info = cms.ContentInfo.load(data, strict=True)  # strict: no bytes after the outer item
    if info["content_type"].dotted != OID_SIGNED_DATA:
        raise _malformed(f"{what} content type is {info['content_type'].dotted}, not signedData")
    signed = info["content"]
    signers = signed["signer_infos"]
    if len(signers) != 1:
        raise _malformed(f"{what} has {len(signers)} SignerInfos; exactly one is supported")
    signer = signers[0]
    signer["sid"].chosen.native  # decode the identifier now: a bad one fails here, named
    encapsulated = signed["encap_content_info"]
    content_type = encapsulated["content_type"].dotted
    content = encapsulated["content"]
    content_bytes = None if isinstance(content, core.Void) else _octets(content, what)
    attributes, digest, signing_time = _signed_attributes(signer, content_type, what)
    return SignedData(
        content_type=content_type,
        content=content_bytes,
        certificates=_certificates(signed),
        signer=signer,
        algorithm=_algorithm(signer),
        signed_attributes=attributes,
        message_digest=digest,
        signing_time=signing_time,
        signature=signer["signature"].native,
    )


def _octets(content, what: str) -> bytes:
    value = content.native  # joins the chunks of a constructed (BER) OCTET STRING
    if not isinstance(value, bytes):
        raise _malformed(f"{what} eContent is not an OCTET STRING")
    return value


def _certificates(signed: cms.SignedData) -> tuple[bytes, ...]:
    found: list[bytes] = []
    for choice in signed["certificates"] or ():
        if choice.name != "certificate":  # attribute and other certificates are not relied on
            continue
        found.append(choice.chosen.dump())
    return tuple(found)


def _algorithm(signer: cms.SignerInfo) -> Algorithm:
    digest_oid = signer["digest_algorithm"]["algorithm"].dotted
    signature_oid = signer["signature_algorithm"]["algorithm"].dotted
    digest = _DIGESTS.get(digest_oid)
    if digest is None:
        raise UnsupportedFormat(f"SignerInfo digestAlgorithm {digest_oid} is not supported (sha1, sha256)",
                                check="cms-algorithm")
    if signature_oid not in _SIGNATURES:
        raise UnsupportedFormat(f"SignerInfo signatureAlgorithm {signature_oid} is not supported "
                                "(RSA PKCS#1 v1.5, DSA)", check="cms-algorithm")
    key, named_hash = _SIGNATURES[signature_oid]
    if named_hash is not None and named_hash != digest:
        raise UnsupportedFormat(f"SignerInfo signatureAlgorithm {signature_oid} names {named_hash} but "
                                f"digestAlgorithm {digest_oid} is {digest}", check="cms-algorithm")
    return Algorithm(key, digest)


def _signed_attributes(signer: cms.SignerInfo, content_type: str, what: str):
    """(DER of the SET OF attributes, messageDigest, signingTime), or (None, None, None) when absent."""
    attributes = signer["signed_attrs"]
    if isinstance(attributes, core.Void):
        return None, None, None
    seen: dict[str, core.Asn1Value] = {}  # attribute type -> its (single) value
    for attribute in attributes:
        oid = attribute["type"].dotted
        if oid in seen:
            raise _malformed(f"{what} signed attribute {oid} appears more than once")
        values = attribute["values"]
        if oid in _SINGLE_VALUED and len(values) != 1:
            raise _malformed(f"{what} signed attribute {oid} has {len(values)} values, not one")
        seen[oid] = values[0] if len(values) else core.Void()
    if _OID_MESSAGE_DIGEST not in seen:
        raise _malformed(f"{what} has signed attributes but no messageDigest (RFC 5652 §5.3)")
    if _OID_CONTENT_TYPE in seen and seen[_OID_CONTENT_TYPE].dotted != content_type:
        raise _malformed(f"{what} contentType signed attribute differs from eContentType {content_type}")
    signing_time = seen[_OID_SIGNING_TIME].native if _OID_SIGNING_TIME in seen else None
    # RFC 5652 §5.4: the signature covers the DER encoding of the SET OF attributes, with the
    # SET tag instead of the [0] IMPLICIT one; `force` re-encodes (and sorts) as DER.
    der = attributes.untag().dump(force=True)
    return der, seen[_OID_MESSAGE_DIGEST].native, signing_time


@catch_builtins  # an embedded certificate is parsed lazily: its bad fields surface here
def names_certificate(signed: SignedData, certificate: asn1_x509.Certificate) -> bool:
    """Whether the SignerInfo's signer identifier designates `certificate`."""
    sid = signed.signer["sid"]
    if sid.name == "subject_key_identifier":
        return certificate.key_identifier is not None and certificate.key_identifier == sid.chosen.native
    issuer_and_serial = sid.chosen
    if issuer_and_serial["serial_number"].native != certificate.serial_number:
        return False
    wanted, issuer = issuer_and_serial["issuer"], certificate["tbs_certificate"]["issuer"]
    try:
        return wanted.contents == issuer.contents or wanted == issuer  # RFC 5280 §7.1 comparison
    except Exception:  # a name asn1crypto cannot normalise is not a match
        return False


@catch_builtins
def signer_certificate(signed: SignedData, candidates: Iterable[bytes]) -> bytes | None:
    """The first of `candidates` (DER) that the SignerInfo designates, or None."""
    for der in candidates:
        if names_certificate(signed, parse_certificate(der, "candidate signer certificate")):
            return der
    return None


@catch_builtins
def verify_signer(
    signed: SignedData,
    certificate: bytes | asn1_x509.Certificate,
    content: bytes,
    *,
    allowed: Collection[Algorithm],
) -> None:
    """Check that `certificate`'s key signed `content` in this SignerInfo, with an `allowed` algorithm.

    `content` is the signed content: `signed.content` when embedded, the external bytes
    when detached. Raises an AttestationError naming the failed check; returns nothing.
    """
    cert = certificate if isinstance(certificate, asn1_x509.Certificate) else parse_certificate(certificate, "signer certificate")
    if not names_certificate(signed, cert):
        raise RequirementFailed(f"the SignerInfo ({signed.describe_signer()}) does not designate the certificate "
                                f"{cert.subject.human_friendly!r}", check="cms-signer")
    if signed.algorithm not in allowed:
        accepted = ", ".join(sorted(str(a) for a in allowed)) or "none"
        raise UnsupportedFormat(f"SignerInfo algorithm {signed.algorithm} is not accepted here (accepted: {accepted})",
                                check="cms-algorithm")
    key = public_key_of(cert.public_key)
    key_type = "rsa" if isinstance(key, rsa.RSAPublicKey) else "dsa" if isinstance(key, dsa.DSAPublicKey) else None
    if key_type != signed.algorithm.key:
        raise UnsupportedFormat(f"SignerInfo algorithm {signed.algorithm} does not fit the signer certificate's "
                                f"{type(key).__name__.removesuffix('PublicKey').lstrip('_')} key", check="cms-algorithm")
    message = _signed_message(signed, content)
    hash_algorithm = _HASHES[signed.algorithm.digest]()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signed.signature, message, padding.PKCS1v15(), hash_algorithm)
        else:
            key.verify(signed.signature, message, hash_algorithm)
    except (_CryptoInvalidSignature, ValueError):
        over = "the signed attributes" if signed.signed_attributes is not None else "the content"
        raise InvalidSignature(f"SignerInfo signature ({signed.algorithm}) over {over} does not verify with the "
                               f"key of {cert.subject.human_friendly!r}", check="cms-signature") from None


def _signed_message(signed: SignedData, content: bytes) -> bytes:
    """What the signature covers: the content, or the signed attributes after their messageDigest check."""
    if signed.signed_attributes is None:
        return content
    actual = hashlib.new(signed.algorithm.digest, content).digest()
    if not hmac.compare_digest(actual, signed.message_digest or b""):
        raise InvalidSignature(f"messageDigest signed attribute is not the {signed.algorithm.digest} of the content",
                               check="cms-message-digest")
    return signed.signed_attributes
