"""The device's certificate signing request (RFC 2986), signed inside the TPM.

The key never leaves the TPM, so the CSR cannot be built with `cryptography`'s builder
(it wants a private key object): the CertificationRequestInfo is built with asn1crypto,
its SHA-256 digest is handed to a signer callback (TPM2_Sign, ECDSA-SHA256), and the DER
signature it returns completes the request.

Content, per what acmeda's finalize accepts for device orders (ca/csr.py) and the draft
(§3.2: the CSR SHOULD list the identifiers): an empty subject, the TPM key's
SubjectPublicKeyInfo, and an extensionRequest with a subjectAltName holding the order's
PermanentIdentifier (RFC 4043) as an otherName. With `identifier=None` the CSR carries no
SAN at all (the draft's privacy-preserving mode).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

from asn1crypto import core, csr as asn1_csr, keys, x509 as asn1_x509

OID_PERMANENT_IDENTIFIER = "1.3.6.1.5.5.7.8.3"  # id-on-permanentIdentifier, RFC 4043
ECDSA_WITH_SHA256 = "sha256_ecdsa"  # asn1crypto's name of 1.2.840.10045.4.3.2

DigestSigner = Callable[[bytes], bytes]  # SHA-256 digest -> DER ECDSA-Sig-Value


class PermanentIdentifierValue(core.Sequence):
    """RFC 4043: PermanentIdentifier ::= SEQUENCE { identifierValue UTF8String OPTIONAL,
    assigner OBJECT IDENTIFIER OPTIONAL }."""

    _fields = [
        ("identifier_value", core.UTF8String, {"optional": True}),
        ("assigner", core.ObjectIdentifier, {"optional": True}),
    ]


@dataclass(frozen=True)
class PermanentIdentifier:
    """The identifier the AK enrollment proved: its value and, when present, its assigner OID."""

    value: str
    assigner: str | None = None

    @property
    def order_value(self) -> str:
        """The draft §3.1 text form used in the order: value ["/" assigner]."""
        return self.value if self.assigner is None else f"{self.value}/{self.assigner}"

    def general_name(self) -> asn1_x509.GeneralName:
        fields = {"identifier_value": self.value}
        if self.assigner is not None:
            fields["assigner"] = self.assigner
        # AnotherName.value is [0] EXPLICIT ANY: asn1crypto applies the tag only when the value carries it.
        other = asn1_x509.AnotherName({"type_id": OID_PERMANENT_IDENTIFIER,
                                       "value": PermanentIdentifierValue(fields, explicit=0)})
        return asn1_x509.GeneralName(name="other_name", value=other)


def _extension_request(identifier: PermanentIdentifier) -> asn1_csr.CRIAttribute:
    # RFC 5280 §4.2.1.6: with an empty subject the SAN is critical.
    san = asn1_x509.Extension({"extn_id": "subject_alt_name", "critical": True,
                               "extn_value": asn1_x509.GeneralNames([identifier.general_name()])})
    return asn1_csr.CRIAttribute({"type": "extension_request", "values": [asn1_x509.Extensions([san])]})


def build_csr(spki_der: bytes, sign_digest: DigestSigner, identifier: PermanentIdentifier | None) -> bytes:
    """A DER PKCS#10 request for the key `spki_der`, signed by `sign_digest` (ECDSA-SHA256)."""
    attributes = [_extension_request(identifier)] if identifier is not None else []
    info = asn1_csr.CertificationRequestInfo({
        "version": "v1",
        "subject": asn1_x509.Name.build({}),
        "subject_pk_info": keys.PublicKeyInfo.load(spki_der),
        "attributes": attributes,
    })
    signature = sign_digest(hashlib.sha256(info.dump()).digest())
    request = asn1_csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": {"algorithm": ECDSA_WITH_SHA256},
        "signature": signature,
    })
    return request.dump()
