"""Fleet for fmt "azure-imds": a stand-in Azure TLS PKI and IMDS attested data documents.

A generated root stands in for DigiCert Global Root G2, an intermediate for "Microsoft
Azure TLS Issuing CA 05" (a `TrustStore` intermediate, as the real one is bundled), and a
leaf `CN=metadata.azure.com` for the IMDS signing certificate. `attest(document, ...)` returns
an `AzureAttestation` whose attStmt is what a VM sends (`{"signature": PKCS#7}` signed in
Azure's shape: no signed attributes, digestAlgorithm sha256WithRSAEncryption, only the
leaf embedded). Knobs for every checked field:

- `document`: a `Document` (nonce, vmId, subscriptionId, sku, licenseType, plan,
  createdOn/expiresOn as datetimes or raw text); `drop`, `extra`, `raw` as in the AWS fleet.
- `common_name`: the signer's subject CN (None: no CN); `extra_cn` adds a second one.
- `validity`: the signer certificate's dates; `issuer`: a `Pki` (`pki("Rogue")`: untrusted).
- `embed`: certificates embedded besides the leaf ("intermediate"), or "none" (not even the leaf).
- `pkcs7`: keyword arguments for `tests.fleet.pkcs7.signed_data`; `signer_key`: "leaf"
  (default) or "intermediate" (signs with the wrong key).
- `stmt`: attStmt members replaced (a None value removes the member).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Mapping

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from attestation.context import TrustStore
from attestation.formats import azure_imds
from tests.fleet.pkcs7 import SHA256_WITH_RSA, der, signed_data

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)  # = tests/conftest.py START
VM_ID = "0f1ee700-0000-4000-8000-000000000001"
PKI_VALIDITY = (datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2038, 1, 1, tzinfo=timezone.utc))
LEAF_VALIDITY = (NOW - timedelta(days=60), NOW + timedelta(days=120))


def azure_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%m/%d/%y %H:%M:%S -0000")


@dataclass(frozen=True)
class Document:
    """The attested data content, in Azure's compact JSON with sorted members."""

    nonce: str = "0123456789"
    vm_id: str = VM_ID
    subscription_id: str = "0f1ee700-1111-4222-8333-444444444444"
    sku: str = "22_04-lts-gen2"
    license_type: str = ""
    plan: Mapping[str, str] | None = field(default_factory=lambda: {"name": "", "product": "", "publisher": ""})
    created_on: datetime | str = NOW - timedelta(minutes=1)
    expires_on: datetime | str = NOW + timedelta(hours=6) - timedelta(minutes=1)
    extra: Mapping[str, Any] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    raw: bytes | None = None

    def to_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        stamp = {name: azure_time(v) if isinstance(v, datetime) else v
                 for name, v in (("createdOn", self.created_on), ("expiresOn", self.expires_on))}
        members = {"licenseType": self.license_type, "nonce": self.nonce, "plan": self.plan, "sku": self.sku,
                   "subscriptionId": self.subscription_id, "timeStamp": stamp, "vmId": self.vm_id, **self.extra}
        for name in self.drop:
            members.pop(name, None)
        return json.dumps(members, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    root_key: Any
    intermediate: x509.Certificate
    intermediate_key: Any

    def trust(self) -> TrustStore:
        return TrustStore(roots={azure_imds.FMT: (der(self.root),)}, intermediates={azure_imds.FMT: (der(self.intermediate),)})


@dataclass(frozen=True)
class AzureAttestation:
    att_stmt: dict[str, Any]
    content: bytes
    trust: TrustStore  # what a correctly configured CA trusts (the fleet's legitimate PKI)

    def att_obj(self) -> bytes:
        return cbor2.dumps({"fmt": azure_imds.FMT, "attStmt": self.att_stmt})


@lru_cache(maxsize=None)
def _rsa(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_names: tuple[str, ...], organization: str = "Microsoft Corporation") -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    return x509.Name(attributes + [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names])


def _cert(subject: x509.Name, key: Any, issuer: x509.Name, issuer_key: Any, validity, ca: bool,
          path_length: int | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(validity[0]).not_valid_after(validity[1])
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


@lru_cache(maxsize=None)
def pki(name: str = "Fleet") -> Pki:
    root_key, issuing_key = _rsa(f"{name}-root"), _rsa(f"{name}-issuing")
    root_name = _name((f"{name} DigiCert Global Root G2",), "DigiCert Inc")
    root = _cert(root_name, root_key, root_name, root_key, PKI_VALIDITY, ca=True)
    issuing = _cert(_name((f"{name} Microsoft Azure TLS Issuing CA 05",)), issuing_key, root_name, root_key, PKI_VALIDITY,
                    ca=True, path_length=0)
    return Pki(root, root_key, issuing, issuing_key)


@lru_cache(maxsize=None)
def signer(issuer: Pki, common_names: tuple[str, ...] = ("metadata.azure.com",),
           validity: tuple[datetime, datetime] = LEAF_VALIDITY) -> tuple[x509.Certificate, Any]:
    key = _rsa("leaf")
    subject = _name(common_names)
    return _cert(subject, key, issuer.intermediate.subject, issuer.intermediate_key, validity, ca=False), key


def attest(
    document: Document = Document(),
    *,
    common_name: str | None = "metadata.azure.com",
    extra_cn: str | None = None,
    validity: tuple[datetime, datetime] = LEAF_VALIDITY,
    issuer: Pki | None = None,
    embed: str = "leaf",
    signer_key: str = "leaf",
    pkcs7: Mapping[str, Any] | None = None,
    stmt: Mapping[str, Any] | None = None,
) -> AzureAttestation:
    issuing = issuer or pki()
    names = tuple(cn for cn in (common_name, extra_cn) if cn is not None)
    leaf, leaf_key = signer(issuing, names, validity)
    content = document.to_bytes()
    embedded = {"leaf": [leaf], "intermediate": [leaf, issuing.intermediate], "none": []}[embed]
    key = leaf_key if signer_key == "leaf" else issuing.intermediate_key
    options = {"digest_oid": SHA256_WITH_RSA, "signed_attributes": False, "certificates": embedded, **(pkcs7 or {})}
    att_stmt: dict[str, Any] = {"signature": signed_data(content, leaf, key, **options)}
    for member, value in (stmt or {}).items():
        if value is None:
            att_stmt.pop(member, None)
        else:
            att_stmt[member] = value
    return AzureAttestation(att_stmt, content, pki().trust())


def for_acme(token: str, key_authorization: bytes, **knobs: Any) -> AzureAttestation:
    """What a VM sends for this challenge: attested data requested with the derived nonce."""
    return attest(Document(nonce=azure_imds.nonce_for(key_authorization)), **knobs)
