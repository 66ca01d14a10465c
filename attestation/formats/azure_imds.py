"""fmt "azure-imds": Azure Instance Metadata Service attested data (docs/cloud/azure-imds.md).

The attestation statement is `{"signature": bstr}`: the base64-decoded `signature` member
of `/metadata/attested/document?nonce=<nonce>`, a PKCS#7 SignedData whose content is a
JSON document (nonce, vmId, subscriptionId, plan, timeStamp, sku, licenseType) and which
embeds the signer's certificate. Checks, in order:

1. The SignedData parses (`attestation.cms`), and one embedded certificate is the signer.
2. The signer certificate chains to a configured root at `ctx.now` through the embedded
   and bundled intermediates (`TrustStore.roots_for` / `intermediates_for("azure-imds")`:
   DigiCert Global Root G2, Microsoft TLS RSA Root G2, DigiCert Global Root CA, and
   Microsoft's issuing CAs), and is not revoked.
3. The signer's subject has exactly one CN, and it is `metadata.azure.com`,
   `metadata.azure.us` or `metadata.azure.cn`, or a subdomain of one of them (Microsoft:
   "the certification validation should allow a common name from any .metadata.azure.com
   subdomain"). The public roots anchor any TLS certificate; this name check is what
   restricts them to Azure's IMDS. Azure Germany (microsoftazure.de) closed in 2021 and is
   not accepted.
4. The SignerInfo signature (RSA PKCS#1 v1.5, SHA-256; Azure signs the content directly,
   and its digestAlgorithm quirk is handled in `cms`) verifies with the signer's key.
5. The content is strict JSON with a vmId (UUID), a nonce and a timeStamp whose createdOn
   and expiresOn ("MM/DD/YY HH:MM:SS -0000", UTC) bracket `ctx.now` (createdOn may be up to
   CLOCK_SKEW ahead of our clock).
6. Binding: the nonce equals `binding.challenge`. Azure documents the nonce as "an optional
   10-digit string", so `acme_binding` derives it from the key authorization:
   SHA-256(key authorization) read as a big-endian integer, modulo 10^10, as 10 decimal
   digits (`nonce_for`). That leaves log2(10^10) = 33.2 bits of binding. Enough here: a
   challenge token is used once and fails for good on a mismatch, so an attacker holding
   N captured documents of a VM wins a new challenge with probability N / 10^10 per ACME
   order, and each document is usable only until its expiresOn (6 hours after createdOn).

The key in the CSR is not attested (`public_key` None: IMDS signs facts about the VM, not a
key), so the certificate's key is bound through the ACME account that answered the
challenge. `attested_at` is createdOn.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from asn1crypto import x509 as asn1_x509

from attestation import cms
from attestation.assigners import AZURE_VM_ID
from attestation.context import Binding, VerificationContext
from attestation.strict import strict_json
from attestation.errors import ChallengeMismatch, MalformedStatement, RequirementFailed, catch_builtins
from attestation.evidence import Evidence, PermanentIdentifier, Posture, TrustLevel
from attestation.format import Format
from attestation.roots import bundled
from attestation.x509chain import check_revocation, parse_certificate, verify_chain

FMT = "azure-imds"
NONCE_DIGITS = 10
CLOCK_SKEW = timedelta(minutes=5)  # tolerated between Azure's clock and ours for createdOn
CLOUDS = {"com": "AzureCloud", "us": "AzureUSGovernment", "cn": "AzureChinaCloud"}  # Azure's environment names
_SIGNER_NAME = re.compile(r"(?:(?:\*|[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.)*metadata\.azure\.(com|us|cn)")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TIMESTAMP = re.compile(r"[0-9]{2}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}")
_PLAN_FIELDS = ("name", "product", "publisher")


@dataclass(frozen=True)
class AttestedDocument:
    """The signed content of an attested data document; optional members None when absent or empty."""

    nonce: str
    vm_id: str
    created_on: datetime
    expires_on: datetime
    subscription_id: str | None = None
    sku: str | None = None
    license_type: str | None = None
    plan: tuple[tuple[str, str], ...] = ()  # (name|product|publisher, value), non-empty values only


def nonce_for(key_authorization: bytes) -> str:
    """The IMDS nonce a device requests for this challenge: 10 decimal digits of SHA-256(key authorization)."""
    value = int.from_bytes(hashlib.sha256(key_authorization).digest(), "big") % 10**NONCE_DIGITS
    return f"{value:0{NONCE_DIGITS}d}"


def acme_binding(token: str, key_authorization: bytes) -> Binding:
    return Binding(att_to_be_signed=key_authorization, challenge=nonce_for(key_authorization).encode("ascii"))


def default_roots() -> tuple[bytes, ...]:
    """Bundled trust anchors: DigiCert Global Root G2 and CA, Microsoft TLS RSA Root G2 (DER)."""
    return bundled("azure-imds")


def default_intermediates() -> tuple[bytes, ...]:
    """Bundled path-building helpers: Microsoft's TLS issuing CAs and the G2 cross-certificate (DER)."""
    return bundled("azure-imds/intermediates")


