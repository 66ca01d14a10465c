"""Fleet for the "tpm" format on a Google Compute Engine vTPM: Google-style AK certificates.

A generated "EK/AK CA Root" and "EK/AK CA Intermediate" stand in for Google's vTPM CA (the
"tpm-gcp" trust domain). `make(knobs, binding)` builds a full "tpm" statement with
tests/fleet/tpm.py (the same TPMT_PUBLIC, TPMS_ATTEST and AK signature), then replaces the
AK certificate with one in Google's shape and sends it alone, as a VM does (the
intermediate comes from the TrustStore). Knobs:

- `style`: "ek-ak-ca" (2022+: the VM in the subject, no EKU, no SAN), "legacy"
  (tpm_ek_v1_cloud_host: empty subject, EKU 2.23.133.8.1, TPM SAN GOOG/vTPM), or
  "webauthn" (a WebAuthn AIK profile certificate: empty subject, tcg-kp-AIKCertificate,
  TPM SAN, no instance extension);
- `instance`: GceInstanceInfo members replaced (None removes an optional one),
  `security`: GceSecurityProperties members replaced the same way;
  `instance_der`: raw extension bytes; `instance_extension`: False leaves it out;
- `key_usage`: "sign" (digitalSignature), "encipher" (keyEncipherment, as an EK
  certificate) or None (no keyUsage); `ak_ca`: basicConstraints cA (None: absent);
- `issuer`: "google" (the stand-in Google CA), "webauthn" (the tests/fleet/tpm.py AIK CA),
  "lookalike" (a Google-named CA nobody trusts); `send_intermediate` puts it in x5c;
- `tpm`: the tests/fleet/tpm.py `Knobs` of the statement itself (alg, key, extraData…).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Mapping

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID, ObjectIdentifier

from attestation.context import Binding, TrustStore, VerificationContext
from attestation.format import key_authorization_binding
from attestation.formats import tpm
from attestation.tpm.gce import OID_GCE_INSTANCE, GceInstanceInfo
from tests.fleet import tpm as tpm_fleet, with_changes

NOW = tpm_fleet.NOW
INSTANCE_ID = 4520917745119201234
OID_EK_CERTIFICATE = ObjectIdentifier("2.23.133.8.1")
INSTANCE = {"zone": "europe-west1-b", "project_number": 123456789012, "project_id": "acmeda-fleet",
            "instance_id": INSTANCE_ID, "instance_name": "fleet-vm-1"}
SECURITY = {"security_version": 0, "is_production": True, "undocumented_2": True, "undocumented_3": False,
            "undocumented_4": False, "undocumented_5": False}


@dataclass(frozen=True)
class Knobs:
    style: str = "ek-ak-ca"
    instance: Mapping[str, Any] = field(default_factory=dict)
    security: Mapping[str, Any] = field(default_factory=dict)
    instance_der: bytes | None = None
    instance_extension: bool = True
    key_usage: str | None = "sign"
    ak_ca: bool | None = False
    issuer: str = "google"
    send_intermediate: bool = False
    tpm: tpm_fleet.Knobs = tpm_fleet.Knobs(key="p256")


def instance_extension(knobs: Knobs) -> bytes:
    """GceInstanceInfo DER, as Google's CA writes it."""
    if knobs.instance_der is not None:
        return knobs.instance_der
    info = with_changes(INSTANCE, knobs.instance)
    security = with_changes(SECURITY, knobs.security)
    if security:
        info["security_properties"] = security

    class Partial(GceInstanceInfo):  # the schema without the members a knob removed (asn1crypto needs them all)
        _fields = [spec for spec in GceInstanceInfo._fields if spec[0] in info or spec[0] == "security_properties"]

    return Partial(info).dump()


@lru_cache(maxsize=None)
def google_pki(lookalike: bool = False) -> tuple[x509.Certificate, x509.Certificate, Any]:
    """(root, intermediate, intermediate key) of the stand-in Google vTPM CA; `lookalike` is untrusted."""
    slot = 33 if lookalike else 23
    root_key, ca_key = tpm_fleet.private_key("p256", slot=slot), tpm_fleet.private_key("p256", slot=slot + 1)
    root = tpm_fleet._ca("acmeda test Google EK/AK CA Root", root_key, None, root_key, NOW)
    intermediate = tpm_fleet._ca("acmeda test Google EK/AK CA Intermediate", ca_key, root.subject, root_key, NOW)
    return root, intermediate, ca_key


