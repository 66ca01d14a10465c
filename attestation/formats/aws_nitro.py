"""fmt "aws-nitro": an AWS Nitro Enclaves attestation document, for ACME device-attest-01.

    attStmt = {"attDoc": bstr}   ; the document exactly as the enclave's NSM returned it

`attDoc` is a COSE_Sign1 (tagged 18 or untagged), protected header `{1: -35}` (ES384),
whose payload is the CBOR map AWS specifies (aws-nitro-enclaves-nsm-api
docs/attestation_process.md §2.2, §3.2): module_id, digest, timestamp (ms), pcrs,
certificate, cabundle, and optional public_key, user_data, nonce. The Nitro hypervisor
signs it with a per-enclave P-384 certificate (`certificate`) that chains through
`cabundle` (root first) to the AWS Nitro Enclaves Root G1.

Binding (`acme_binding`): the enclave asks its NSM for a document with
nonce = SHA-256(key authorization) (`Binding.challenge`) and public_key = the DER
SubjectPublicKeyInfo of the key its CSR will carry (`Evidence.public_key`).

Checks, in order, each with its error class and `check` name (docs/cloud/aws-nitro.md):

1. attStmt is `{"attDoc": bstr}` and nothing else (MalformedStatement, `nitro-statement`);
2. attDoc is a COSE_Sign1 (`cose-structure`, see `attestation.cose`);
3. protected alg is ES384, -35 (UnsupportedFormat, `nitro-alg`);
4. the payload is the AWS document: known fields only, mandatory ones present and not
   null, types and sizes as AWS lists them (MalformedStatement, `nitro-document`); digest
   is "SHA384" (UnsupportedFormat, `nitro-digest`). Real NSMs write null for an absent
   optional field, so null optional fields are read as absent;
5. cabundle[0] is one of the configured roots, byte for byte (UntrustedChain,
   `nitro-cabundle-root`); certificate ← cabundle[n-1] … cabundle[1] ← configured root
   walks with `attestation.x509chain.verify_chain` at ctx.now (`chain-untrusted`,
   `chain-expired`, `chain-revoked` with ctx.revocation["aws-nitro"]);
6. the leaf is an end entity with keyUsage digitalSignature (RequirementFailed,
   `nitro-leaf-profile`);
7. the COSE signature verifies with the leaf key (`cose-signature`);
8. timestamp is at most MAX_FUTURE_SKEW ahead of ctx.now (RequirementFailed,
   `nitro-timestamp-future`) and at most MAX_AGE old (`nitro-timestamp-stale`);
9. nonce == ctx.binding.challenge (ChallengeMismatch, `nitro-nonce`);
10. module_id is "<instance id>-enc<hex>" (IdentifierMissing, `nitro-module-id`); PCR0 is
    present (RequirementFailed, `nitro-pcr0`); PCR4 = SHA-384(0^48 || instance id), the
    NSM's measurement of the parent instance id (RequirementFailed, `nitro-pcr4`);
11. public_key is present (RequirementFailed), is a DER SubjectPublicKeyInfo
    (MalformedStatement) of a key that can sign a CSR: EC, RSA, Ed25519, Ed448
    (UnsupportedFormat), all with check `nitro-public-key`.

Steps 2 to 10 are `verify_document`, usable on documents whose nonce is not an ACME one.

Evidence: trust level cloud; identifiers the parent EC2 instance id (assigner
AWS_EC2_INSTANCE_ID) and, unless the enclave runs in debug mode, PCR0 as lowercase hex
(assigner NITRO_ENCLAVE_IMAGE); posture key_protection "nitro-enclave" and extra facts
nitro_debug, nitro_module_id and nitro_pcr0..4, nitro_pcr8 where non-zero. Debug mode
(PCR0 all zero: the image was not measured) is stated, not refused: policy decides.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from attestation import assigners, cose
from attestation.context import Binding, VerificationContext
from attestation.errors import (
    ChallengeMismatch, IdentifierMissing, MalformedStatement, RequirementFailed,
    UnsupportedFormat, UntrustedChain, catch_builtins,
)
from attestation.evidence import Evidence, PermanentIdentifier, Posture, TrustLevel
from attestation.format import Format
from attestation.roots import bundled
from attestation.x509chain import check_revocation, public_key_of, verify_chain

FMT = "aws-nitro"
ALG_ES384 = -35
DIGEST = "SHA384"
MAX_AGE = timedelta(minutes=5)  # a document is made for one challenge, just before it is answered
MAX_FUTURE_SKEW = timedelta(seconds=60)  # clock difference tolerated between the CA and the Nitro host
PCR_SIZES = frozenset({32, 48, 64})
PCR_COUNT = 32
CERT_SIZE = range(1, 1025)
PUBLIC_KEY_SIZE = range(1, 1025)
USER_DATA_SIZE = range(0, 513)  # user_data and nonce, AWS §3.2.2.2
POSTURE_PCRS = (0, 1, 2, 3, 4, 8)  # image, kernel, application, IAM role, instance, signing certificate
MANDATORY_FIELDS = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
OPTIONAL_FIELDS = ("public_key", "user_data", "nonce")
_MODULE_ID = re.compile(r"(i-(?:[0-9a-f]{8}|[0-9a-f]{17}))-enc[0-9a-f]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SIGNING_KEYS = (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)


@dataclass(frozen=True)
class NitroDocument:
    """The payload of an attestation document, every field of the type AWS specifies."""

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs: Mapping[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None = None
    user_data: bytes | None = None
    nonce: bytes | None = None

    @property
    def timestamp(self) -> datetime:
        return _EPOCH + timedelta(milliseconds=self.timestamp_ms)

    @property
    def debug(self) -> bool:
        """Debug-mode enclaves are not measured: their PCR0 (and PCR1, PCR2) are all zero."""
        return not any(self.pcrs.get(0, b""))


@dataclass(frozen=True)
class VerifiedDocument:
    """A document whose signature, chain, freshness and nonce verified."""

    document: NitroDocument
    instance_id: str  # the parent EC2 instance, from module_id, matching PCR4
    chain: tuple[bytes, ...]  # DER, leaf first, root last


def default_roots() -> tuple[bytes, ...]:
    """Bundled trust anchor: the AWS Nitro Enclaves Root G1 (DER)."""
    return bundled("aws-nitro")


def acme_binding(token: str, key_authorization: bytes) -> Binding:
    """The enclave puts SHA-256(key authorization) in the document's nonce."""
    return Binding(att_to_be_signed=key_authorization, challenge=hashlib.sha256(key_authorization).digest())


