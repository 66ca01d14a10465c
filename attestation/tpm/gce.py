"""Google Compute Engine vTPM AK certificates: the instance identity extension and the Google
Cloud profile that replaces the WebAuthn AIK profile for them (see `attestation.formats.tpm`).

Google certifies each Shielded VM's vTPM attestation key ("signingKey") and names the VM in
extension 1.3.6.1.4.1.11129.2.1.21 (cloudComputeInstanceIdentifier). Its ASN.1, as
google/go-tpm-tools `server/verify.go` declares it (`gceInstanceInfo`, Go encoding/asn1):

    GceInstanceInfo ::= SEQUENCE {
        zone                UTF8String,
        projectNumber       INTEGER,
        projectId           UTF8String,
        instanceId          INTEGER,
        instanceName        UTF8String,
        securityProperties  [0] EXPLICIT GceSecurityProperties OPTIONAL }

    GceSecurityProperties ::= SEQUENCE {
        securityVersion     [0] EXPLICIT INTEGER OPTIONAL,
        isProduction        [1] EXPLICIT BOOLEAN OPTIONAL,
        -- [2] .. [5] EXPLICIT BOOLEAN: present in every real certificate ([2] TRUE or
        -- FALSE, [3]..[5] FALSE as seen), meaning unpublished; go-tpm-tools reads [0], [1].
        ... }

The [2]..[5] members are declared (as `undocumented_2`..`_5`) so the strict parse accepts
real certificates; they are not used. go-tpm-tools refuses negative integers and ignores
the instance info of a non-production certificate; acmeda refuses both (`tpm-gce-instance`,
`tpm-gce-not-production`): a test-infrastructure vTPM must not name a production VM.

`check_ak_profile` is the Google Cloud profile, run when the AK certificate chains to a
Google vTPM root (the "tpm-gcp" trust domain). Checks (RequirementFailed unless stated):

- X.509 v3 (`tpm-aik-version`) and basicConstraints present with cA false
  (`tpm-aik-basic-constraints`), as in the WebAuthn profile;
- keyUsage present and allowing digitalSignature (`tpm-gce-key-usage`): the same Google CA
  certifies the VM's EK, with keyUsage keyEncipherment and the same instance extension, so
  this is what tells an AK certificate from an EK certificate here (WebAuthn uses the EKU);
- the instance extension present (`tpm-gce-instance-missing`), parsing strictly
  (`tpm-gce-instance`, MalformedStatement), with isProduction TRUE (`tpm-gce-not-production`);
- the TPM SAN, when present (legacy certificates), decodes (`tpm-san`); it is optional.

Extensions are read from their own bytes (`x509chain.extension_values`), so an extension
asn1crypto cannot parse elsewhere in the certificate does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import core
from asn1crypto import x509 as asn1_x509

from attestation.errors import MalformedStatement, RequirementFailed
from attestation.tpm.san import TpmSan, decode_san
from attestation.x509chain import extension_values

OID_GCE_INSTANCE = "1.3.6.1.4.1.11129.2.1.21"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_KEY_USAGE = "2.5.29.15"
OID_SAN = "2.5.29.17"


class GceSecurityProperties(core.Sequence):
    _fields = [
        ("security_version", core.Integer, {"explicit": 0, "optional": True}),
        ("is_production", core.Boolean, {"explicit": 1, "optional": True}),
        ("undocumented_2", core.Boolean, {"explicit": 2, "optional": True}),
        ("undocumented_3", core.Boolean, {"explicit": 3, "optional": True}),
        ("undocumented_4", core.Boolean, {"explicit": 4, "optional": True}),
        ("undocumented_5", core.Boolean, {"explicit": 5, "optional": True}),
    ]


class GceInstanceInfo(core.Sequence):
    _fields = [
        ("zone", core.UTF8String),
        ("project_number", core.Integer),
        ("project_id", core.UTF8String),
        ("instance_id", core.Integer),
        ("instance_name", core.UTF8String),
        ("security_properties", GceSecurityProperties, {"explicit": 0, "optional": True}),
    ]


@dataclass(frozen=True)
class GceInstance:
    """What the instance identity extension states about the VM."""

    zone: str
    project_number: int
    project_id: str
    instance_id: int
    instance_name: str
    security_version: int | None
    is_production: bool


@dataclass(frozen=True)
class GceAk:
    """A Google vTPM AK certificate that passed the Google Cloud profile."""

    instance: GceInstance
    san: TpmSan | None  # the legacy CA's TPM SAN (GOOG, vTPM, id:20160511); None for the EK/AK CA


def _malformed(detail: str) -> MalformedStatement:
    return MalformedStatement(f"GCE instance identity extension: {detail}", check="tpm-gce-instance")


def decode_instance(extn_value: bytes) -> GceInstance:
    """Decode GceInstanceInfo strictly from the extension's extnValue octets."""
    try:
        info = GceInstanceInfo.load(bytes(extn_value), strict=True).native
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, … on malformed DER
        raise _malformed(f"does not parse: {exc}") from None
    properties = info["security_properties"] or {}
    numbers = (info["project_number"], info["instance_id"], properties.get("security_version") or 0)
    if any(n < 0 for n in numbers):
        raise _malformed("a number (project, instance or security version) is negative")
    if not info["zone"] or not info["project_id"] or not info["instance_name"]:
        raise _malformed("zone, project id or instance name is empty")
    return GceInstance(info["zone"], info["project_number"], info["project_id"], info["instance_id"],
                       info["instance_name"], properties.get("security_version"), bool(properties.get("is_production")))


def _load(extensions: dict[str, bytes], oid: str, spec):
    raw = extensions.get(oid)
    if raw is None:
        return None
    try:
        value = spec.load(raw, strict=True)
        value.native
        return value
    except Exception as exc:
        raise MalformedStatement(f"the AK certificate's extension {oid} does not parse: {exc}", check="tpm-gce-ak") from None


def check_ak_profile(aik: asn1_x509.Certificate) -> GceAk:
    """The Google Cloud AK certificate profile (module docstring); the VM it names, or the failed check."""
    if aik["tbs_certificate"]["version"].native != "v3":
        raise RequirementFailed("the AK certificate is not X.509 version 3", check="tpm-aik-version")
    extensions = extension_values(aik, "the AK certificate")
    constraints = _load(extensions, OID_BASIC_CONSTRAINTS, asn1_x509.BasicConstraints)
    if constraints is None or constraints["ca"].native:
        raise RequirementFailed("the AK certificate must have basicConstraints with cA false", check="tpm-aik-basic-constraints")
    usage = _load(extensions, OID_KEY_USAGE, asn1_x509.KeyUsage)
    if usage is None or "digital_signature" not in usage.native:
        raise RequirementFailed("the AK certificate keyUsage does not allow digitalSignature: not an attestation key "
                                "(Google's EK certificates allow keyEncipherment only)", check="tpm-gce-key-usage")
    if OID_GCE_INSTANCE not in extensions:
        raise RequirementFailed(f"the AK certificate chains to a Google vTPM root but lacks the GCE instance identity "
                                f"extension {OID_GCE_INSTANCE}", check="tpm-gce-instance-missing")
    instance = decode_instance(extensions[OID_GCE_INSTANCE])
    if not instance.is_production:
        raise RequirementFailed("the GCE instance identity extension says isProduction FALSE", check="tpm-gce-not-production")
    san = decode_san(extensions[OID_SAN]) if OID_SAN in extensions else None
    return GceAk(instance, san)