def _issuer(knobs: Knobs) -> tuple[x509.Certificate, Any]:
    if knobs.issuer == "webauthn":
        _root, intermediate, key = tpm_fleet.pki()
    else:
        _root, intermediate, key = google_pki(lookalike=knobs.issuer == "lookalike")
    return intermediate, key


def _subject(knobs: Knobs) -> x509.Name:
    if knobs.style != "ek-ak-ca":
        return x509.Name([])
    info = with_changes(INSTANCE, knobs.instance)
    return x509.Name([x509.NameAttribute(NameOID.LOCALITY_NAME, info.get("zone", "z")),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Google Compute Engine"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, info.get("project_id", "p")),
                      x509.NameAttribute(NameOID.COMMON_NAME, str(info.get("instance_id", 0)))])


def _key_usage(kind: str) -> x509.KeyUsage:
    sign, encipher = kind == "sign", kind == "encipher"
    return x509.KeyUsage(sign, False, encipher, False, False, False, False, False, False)


def ak_certificate(knobs: Knobs, ak_public) -> bytes:
    issuer, issuer_key = _issuer(knobs)
    builder = (x509.CertificateBuilder().subject_name(_subject(knobs)).issuer_name(issuer.subject).public_key(ak_public)
               .serial_number(x509.random_serial_number())
               .not_valid_before(knobs.tpm.ak_not_before).not_valid_after(knobs.tpm.ak_not_after))
    if knobs.key_usage is not None:
        builder = builder.add_extension(_key_usage(knobs.key_usage), critical=True)
    if knobs.ak_ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=knobs.ak_ca, path_length=None), critical=True)
    if knobs.style in ("legacy", "webauthn"):
        eku = OID_EK_CERTIFICATE if knobs.style == "legacy" else tpm_fleet.OID_AIK
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        tpm_id = ("id:474F4F47", "vTPM", "id:20160511") if knobs.style == "legacy" else knobs.tpm.ak_tpm
        san_knobs = replace(knobs.tpm, ak_tpm=tpm_id)
        builder = builder.add_extension(x509.SubjectAlternativeName(tpm_fleet._tpm_name(san_knobs)), critical=True)
    if knobs.instance_extension and knobs.style != "webauthn":
        extension = x509.UnrecognizedExtension(ObjectIdentifier(OID_GCE_INSTANCE), instance_extension(knobs))
        builder = builder.add_extension(extension, critical=False)
    return tpm_fleet._der(builder.sign(issuer_key, hashes.SHA256()))


def trust() -> TrustStore:
    """What a CA trusts: the WebAuthn fleet root as "tpm", the stand-in Google CA as "tpm-gcp"."""
    root, intermediate, _key = google_pki()
    return TrustStore(roots={tpm.NAME: (tpm_fleet._der(tpm_fleet.pki()[0]),), tpm.GCP_TRUST: (tpm_fleet._der(root),)},
                      intermediates={tpm.GCP_TRUST: (tpm_fleet._der(intermediate),)})


def make(knobs: Knobs = Knobs(), binding: Binding | None = None) -> tpm_fleet.Sample:
    """A "tpm" statement from a GCE vTPM whose AK certificate is Google-style."""
    binding = binding or key_authorization_binding("token", b"token.thumbprint")
    sample = tpm_fleet.make(knobs.tpm, binding)
    ak_kind = knobs.tpm.ak_key or tpm_fleet._ALG_AK_KEY.get(knobs.tpm.alg, "rsa")
    certified = tpm_fleet.private_key(ak_kind, slot=5 if knobs.tpm.foreign_ak else 2)  # slot 2 signs certInfo
    ak_der = ak_certificate(knobs, certified.public_key())
    x5c = [ak_der] + ([tpm_fleet._der(_issuer(knobs)[0])] if knobs.send_intermediate else [])
    att_stmt = dict(sample.att_stmt, x5c=x5c)
    return replace(sample, att_stmt=att_stmt, ctx=VerificationContext(binding, NOW, trust()), ak_certificate=ak_der)


def mutate(**changes: Any) -> tpm_fleet.Sample:
    return make(replace(Knobs(), **changes))


def att_obj(sample: tpm_fleet.Sample) -> bytes:
    return cbor2.dumps({"fmt": tpm.NAME, "attStmt": sample.att_stmt})