@catch_builtins
def verify(att_stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
    """Verify an "aws-nitro" statement; return what it proves or raise the failed check."""
    verified = verify_document(_att_doc(att_stmt), ctx)
    public_key = _attested_key(verified.document.public_key)
    return Evidence(
        fmt=FMT,
        public_key=public_key,
        trust_level=TrustLevel.CLOUD,
        permanent_identifiers=identifiers(verified),
        posture=posture(verified.document),
        chain=verified.chain,
        attested_at=verified.document.timestamp,
    )


FORMAT = Format(name=FMT, verify=verify, acme_binding=acme_binding)


@catch_builtins
def verify_document(att_doc: bytes, ctx: VerificationContext) -> VerifiedDocument:
    """Checks 2 to 10: the document is AWS's, fresh at ctx.now, and carries ctx.binding.challenge."""
    sign1 = cose.decode_sign1(att_doc, "attDoc")
    if type(sign1.alg) is not int or sign1.alg != ALG_ES384:
        raise UnsupportedFormat(f"attDoc protected alg is {sign1.alg!r}, not ES384 ({ALG_ES384})", check="nitro-alg")
    document = parse_document(sign1.payload)
    path = _verify_chain(document, ctx)
    _check_leaf_profile(path[0])
    cose.verify_ecdsa(sign1, public_key_of(path[0].public_key), "attDoc")
    _check_freshness(document.timestamp, ctx.now)
    if document.nonce is None or not hmac.compare_digest(document.nonce, ctx.binding.challenge):
        state = "absent" if document.nonce is None else f"{len(document.nonce)} octets that differ"
        raise ChallengeMismatch(f"attDoc nonce is not SHA-256 of the key authorization (it is {state})", check="nitro-nonce")
    instance_id = _instance_id(document)
    return VerifiedDocument(document, instance_id, tuple(cert.dump() for cert in path))


def _att_doc(att_stmt: Mapping[str, Any]) -> bytes:
    if not isinstance(att_stmt, Mapping):
        raise MalformedStatement("aws-nitro attStmt is not a map", check="nitro-statement")
    extra = sorted(repr(key) for key in att_stmt if key != "attDoc")
    if extra:
        raise MalformedStatement(f"aws-nitro attStmt has unexpected members {', '.join(extra)}", check="nitro-statement")
    att_doc = att_stmt.get("attDoc")
    if not isinstance(att_doc, bytes) or not att_doc:
        raise MalformedStatement("aws-nitro attStmt.attDoc is missing or not a non-empty byte string", check="nitro-statement")
    return att_doc


def _malformed(detail: str) -> MalformedStatement:
    return MalformedStatement(f"attDoc payload {detail}", check="nitro-document")


@catch_builtins
def parse_document(payload: bytes) -> NitroDocument:
    """The payload's fields, checked as AWS §3.2.2 says; verifies nothing cryptographic."""
    fields = cose.decode_cbor(payload, "attDoc payload", check="nitro-document")
    if not isinstance(fields, dict):
        raise _malformed("is not a CBOR map")
    unknown = sorted(repr(key) for key in fields if key not in MANDATORY_FIELDS + OPTIONAL_FIELDS)
    if unknown:
        raise _malformed(f"has fields AWS does not define: {', '.join(unknown)}")
    for name in MANDATORY_FIELDS:
        if fields.get(name) is None:
            raise _malformed(f"lacks the mandatory field {name} (absent or null)")
    document = NitroDocument(
        module_id=_text(fields, "module_id"),
        digest=_text(fields, "digest"),
        timestamp_ms=_timestamp(fields["timestamp"]),
        pcrs=_pcrs(fields["pcrs"]),
        certificate=_octets(fields, "certificate", CERT_SIZE),
        cabundle=_cabundle(fields["cabundle"]),
        public_key=_optional_octets(fields, "public_key", PUBLIC_KEY_SIZE),
        user_data=_optional_octets(fields, "user_data", USER_DATA_SIZE),
        nonce=_optional_octets(fields, "nonce", USER_DATA_SIZE),
    )
    if document.digest != DIGEST:
        raise UnsupportedFormat(f"attDoc digest is {document.digest!r}, not {DIGEST!r}", check="nitro-digest")
    return document


def _text(fields: dict, name: str) -> str:
    value = fields[name]
    if not isinstance(value, str) or not value:
        raise _malformed(f"{name} is not a non-empty text string")
    return value


def _timestamp(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**64:
        raise _malformed("timestamp is not a positive 64-bit integer (milliseconds)")
    try:
        _EPOCH + timedelta(milliseconds=value)
    except OverflowError:
        raise _malformed(f"timestamp {value} ms is beyond any representable date") from None
    return value


def _pcrs(value: Any) -> dict[int, bytes]:
    if not isinstance(value, dict) or not 1 <= len(value) <= PCR_COUNT:
        raise _malformed(f"pcrs is not a map of 1 to {PCR_COUNT} registers")
    for index, pcr in value.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < PCR_COUNT:
            raise _malformed(f"pcrs has index {index!r}, not an integer in [0, {PCR_COUNT})")
        if not isinstance(pcr, bytes) or len(pcr) not in PCR_SIZES:
            raise _malformed(f"PCR{index} is not a byte string of 32, 48 or 64 octets")
    return dict(value)


def _octets(fields: dict, name: str, sizes: range) -> bytes:
    value = fields[name]
    if not isinstance(value, bytes) or len(value) not in sizes:
        raise _malformed(f"{name} is not a byte string of {sizes.start} to {sizes.stop - 1} octets")
    return value


def _optional_octets(fields: dict, name: str, sizes: range) -> bytes | None:
    return None if fields.get(name) is None else _octets(fields, name, sizes)


def _cabundle(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not value:
        raise _malformed("cabundle is not a non-empty array")
    for der in value:
        if not isinstance(der, bytes) or len(der) not in CERT_SIZE:
            raise _malformed(f"cabundle holds an entry that is not a byte string of 1 to {CERT_SIZE.stop - 1} octets")
    return tuple(value)


def _verify_chain(document: NitroDocument, ctx: VerificationContext) -> list[asn1_x509.Certificate]:
    roots = ctx.trust.roots_for(FMT)
    if roots and document.cabundle[0] not in roots:
        raise UntrustedChain("attDoc cabundle[0] is not a configured AWS Nitro root (a bundled root is never trusted "
                             "for arriving in the document)", check="nitro-cabundle-root")
    chain = [document.certificate, *reversed(document.cabundle[1:])]  # leaf first; AWS orders the bundle root first
    path = verify_chain(chain, roots, ctx.now, intermediates=ctx.trust.intermediates_for(FMT))
    check_revocation(path[:-1], ctx.revocation.get(FMT), FMT)  # the root is the trust decision itself
    return path


def _check_leaf_profile(leaf: asn1_x509.Certificate) -> None:
    """AWS §3.2.3.3: the signing certificate is an end entity whose key usage allows signatures."""
    constraints = leaf.basic_constraints_value
    if constraints is not None and constraints["ca"].native:
        raise RequirementFailed("attDoc certificate is a CA certificate, not the enclave's end-entity certificate",
                                check="nitro-leaf-profile")
    usage = leaf.key_usage_value
    if usage is None or "digital_signature" not in usage.native:
        raise RequirementFailed("attDoc certificate keyUsage lacks digitalSignature", check="nitro-leaf-profile")


def _check_freshness(attested_at: datetime, now: datetime) -> None:
    if attested_at - now > MAX_FUTURE_SKEW:
        raise RequirementFailed(f"attDoc timestamp {attested_at:%Y-%m-%dT%H:%M:%S.%f}Z is {(attested_at - now).total_seconds():.0f} s "
                                f"in the future (tolerated: {MAX_FUTURE_SKEW.total_seconds():.0f} s)", check="nitro-timestamp-future")
    if now - attested_at > MAX_AGE:
        raise RequirementFailed(f"attDoc timestamp {attested_at:%Y-%m-%dT%H:%M:%S.%f}Z is {(now - attested_at).total_seconds():.0f} s "
                                f"old (at most {MAX_AGE.total_seconds():.0f} s)", check="nitro-timestamp-stale")


def _instance_id(document: NitroDocument) -> str:
    match = _MODULE_ID.fullmatch(document.module_id)
    if match is None:
        raise IdentifierMissing(f"attDoc module_id {document.module_id!r} is not an enclave id \"i-<instance>-enc<hex>\"",
                                check="nitro-module-id")
    if 0 not in document.pcrs:
        raise RequirementFailed("attDoc pcrs lacks PCR0 (the enclave image measurement)", check="nitro-pcr0")
    instance_id = match.group(1)
    expected = hashlib.sha384(bytes(48) + instance_id.encode("ascii")).digest()  # PCR4 extended once from zero
    if not hmac.compare_digest(document.pcrs.get(4, b""), expected):
        raise RequirementFailed(f"attDoc PCR4 is not the measurement of the parent instance id {instance_id}",
                                check="nitro-pcr4")
    return instance_id


def _attested_key(spki: bytes | None) -> bytes:
    if spki is None:
        raise RequirementFailed("attDoc public_key is absent: the document attests no key for the CSR",
                                check="nitro-public-key")
    try:
        key = serialization.load_der_public_key(spki)
    except UnsupportedAlgorithm as exc:
        raise UnsupportedFormat(f"attDoc public_key algorithm is not supported: {exc}", check="nitro-public-key") from None
    except (ValueError, TypeError):
        raise MalformedStatement(f"attDoc public_key ({len(spki)} octets) is not a DER SubjectPublicKeyInfo",
                                 check="nitro-public-key") from None
    if not isinstance(key, _SIGNING_KEYS):
        raise UnsupportedFormat(f"attDoc public_key is a {type(key).__name__.lstrip('_')}, which cannot sign a CSR",
                                check="nitro-public-key")
    return spki


def identifiers(verified: VerifiedDocument) -> tuple[PermanentIdentifier, ...]:
    """The parent instance id, and the image measurement PCR0 unless the enclave is in debug mode."""
    found = [PermanentIdentifier(verified.instance_id, assigners.AWS_EC2_INSTANCE_ID)]
    if not verified.document.debug:
        found.append(PermanentIdentifier(verified.document.pcrs[0].hex(), assigners.NITRO_ENCLAVE_IMAGE))
    return tuple(found)


def posture(document: NitroDocument) -> Posture:
    """key_protection and the named facts: debug state, module id and the non-zero PCRs that mean something."""
    extra = {"nitro_debug": "true" if document.debug else "false", "nitro_module_id": document.module_id}
    for index in POSTURE_PCRS:
        value = document.pcrs.get(index)
        if value is not None and any(value):
            extra[f"nitro_pcr{index}"] = value.hex()
    return Posture(key_protection="nitro-enclave", extra=tuple(sorted(extra.items())))
