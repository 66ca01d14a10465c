"""The "tpm" attestation statement format (WebAuthn Level 2 §8.3), for ACME device-attest-01.

    attStmt = {ver: "2.0", alg: COSEAlgorithmIdentifier, x5c: [aikCert, *chain],
               sig: bytes, certInfo: TPMS_ATTEST, pubArea: TPMT_PUBLIC}

A TPM proves that it holds the key described by `pubArea` by certifying it (TPM2_Certify)
with an attestation key (AK, "AIK" in WebAuthn) whose certificate chains to a trusted CA:
`certInfo` names the key and carries the caller's `extraData`, and `sig` is the AK's
signature over `certInfo`.

Binding. `extraData` must equal H(attToBeSigned), with H the hash of `alg`. In ACME
(draft-ietf-acme-device-attest §5) attToBeSigned is the key authorization, so with the
RS256 / ES256 / PS256 an ACME client sends, extraData = SHA-256(key authorization). In
WebAuthn it is authenticatorData || clientDataHash, hashed the same way, so real Windows
Hello statements verify unchanged.

Checks, in order, each failing with its own error and `check` name:

- statement shape: field types (MalformedStatement, `tpm-statement`); ecdaaKeyId
  (UnsupportedFormat, `tpm-ecdaa`: ECDAA was removed from WebAuthn); ver == "2.0"
  (UnsupportedFormat, `tpm-ver`); alg in ALGORITHMS (UnsupportedFormat, `tpm-alg`);
- pubArea and certInfo parse strictly (`tpm-public`, `tpm-attest`, `tpm-attest-magic`,
  `tpm-attest-type`, see `attestation.tpm.structs`); certInfo.type is
  TPM_ST_ATTEST_CERTIFY (RequirementFailed, `tpm-attest-type`);
- certInfo.extraData == H_alg(attToBeSigned) (ChallengeMismatch, `tpm-extra-data`);
- certInfo.attested.name == nameAlg || H_nameAlg(pubArea) (RequirementFailed,
  `tpm-attested-name`);
- pubArea.objectAttributes: fixedTPM, fixedParent, sensitiveDataOrigin and sign set
  (RequirementFailed, `tpm-object-attributes`). WebAuthn does not ask this; acmeda does,
  because only such a key was generated in, and cannot leave, the TPM, which is what
  `key_protection="tpm"` and TrustLevel.HARDWARE claim;
- x5c chains to the configured "tpm" (or "tpm-gcp", see below) roots at ctx.now
  (`attestation.x509chain`), and no certificate of the path is revoked by
  ctx.revocation["tpm"];
- AK certificate profile (WebAuthn §8.3.1; RequirementFailed): version 3
  (`tpm-aik-version`), empty subject (`tpm-aik-subject`), EKU holds tcg-kp-AIKCertificate
  2.23.133.8.3 (`tpm-aik-eku`), basicConstraints present with cA false
  (`tpm-aik-basic-constraints`), a SAN (critical or not) whose directoryName holds TPM
  manufacturer, model and version (`tpm-aik-san`; see `attestation.tpm.san` for the real
  encodings accepted). The FIDO AAGUID extension (1.3.6.1.4.1.45724.1.1.4) is
  WebAuthn-specific and ignored: ACME has no authenticatorData to compare it with;
- sig verifies over certInfo with the AK certificate's key and `alg` (InvalidSignature,
  `tpm-sig`; `tpm-sig-alg` when alg does not fit the key type).

Algorithms: RS256, PS256, ES256, ES384, and RS1 (RSASSA-PKCS1-v1_5 with SHA-1, COSE
-65535). RS1 is accepted ONLY because the TPM format forces it: Windows Hello and many TPM
2.0 firmwares sign with SHA-1 and it is the `alg` every real Windows statement carries.
It is accepted nowhere else, and Posture.extra records the algorithm (`tpm_sig_alg`) so
policy can refuse SHA-1 attestations. PS256 accepts any salt length: TPMs of different
revisions use the digest length or the maximum.

Evidence: the SPKI of the pubArea key (RSA or ECC); the AK SAN's PermanentIdentifier /
HardwareModuleName otherNames when present; posture key_protection "tpm", firmware_version
= the SAN TPMVersion as written (e.g. "id:00020000"; its encoding is vendor-defined), and
extra facts tpm_manufacturer (the TCG vendor ID as text, "NTC"), tpm_model, tpm_sig_alg.
TPMS_ATTEST.firmwareVersion is NOT used: the TPM obfuscates it (with resetCount and
restartCount) when the AK is not in the endorsement or platform hierarchy, which is the case
for Windows AIKs, so it proves nothing unless an enrollment knows the AK's hierarchy.

Cloud vTPMs (docs/cloud/gcp-vtpm.md). The chain is built to the "tpm" roots and to the
roots of the "tpm-gcp" trust domain together (Google Compute Engine's vTPM AK CAs,
`default_gcp_roots`, with `default_gcp_intermediates` as path helpers: a VM sends its AK
certificate alone). When the anchor reached is a "tpm-gcp" root, the Google Cloud profile
(`attestation.tpm.gce.check_ak_profile`) replaces the WebAuthn AIK profile. It differs
exactly here, because Google's AK certificates follow neither the WebAuthn §8.3.1 nor the
TCG AIK profile:

- subject: not required empty. The "EK/AK CA" (2022+) names the VM in it (L=zone,
  O=Google Compute Engine, OU=project, CN=instance id); it is not read, the extension is;
- EKU: not required. EK/AK CA certificates have none and the legacy CA writes
  tcg-kp-EKCertificate (2.23.133.8.1) on AK certificates. Instead keyUsage must allow
  digitalSignature (`tpm-gce-key-usage`): the same CA certifies the VM's EK with the same
  instance extension and keyUsage keyEncipherment, and that is what tells them apart;
- SAN: optional (the EK/AK CA has none); when present it gives tpm_manufacturer ("GOOG"),
  tpm_model ("vTPM") and firmware_version; its otherNames are not used as identifiers;
- required instead: the GCE instance identity extension 1.3.6.1.4.1.11129.2.1.21, strictly
  decoded, with isProduction TRUE (`tpm-gce-instance-missing`, `tpm-gce-instance`,
  `tpm-gce-not-production`). A WebAuthn-profile certificate under a Google root fails here;
- unchanged: X.509 v3 and basicConstraints cA false; every check of the statement itself
  (extraData binding, attested name, object attributes, signature by the AK).

Google's AK ("signingKey") is a restricted signing key (the real GCE AK in the vectors has
objectAttributes 0x00050072), so it signs only TPM-generated structures such as certInfo.
Evidence under the Google profile: PermanentIdentifier(instance id in decimal,
GCE_INSTANCE_ID); trust_level CLOUD, not HARDWARE (a vTPM is software in the hypervisor:
its keys are as safe as Google's host, not a chip); key_protection "vtpm"; extra facts
gce_instance_name, gce_is_production, gce_project_id, gce_project_number,
gce_security_version (when stated), gce_zone, tpm_sig_alg (and tpm_manufacturer,
tpm_model with the SAN). Azure Trusted Launch vTPMs have no bundled profile: they enroll
through acmeda's own AK enrollment (EK -> AK credential activation).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from typing import Any, Mapping

from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from attestation.assigners import GCE_INSTANCE_ID
from attestation.context import Binding, VerificationContext
from attestation.errors import (
    ChallengeMismatch, InvalidSignature, MalformedStatement, RequirementFailed,
    UnsupportedFormat, catch_builtins,
)
from attestation.evidence import Evidence, PermanentIdentifier, Posture, TrustLevel
from attestation.format import Format, key_authorization_binding
from attestation.roots import bundled
from attestation.tpm import gce
from attestation.tpm.constants import ObjectAttr, St
from attestation.tpm.quote import QuoteBundle, boot_posture
from attestation.tpm.san import TpmSan, decode_san, san_extension
from attestation.tpm.structs import TpmsAttest, TpmtPublic, compute_name
from attestation.x509chain import check_revocation, public_key_of, verify_chain

NAME = "tpm"
GCP_TRUST = "tpm-gcp"  # TrustStore key of Google Compute Engine's vTPM AK CAs
OID_TCG_KP_AIK_CERTIFICATE = "2.23.133.8.3"
REQUIRED_OBJECT_ATTRIBUTES = (
    ObjectAttr.FIXED_TPM | ObjectAttr.FIXED_PARENT | ObjectAttr.SENSITIVE_DATA_ORIGIN | ObjectAttr.SIGN_ENCRYPT
)


def default_roots() -> tuple[bytes, ...]:
    """Bundled trust anchors: Microsoft TPM Root Certificate Authority 2014 (DER). acmeda's own
    AK CA and cloud vTPM AK CAs are added by configuration."""
    return bundled("tpm")


def default_gcp_roots() -> tuple[bytes, ...]:
    """Bundled "tpm-gcp" anchors: Google's legacy tpm_ek_v1_cloud_host root and EK/AK CA Root (DER)."""
    return bundled("tpm-gcp")


