"""The AK certificate acmeda's attestation CA issues after a credential activation.

Its profile is what WebAuthn §8.3.1 requires of a TPM attestation ("AIK") certificate, so the
`tpm` format (`attestation/formats/tpm.py`) accepts it in device-attest-01:

- X.509 version 3, a random 128-bit serial, an empty subject;
- subjectAltName, critical (the subject is empty, RFC 5280 §4.2.1.6): a directoryName with
  TPMManufacturer (2.23.133.2.1), TPMModel (2.23.133.2.2) and TPMVersion (2.23.133.2.3) as
  UTF8String, one RDN each (TCG EK Credential Profile §3.2.9), copied from the EK
  certificate's SAN or from the operator's registry, and an otherName PermanentIdentifier
  (RFC 4043) naming the machine: the EK hash with assigner `TPM_EK_HASH`, or the identifier
  the operator registered for that EK;
- extendedKeyUsage tcg-kp-AIKCertificate (2.23.133.8.3); basicConstraints cA FALSE
  (critical); keyUsage digitalSignature (critical); SKI from the AK, AKI from the CA.

notAfter never passes the attestation CA's own notAfter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ObjectIdentifier

from ca.keys import PublicKey, signature_hash_for
from ca.pki import OID_TCG_KP_AIK_CERTIFICATE, AttestationAuthority
from ca.san import ID_ON_PERMANENT_IDENTIFIER, PermanentIdentifier

OID_TPM_MANUFACTURER = ObjectIdentifier("2.23.133.2.1")
OID_TPM_MODEL = ObjectIdentifier("2.23.133.2.2")
OID_TPM_VERSION = ObjectIdentifier("2.23.133.2.3")


@dataclass(frozen=True)
class AkCertificateRequest:
    public_key: PublicKey
    identifier: str
    assigner: str | None
    manufacturer: str
    model: str
    version: str
    serial: int
    not_before: datetime
    lifetime: timedelta


def _subject_alternative_name(request: AkCertificateRequest) -> x509.SubjectAlternativeName:
    tpm = x509.Name([
        x509.NameAttribute(OID_TPM_MANUFACTURER, request.manufacturer),
        x509.NameAttribute(OID_TPM_MODEL, request.model),
        x509.NameAttribute(OID_TPM_VERSION, request.version),
    ])
    fields: dict[str, str] = {"identifier_value": request.identifier}
    if request.assigner is not None:
        fields["assigner"] = request.assigner
    machine = x509.OtherName(ID_ON_PERMANENT_IDENTIFIER, PermanentIdentifier(fields).dump())
    return x509.SubjectAlternativeName([x509.DirectoryName(tpm), machine])


_DIGITAL_SIGNATURE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
)


def issue_ak_certificate(authority: AttestationAuthority, request: AkCertificateRequest) -> bytes:
    """Sign the AK certificate; returns its DER."""
    ca = authority.certificate
    not_after = min(request.not_before + request.lifetime, ca.not_valid_after_utc)
    if not_after <= request.not_before:
        raise ValueError(f"the attestation CA expires at {ca.not_valid_after_utc.isoformat()}; re-create it")
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.subject)
        .public_key(request.public_key)
        .serial_number(request.serial)
        .not_valid_before(request.not_before)
        .not_valid_after(not_after)
        .add_extension(_subject_alternative_name(request), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_DIGITAL_SIGNATURE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([OID_TCG_KP_AIK_CERTIFICATE]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(request.public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(authority.key, signature_hash_for(authority.key))
    )
    return certificate.public_bytes(serialization.Encoding.DER)