@catch_builtins
def verify(att_stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
    signed = cms.parse_signed_data(_signature(att_stmt), "attStmt.signature")
    signer_der = cms.signer_certificate(signed, signed.certificates)
    if signer_der is None:
        raise MalformedStatement(f"no embedded certificate is the PKCS#7 signer ({signed.describe_signer()})",
                                 check="cms-signer")
    others = tuple(der for der in signed.certificates if der != signer_der)
    intermediates = others + tuple(der for der in ctx.trust.intermediates_for(FMT) if der not in others)
    roots = ctx.trust.roots_for(FMT)
    path = verify_chain([signer_der], roots, ctx.now, intermediates=intermediates)
    check_revocation(path, ctx.revocation.get(FMT), FMT)
    cloud = _check_signer_name(path[0])
    if signed.content is None:
        raise MalformedStatement("attStmt.signature carries no content; IMDS embeds the attested document",
                                 check="azure-document")
    cms.verify_signer(signed, path[0], signed.content, allowed={cms.RSA_SHA256})
    document = parse_document(signed.content)
    _check_window(document, ctx.now)
    if document.nonce.encode("utf-8") != ctx.binding.challenge:
        raise ChallengeMismatch(f"attested document nonce {document.nonce!r} is not the challenge's "
                                f"{ctx.binding.challenge.decode('ascii', 'replace')!r}")
    return Evidence(
        fmt=FMT,
        public_key=None,
        trust_level=TrustLevel.CLOUD,
        permanent_identifiers=(PermanentIdentifier(document.vm_id, AZURE_VM_ID),),
        posture=_posture(document, cloud),
        chain=_ders(path, (signer_der, *intermediates, *roots)),
        attested_at=document.created_on,
    )


FORMAT = Format(name=FMT, verify=verify, acme_binding=acme_binding)


def _signature(att_stmt: Mapping[str, Any]) -> bytes:
    if not isinstance(att_stmt, Mapping):
        raise MalformedStatement("attStmt is not a map")
    signature = att_stmt.get("signature")
    if signature is None:
        raise MalformedStatement("attStmt.signature is missing")
    if not isinstance(signature, (bytes, bytearray)) or not signature:
        raise MalformedStatement("attStmt.signature is not a non-empty byte string (the base64-decoded PKCS#7)")
    return bytes(signature)


def _ders(path: list[asn1_x509.Certificate], known: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The DER of each certificate of `path`, taken from the bytes it was parsed from: re-serialising
    a parsed asn1crypto certificate costs more than the rest of the verification."""
    parsed = {id(cert): (cert, der) for der in known for cert in (parse_certificate(der),)}
    return tuple(parsed[id(cert)][1] if parsed.get(id(cert), (None,))[0] is cert else cert.dump() for cert in path)


def _check_signer_name(signer: asn1_x509.Certificate) -> str:
    """The Azure cloud the signer serves, from its one subject CN; else RequirementFailed."""
    names = [pair["value"].native for rdn in signer.subject.chosen for pair in rdn if pair["type"].native == "common_name"]
    if len(names) != 1 or not isinstance(names[0], str):
        raise RequirementFailed(f"the signer certificate has {len(names)} subject CNs; exactly one is required",
                                check="azure-signer-name")
    match = _SIGNER_NAME.fullmatch(names[0])
    if match is None:
        raise RequirementFailed(f"the signer certificate CN {names[0]!r} is not metadata.azure.com, .us or .cn "
                                "(or a subdomain)", check="azure-signer-name")
    return CLOUDS[match.group(1)]


@catch_builtins
def parse_document(content: bytes) -> AttestedDocument:
    """Parse the attested document strictly; MalformedStatement (check "azure-document") names the fault."""
    try:
        fields = strict_json(bytes(content).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedStatement(f"attested document is not strict UTF-8 JSON: {exc}", check="azure-document") from exc
    if not isinstance(fields, dict):
        raise MalformedStatement("attested document is not a JSON object", check="azure-document")
    nonce, vm_id = _text(fields, "nonce"), _text(fields, "vmId")
    if not _UUID.fullmatch(vm_id):
        raise MalformedStatement(f"attested document vmId {vm_id!r} is not a UUID", check="azure-document")
    stamps = fields.get("timeStamp")
    if not isinstance(stamps, dict):
        raise MalformedStatement("attested document timeStamp is missing or not an object", check="azure-document")
    created, expires = _time(stamps, "createdOn"), _time(stamps, "expiresOn")
    if expires < created:
        raise MalformedStatement("attested document expiresOn is before createdOn", check="azure-document")
    subscription = _optional_text(fields, "subscriptionId")
    if subscription is not None and not _UUID.fullmatch(subscription):
        raise MalformedStatement(f"attested document subscriptionId {subscription!r} is not a UUID", check="azure-document")
    return AttestedDocument(nonce=nonce, vm_id=vm_id, created_on=created, expires_on=expires,
                            subscription_id=subscription, sku=_optional_text(fields, "sku"),
                            license_type=_optional_text(fields, "licenseType"), plan=_plan(fields))


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedStatement(f"attested document {name} is missing or not a non-empty string", check="azure-document")
    return value


def _optional_text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise MalformedStatement(f"attested document {name} is not a string", check="azure-document")
    return value or None


def _plan(fields: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    plan = fields.get("plan")
    if plan is None:
        return ()
    if not isinstance(plan, dict):
        raise MalformedStatement("attested document plan is not an object", check="azure-document")
    return tuple((name, value) for name in _PLAN_FIELDS if (value := _optional_text(plan, name)) is not None)


def _time(stamps: Mapping[str, Any], name: str) -> datetime:
    value = stamps.get(name)
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise MalformedStatement(f"attested document timeStamp.{name} {value!r} is not \"MM/DD/YY HH:MM:SS -0000\"",
                                 check="azure-document")
    try:
        return datetime.strptime(value, "%m/%d/%y %H:%M:%S %z").astimezone(timezone.utc)
    except ValueError as exc:
        raise MalformedStatement(f"attested document timeStamp.{name} is not a date: {exc}", check="azure-document") from exc


def _check_window(document: AttestedDocument, now: datetime) -> None:
    if now + CLOCK_SKEW < document.created_on:
        raise RequirementFailed(f"attested document createdOn {document.created_on:%Y-%m-%dT%H:%M:%SZ} is in the future",
                                check="azure-timestamp")
    if now > document.expires_on:
        raise RequirementFailed(f"attested document expired at {document.expires_on:%Y-%m-%dT%H:%M:%SZ} (expiresOn)",
                                check="azure-timestamp")


def _posture(document: AttestedDocument, cloud: str) -> Posture:
    extra = {"azure_cloud": cloud, "azure_subscription_id": document.subscription_id, "azure_sku": document.sku,
             "azure_license_type": document.license_type}
    extra.update({f"azure_plan_{name}": value for name, value in document.plan})
    return Posture(extra=tuple(sorted((name, value) for name, value in extra.items() if value is not None)))