def default_gcp_intermediates() -> tuple[bytes, ...]:
    """Bundled "tpm-gcp" path helpers: Google's vTPM AK issuing CAs (DER)."""
    return bundled("tpm-gcp/intermediates")


@dataclass(frozen=True)
class SignatureAlg:
    """A COSE algorithm the AK may sign certInfo with (RFC 9053, RFC 8812)."""

    name: str
    hash: type[hashes.HashAlgorithm]
    key_type: type
    pss: bool = False


ALGORITHMS: Mapping[int, SignatureAlg] = {
    -257: SignatureAlg("RS256", hashes.SHA256, rsa.RSAPublicKey),
    -37: SignatureAlg("PS256", hashes.SHA256, rsa.RSAPublicKey, pss=True),
    -7: SignatureAlg("ES256", hashes.SHA256, ec.EllipticCurvePublicKey),
    -35: SignatureAlg("ES384", hashes.SHA384, ec.EllipticCurvePublicKey),
    -65535: SignatureAlg("RS1", hashes.SHA1, rsa.RSAPublicKey),  # only because TPMs force it
}


@dataclass(frozen=True)
class TpmStatement:
    """The attStmt map, with every field of the type the format defines."""

    ver: str
    alg: int
    x5c: tuple[bytes, ...]
    sig: bytes
    cert_info: bytes
    pub_area: bytes

    @classmethod
    def from_att_stmt(cls, att_stmt: Mapping[str, Any]) -> TpmStatement:
        if not isinstance(att_stmt, Mapping):
            raise MalformedStatement("tpm attStmt is not a map", check="tpm-statement")
        if "ecdaaKeyId" in att_stmt:
            raise UnsupportedFormat("tpm attStmt uses ECDAA (ecdaaKeyId), which is not supported", check="tpm-ecdaa")
        ver, alg, x5c = att_stmt.get("ver"), att_stmt.get("alg"), att_stmt.get("x5c")
        if not isinstance(ver, str):
            raise MalformedStatement("tpm attStmt.ver is missing or not a text string", check="tpm-statement")
        if not isinstance(alg, int) or isinstance(alg, bool):
            raise MalformedStatement("tpm attStmt.alg is missing or not an integer", check="tpm-statement")
        if not isinstance(x5c, (list, tuple)) or not x5c or not all(isinstance(c, bytes) for c in x5c):
            raise MalformedStatement("tpm attStmt.x5c is missing, empty or not a list of byte strings", check="tpm-statement")
        fields = {}
        for key in ("sig", "certInfo", "pubArea"):
            if not isinstance(att_stmt.get(key), bytes):
                raise MalformedStatement(f"tpm attStmt.{key} is missing or not a byte string", check="tpm-statement")
            fields[key] = att_stmt[key]
        return cls(ver, alg, tuple(x5c), fields["sig"], fields["certInfo"], fields["pubArea"])


