"""fmt "aws-iid": an AWS EC2 instance identity document, signed by AWS (docs/cloud/aws-iid.md).

The attestation statement is `{"document": bstr, "pkcs7": bstr}` or
`{"document": bstr, "signature": bstr}`: the exact bytes of
`/latest/dynamic/instance-identity/document`, and the base64-decoded PKCS#7 of
`/dynamic/instance-identity/pkcs7` (DSA-SHA1) or `/rsa2048` (RSA-2048, SHA-256), or the
base64-decoded `/dynamic/instance-identity/signature` (RSA PKCS#1 v1.5, SHA-256, over the
document). Checks, in order:

1. The statement has `document` and exactly one of `pkcs7` and `signature`.
2. The document is strict JSON (UTF-8, one object, no duplicate members) with instanceId,
   accountId, region, availabilityZone, imageId, instanceType, pendingTime and
   architecture in the forms AWS writes them.
3. Signature by a pinned AWS key: `ctx.trust.roots_for("aws-iid")` holds AWS's published
   self-signed certificates, used as keys (no chain exists). A PKCS#7 names its signer
   (issuerAndSerialNumber), its embedded content must be `document` byte for byte, and
   its signature is checked by `attestation.cms`; DSA with SHA-1 is accepted only from a
   DSA certificate, because AWS still signs `/pkcs7` that way. A `signature` is checked
   against the trusted RSA certificates that serve the document's region.
4. Region pinning: a bundled certificate serves the regions its file names
   (`attestation/roots/aws-iid/<kind>/<region>.pem`, `any-region*` for all), and only for
   its kind (pkcs7-dsa, rsa2048, rsa); a key of one region cannot vouch for another.
   Trusted certificates that are not bundled (an operator's) serve every region.
5. The certificate is within its validity at `ctx.now`: AWS publishes a validity for
   each key and rotates them, so a retired key is not trusted (the 2014 RSA certificate
   expired 2024-06-05; its key lives on in the 2024 regional certificates).
6. Freshness: `pendingTime` (the instance's launch) is not in the future.

There is no nonce: the document is the same for the instance's whole life and anyone who
saw it can present it, so `Evidence.replayable` is True and nothing binds it to the ACME
challenge (`acme_binding` passes the key authorization, which is not used). The CA admits
it once per instance id. The key in the CSR is not attested: `public_key` is None.
`attested_at` is pendingTime, the instance launch, not the time of attestation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa

from attestation import cms
from attestation.assigners import AWS_EC2_INSTANCE_ID
from attestation.context import VerificationContext
from attestation.strict import strict_json
from attestation.errors import ChainExpired, InvalidSignature, MalformedStatement, RequirementFailed, UntrustedChain, catch_builtins
from attestation.evidence import Evidence, PermanentIdentifier, Posture, TrustLevel
from attestation.format import Format, Verify, key_authorization_binding
from attestation.roots import pem_certificates
from attestation.x509chain import check_revocation, parse_certificate, public_key_of

FMT = "aws-iid"
KIND_DSA, KIND_RSA2048, KIND_RSA = "pkcs7-dsa", "rsa2048", "rsa"  # folders under roots/aws-iid
SIGNATURE_NAMES = {KIND_DSA: "pkcs7-dsa-sha1", KIND_RSA2048: "pkcs7-rsa2048", KIND_RSA: "rsa-sha256"}
ANY_REGION = "*"
CLOCK_SKEW = timedelta(minutes=5)  # tolerated between AWS's clock and ours for pendingTime
_ROOTS_FOLDER = "aws-iid"
_ANY_REGION_FILE = "any-region"

_REQUIRED = ("instanceId", "accountId", "region", "availabilityZone", "imageId", "instanceType", "pendingTime",
             "architecture")
_FORMS = {
    "instanceId": re.compile(r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?"),
    "accountId": re.compile(r"[0-9]{12}"),
    "region": re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-[0-9]+"),
    "imageId": re.compile(r"ami-[0-9a-f]{8,17}"),
    "instanceType": re.compile(r"[a-z0-9][a-z0-9-]*\.[a-z0-9-]+"),
    "architecture": re.compile(r"[a-z0-9_]+"),
    "pendingTime": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"),
}


@dataclass(frozen=True)
class Pin:
    """Which signature a bundled AWS certificate verifies, for which regions ("*": all)."""

    kind: str
    regions: frozenset[str]

    def serves(self, region: str) -> bool:
        return ANY_REGION in self.regions or region in self.regions


RegionPins = Mapping[bytes, Pin]  # certificate DER -> pin


@dataclass(frozen=True)
class InstanceIdentity:
    """The fields of an instance identity document this format relies on."""

    instance_id: str
    account_id: str
    region: str
    availability_zone: str
    image_id: str
    instance_type: str
    pending_time: datetime
    architecture: str


@dataclass(frozen=True)
class _Statement:
    document: bytes
    pkcs7: bytes | None
    signature: bytes | None


@lru_cache(maxsize=1)
def bundled_pins() -> dict[bytes, Pin]:
    """The bundled certificates by DER, each with the kind and regions its file names."""
    base = resources.files("attestation.roots").joinpath(_ROOTS_FOLDER)
    regions: dict[bytes, tuple[str, set[str]]] = {}
    for kind in (KIND_DSA, KIND_RSA2048, KIND_RSA):
        for entry in sorted(base.joinpath(kind).iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".pem"):
                continue
            stem = entry.name.removesuffix(".pem")
            region = ANY_REGION if stem.startswith(_ANY_REGION_FILE) else stem
            if region != ANY_REGION and not _FORMS["region"].fullmatch(region):
                raise ValueError(f"roots/{_ROOTS_FOLDER}/{kind}/{entry.name}: the file name is not a region")
            for der in pem_certificates(entry.read_bytes()):
                regions.setdefault(der, (kind, set()))[1].add(region)
    return {der: Pin(kind, frozenset(names)) for der, (kind, names) in regions.items()}


def default_roots() -> tuple[bytes, ...]:
    """Every bundled AWS certificate (DER), the trust store's view: AWS's pinned keys."""
    return tuple(bundled_pins())


def verifier(pins: RegionPins) -> Verify:
    """The verify function with the given region pins (the bundled ones in FORMAT)."""

    @catch_builtins
    def verify(att_stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
        return _verify(att_stmt, ctx, pins)

    return verify


@catch_builtins
def verify(att_stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
    return _verify(att_stmt, ctx, bundled_pins())


FORMAT = Format(name=FMT, verify=verify, acme_binding=key_authorization_binding)


def _verify(att_stmt: Mapping[str, Any], ctx: VerificationContext, pins: RegionPins) -> Evidence:
    stmt = _parse_statement(att_stmt)
    identity = parse_document(stmt.document)
    trusted = _trusted(ctx.trust.roots_for(FMT))
    if stmt.pkcs7 is not None:
        der, kind = _verify_pkcs7(stmt, identity, trusted, pins, ctx.now)
    else:
        der, kind = _verify_signature(stmt, identity, trusted, pins, ctx.now)
    check_revocation([parse_certificate(der)], ctx.revocation.get(FMT), FMT)
    if identity.pending_time > ctx.now + CLOCK_SKEW:
        raise RequirementFailed(f"document pendingTime {identity.pending_time:%Y-%m-%dT%H:%M:%SZ} is in the future",
                                check="aws-pending-time")
    return Evidence(
        fmt=FMT,
        public_key=None,
        trust_level=TrustLevel.CLOUD,
        permanent_identifiers=(PermanentIdentifier(identity.instance_id, AWS_EC2_INSTANCE_ID),),
        posture=_posture(identity, kind),
        chain=(der,),
        attested_at=identity.pending_time,
        replayable=True,
    )


def _parse_statement(att_stmt: Mapping[str, Any]) -> _Statement:
    if not isinstance(att_stmt, Mapping):
        raise MalformedStatement("attStmt is not a map")
    document, pkcs7, signature = att_stmt.get("document"), att_stmt.get("pkcs7"), att_stmt.get("signature")
    if document is None:
        raise MalformedStatement("attStmt.document is missing")
    if not isinstance(document, (bytes, bytearray)) or not document:
        raise MalformedStatement("attStmt.document is not a non-empty byte string")
    if (pkcs7 is None) == (signature is None):
        raise MalformedStatement("attStmt must carry exactly one of pkcs7 and signature")
    for name, value in (("pkcs7", pkcs7), ("signature", signature)):
        if value is not None and (not isinstance(value, (bytes, bytearray)) or not value):
            raise MalformedStatement(f"attStmt.{name} is not a non-empty byte string")
    return _Statement(bytes(document), pkcs7 and bytes(pkcs7), signature and bytes(signature))


@catch_builtins
def parse_document(document: bytes) -> InstanceIdentity:
    """Parse an instance identity document strictly; MalformedStatement (check "aws-document") names the fault."""
    try:
        text = bytes(document).decode("utf-8")
        fields = strict_json(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedStatement(f"document is not strict UTF-8 JSON: {exc}", check="aws-document") from exc
    if not isinstance(fields, dict):
        raise MalformedStatement("document is not a JSON object", check="aws-document")
    for name in _REQUIRED:
        value = fields.get(name)
        if not isinstance(value, str):
            raise MalformedStatement(f"document {name} is missing or not a string", check="aws-document")
        form = _FORMS.get(name)
        if form is not None and not form.fullmatch(value):
            raise MalformedStatement(f"document {name} {value!r} is not in AWS's form", check="aws-document")
    if not fields["availabilityZone"].startswith(fields["region"]) or fields["availabilityZone"] == fields["region"]:
        raise MalformedStatement(f"document availabilityZone {fields['availabilityZone']!r} is not in region "
                                 f"{fields['region']!r}", check="aws-document")
    try:
        pending = datetime.strptime(fields["pendingTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise MalformedStatement(f"document pendingTime is not a date: {exc}", check="aws-document") from exc
    return InstanceIdentity(fields["instanceId"], fields["accountId"], fields["region"], fields["availabilityZone"],
                            fields["imageId"], fields["instanceType"], pending, fields["architecture"])


@lru_cache(maxsize=8)
def _trusted(roots: tuple[bytes, ...]) -> tuple[tuple[bytes, asn1_x509.Certificate, Any], ...]:
    """(DER, parsed certificate, public key) of every trusted AWS certificate; parsed once per trust store."""
    if not roots:
        raise UntrustedChain("no AWS certificates are configured for aws-iid")
    found = []
    for der in roots:
        cert = parse_certificate(der, "AWS certificate")
        found.append((der, cert, public_key_of(cert.public_key)))
    return tuple(found)


def _kind_of(key: Any, pkcs7: bool) -> str:
    if isinstance(key, dsa.DSAPublicKey):
        return KIND_DSA
    return KIND_RSA2048 if pkcs7 else KIND_RSA


def _check_pin(der: bytes, cert: asn1_x509.Certificate, kind: str, region: str, pins: RegionPins) -> None:
    pin = pins.get(der)
    if pin is None:
        return  # an operator's certificate: serves every region
    name = cert.subject.human_friendly
    if pin.kind != kind:
        raise UntrustedChain(f"AWS certificate {name!r} verifies {SIGNATURE_NAMES[pin.kind]} signatures, "
                             f"not {SIGNATURE_NAMES[kind]}", check="aws-key-kind")
    if not pin.serves(region):
        raise UntrustedChain(f"AWS certificate {name!r} serves {', '.join(sorted(pin.regions))}, not the "
                             f"document's region {region}", check="aws-region")


def _check_validity(cert: asn1_x509.Certificate, now: datetime) -> None:
    validity = cert["tbs_certificate"]["validity"]
    not_before, not_after = validity["not_before"].native, validity["not_after"].native
    if not not_before <= now <= not_after:
        state = "is not yet valid" if now < not_before else "expired"
        raise ChainExpired(f"the signature verifies with AWS certificate {cert.subject.human_friendly!r}, which {state} "
                           f"(valid {not_before:%Y-%m-%dT%H:%M:%SZ} .. {not_after:%Y-%m-%dT%H:%M:%SZ})")


def _verify_pkcs7(stmt: _Statement, identity: InstanceIdentity, trusted, pins: RegionPins, now: datetime):
    signed = cms.parse_signed_data(stmt.pkcs7, "attStmt.pkcs7")
    if signed.content is None:
        raise MalformedStatement("attStmt.pkcs7 carries no content; AWS embeds the document", check="aws-document-mismatch")
    if signed.content != stmt.document:
        raise MalformedStatement("attStmt.document differs from the content signed in attStmt.pkcs7",
                                 check="aws-document-mismatch")
    match = next(((der, cert, key) for der, cert, key in trusted if cms.names_certificate(signed, cert)), None)
    if match is None:
        raise UntrustedChain(f"the PKCS#7 signer ({signed.describe_signer()}) is none of the trusted AWS certificates")
    der, cert, key = match
    kind = _kind_of(key, pkcs7=True)
    _check_pin(der, cert, kind, identity.region, pins)
    # DSA with SHA-1 only from a DSA certificate: AWS still signs /pkcs7 that way (EC2 legacy).
    allowed = {cms.DSA_SHA1} if kind == KIND_DSA else {cms.RSA_SHA256}
    cms.verify_signer(signed, cert, stmt.document, allowed=allowed)
    _check_validity(cert, now)
    return der, kind


def _verify_signature(stmt: _Statement, identity: InstanceIdentity, trusted, pins: RegionPins, now: datetime):
    candidates = [(der, cert, key) for der, cert, key in trusted if isinstance(key, rsa.RSAPublicKey)
                  and (der not in pins or (pins[der].kind == KIND_RSA and pins[der].serves(identity.region)))]
    if not candidates:
        raise UntrustedChain(f"no trusted AWS RSA certificate serves region {identity.region}", check="aws-region")
    candidates.sort(key=lambda c: not _valid_at(c[1], now))  # those valid now first
    for der, cert, key in candidates:
        try:
            key.verify(stmt.signature, stmt.document, padding.PKCS1v15(), hashes.SHA256())
        except (_CryptoInvalidSignature, ValueError):
            continue
        _check_validity(cert, now)
        return der, KIND_RSA
    raise InvalidSignature(f"attStmt.signature (RSA PKCS#1 v1.5, SHA-256) over the document verifies with none of the "
                           f"{len(candidates)} trusted AWS RSA certificates of region {identity.region}",
                           check="aws-signature")


def _valid_at(cert: asn1_x509.Certificate, now: datetime) -> bool:
    validity = cert["tbs_certificate"]["validity"]
    return validity["not_before"].native <= now <= validity["not_after"].native


def _posture(identity: InstanceIdentity, kind: str) -> Posture:
    extra = {
        "aws_account_id": identity.account_id,
        "aws_availability_zone": identity.availability_zone,
        "aws_image_id": identity.image_id,
        "aws_instance_type": identity.instance_type,
        "aws_region": identity.region,
        "aws_signature": SIGNATURE_NAMES[kind],
    }
    return Posture(extra=tuple(sorted(extra.items())))