def _digest(hash_cls: type[hashes.HashAlgorithm], data: bytes) -> bytes:
    digest = hashes.Hash(hash_cls())
    digest.update(data)
    return digest.finalize()


def _algorithm(stmt: TpmStatement) -> SignatureAlg:
    if stmt.ver != "2.0":
        raise UnsupportedFormat(f"tpm attStmt.ver is {stmt.ver!r}; only \"2.0\" is supported", check="tpm-ver")
    alg = ALGORITHMS.get(stmt.alg)
    if alg is None:
        raise UnsupportedFormat(f"tpm attStmt.alg {stmt.alg} is not supported", check="tpm-alg")
    return alg


def _check_certify(attest: TpmsAttest, public: TpmtPublic, stmt: TpmStatement, alg: SignatureAlg, binding: Binding) -> None:
    """certInfo certifies exactly pubArea, for exactly this challenge."""
    if attest.type != St.ATTEST_CERTIFY:
        raise RequirementFailed(f"certInfo.type is {St(attest.type).name}, not ATTEST_CERTIFY", check="tpm-attest-type")
    expected = _digest(alg.hash, binding.att_to_be_signed)
    if not hmac.compare_digest(attest.extra_data, expected):
        raise ChallengeMismatch(
            f"certInfo.extraData is not the {alg.hash.name.upper()} of attToBeSigned (the key authorization)",
            check="tpm-extra-data",
        )
    if not hmac.compare_digest(attest.attested.name, compute_name(public.name_alg, stmt.pub_area)):
        raise RequirementFailed("certInfo.attested.name is not the Name of pubArea: it certifies another key", check="tpm-attested-name")
    missing = ObjectAttr(REQUIRED_OBJECT_ATTRIBUTES & ~public.object_attributes)
    if missing:
        raise RequirementFailed(
            f"pubArea.objectAttributes {public.object_attributes:#010x} lacks {missing.name}: not a TPM-generated, non-exportable signing key",
            check="tpm-object-attributes",
        )


def _check_aik_profile(aik: asn1_x509.Certificate) -> TpmSan:
    """WebAuthn §8.3.1 TPM attestation statement certificate requirements."""
    if aik["tbs_certificate"]["version"].native != "v3":
        raise RequirementFailed("the AIK certificate is not X.509 version 3", check="tpm-aik-version")
    if len(aik.subject.chosen):
        raise RequirementFailed(f"the AIK certificate subject must be empty, not {aik.subject.human_friendly!r}", check="tpm-aik-subject")
    usages = aik.extended_key_usage_value
    if usages is None or OID_TCG_KP_AIK_CERTIFICATE not in {usage.dotted for usage in usages}:
        raise RequirementFailed("the AIK certificate EKU lacks tcg-kp-AIKCertificate (2.23.133.8.3)", check="tpm-aik-eku")
    constraints = aik.basic_constraints_value
    if constraints is None or constraints["ca"].native:
        raise RequirementFailed("the AIK certificate must have basicConstraints with cA false", check="tpm-aik-basic-constraints")
    extension = san_extension(aik)
    if extension is None:
        raise RequirementFailed("the AIK certificate has no subjectAltName", check="tpm-aik-san")
    san = decode_san(extension[0])
    missing = [label for label in ("manufacturer", "model", "version") if not getattr(san, label)]
    if missing:
        raise RequirementFailed(f"the AIK certificate SAN lacks TPM {', '.join(missing)}", check="tpm-aik-san")
    return san


def _check_signature(aik: asn1_x509.Certificate, stmt: TpmStatement, alg: SignatureAlg) -> None:
    key = public_key_of(aik.public_key)
    if not isinstance(key, alg.key_type):
        raise InvalidSignature(f"alg {alg.name} does not fit the AIK certificate's {aik.public_key.algorithm.upper()} key", check="tpm-sig-alg")
    try:
        if isinstance(key, rsa.RSAPublicKey):
            pad = padding.PSS(padding.MGF1(alg.hash()), padding.PSS.AUTO) if alg.pss else padding.PKCS1v15()
            key.verify(stmt.sig, stmt.cert_info, pad, alg.hash())
        else:
            key.verify(stmt.sig, stmt.cert_info, ec.ECDSA(alg.hash()))
    except _CryptoInvalidSignature:
        raise InvalidSignature(f"sig does not verify over certInfo with the AIK certificate key ({alg.name})", check="tpm-sig") from None


def _evidence(public: TpmtPublic, san: TpmSan, alg: SignatureAlg, path: list[asn1_x509.Certificate], ctx: VerificationContext) -> Evidence:
    extra = {"tpm_manufacturer": san.vendor or san.manufacturer, "tpm_model": san.model, "tpm_sig_alg": alg.name}
    posture = Posture(firmware_version=san.version, key_protection="tpm", extra=tuple(sorted(extra.items())))
    return Evidence(
        fmt=NAME,
        public_key=public.spki(),
        trust_level=TrustLevel.HARDWARE,
        permanent_identifiers=san.permanent_identifiers,
        hardware_modules=san.hardware_modules,
        posture=posture,
        chain=tuple(cert.dump() for cert in path),
        attested_at=ctx.now,  # extraData binds the certification to this challenge: it was made just now
    )


def _gce_evidence(public: TpmtPublic, ak: gce.GceAk, alg: SignatureAlg, path: list[asn1_x509.Certificate],
                  ctx: VerificationContext) -> Evidence:
    vm = ak.instance
    extra = {"gce_project_id": vm.project_id, "gce_project_number": str(vm.project_number), "gce_zone": vm.zone,
             "gce_instance_name": vm.instance_name, "gce_is_production": "true" if vm.is_production else "false",
             "tpm_sig_alg": alg.name}
    if vm.security_version is not None:
        extra["gce_security_version"] = str(vm.security_version)
    if ak.san is not None:
        extra.update(tpm_manufacturer=ak.san.vendor or ak.san.manufacturer, tpm_model=ak.san.model)
    facts = tuple(sorted((name, value) for name, value in extra.items() if value is not None))
    return Evidence(
        fmt=NAME,
        public_key=public.spki(),
        trust_level=TrustLevel.CLOUD,  # a vTPM is software in Google's hypervisor, not a chip
        permanent_identifiers=(PermanentIdentifier(str(vm.instance_id), GCE_INSTANCE_ID),),
        posture=Posture(firmware_version=ak.san.version if ak.san else None, key_protection="vtpm", extra=facts),
        chain=tuple(cert.dump() for cert in path),
        attested_at=ctx.now,
    )


def _chain(stmt: TpmStatement, ctx: VerificationContext) -> tuple[list[asn1_x509.Certificate], bool]:
    """The AK certificate path to a "tpm" or "tpm-gcp" root, and whether it reached a Google vTPM root."""
    gcp_roots = ctx.trust.roots_for(GCP_TRUST)
    path = verify_chain(stmt.x5c, ctx.trust.roots_for(NAME) + gcp_roots, ctx.now,
                        intermediates=ctx.trust.intermediates_for(NAME) + ctx.trust.intermediates_for(GCP_TRUST))
    check_revocation(path[:-1], ctx.revocation.get(NAME), NAME)  # the root is the trust decision itself
    return path, path[-1].dump() in set(gcp_roots)


@catch_builtins
def verify(att_stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
    """Verify a "tpm" attestation statement; return what it proves or raise the failed check."""
    stmt = TpmStatement.from_att_stmt(att_stmt)
    alg = _algorithm(stmt)
    public = TpmtPublic.parse(stmt.pub_area)
    attest = TpmsAttest.parse(stmt.cert_info)
    _check_certify(attest, public, stmt, alg, ctx.binding)
    path, google = _chain(stmt, ctx)
    if google:
        ak = gce.check_ak_profile(path[0])
        _check_signature(path[0], stmt, alg)
        evidence = _gce_evidence(public, ak, alg, path, ctx)
    else:
        san = _check_aik_profile(path[0])
        _check_signature(path[0], stmt, alg)
        evidence = _evidence(public, san, alg, path, ctx)
    return _with_boot_posture(evidence, att_stmt, path[0], attest)


def _with_boot_posture(evidence: Evidence, att_stmt: Mapping[str, Any], aik: asn1_x509.Certificate,
                       attest: TpmsAttest) -> Evidence:
    """Add what an optional PCR quote proves about the boot (docs/tpm-boot-posture.md). The quote
    carries the same extraData as certInfo, so it too was made for this challenge, by this AK."""
    bundle = QuoteBundle.from_att_stmt(att_stmt)
    if bundle is None:
        return evidence
    boot = boot_posture(aik.public_key.dump(), bundle, attest.extra_data)
    return replace(evidence, posture=boot.facts.apply(evidence.posture))


FORMAT = Format(name=NAME, verify=verify, acme_binding=key_authorization_binding)
