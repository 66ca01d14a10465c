"""fmt "apple": Apple Managed Device Attestation, and Apple WebAuthn anonymous attestation.

Managed Device Attestation (MDA) in ACME device-attest-01. The attestation statement is
`{"x5c": [leaf, "Apple Enterprise Attestation Sub CA 1"]}` with no `sig`: Apple's
attestation servers issue the leaf for a key the device generated in its Secure Enclave,
and the leaf carries the device properties as private extensions. Checks, in order:

1. `x5c` chains to a configured root (`TrustStore.roots_for("apple")`, by default the
   Apple Enterprise Attestation Root CA) at `ctx.now`.
2. Freshness: the leaf's freshness code (1.2.840.113635.100.8.11.1, raw 32 octets) equals
   SHA-256(`binding.challenge`). `acme_binding` sets the challenge to the ACME challenge
   *token*: Apple's ACME client puts SHA-256(token) there. Apple DTS states it ("For ACME
   attestation, it's a SHA256 hash of the nonce specified by the ACME server in its
   response containing the device-attest-01 challenge", Apple Developer Forums thread
   783599) and step-ca verifies exactly that (smallstep/certificates `acme/challenge.go`,
   "Validate nonce with SHA-256 of the token"). `att_to_be_signed` is the key
   authorization, unused here since the statement has no `sig`.
3. Identifiers: serial number (…8.9.1) and UDID (…8.9.2), in that order; at least one is
   required (Apple omits both under User Enrollment, which cannot bind an identifier).

Device properties, as Apple documents them (DeviceInformation `DevicePropertiesAttestation`
and the Platform Security guide) and as real Macs encode them: the extension value
(extnValue OCTET STRING, parsed by asn1crypto) holds the raw UTF-8 text for serial, UDID,
softwareUpdateDeviceID (…8.9.4), OS (…8.10.1), sepOS (…8.10.2) and LLB (…8.10.3) versions
and secure boot level (…8.13.2, "Full Security" / "Reduced Security" / "Permissive
Security"), and a DER INTEGER for SIP status (…8.13.1, 0 enabled, 1 disabled) and
third-party kernel extensions (…8.13.3, 0 not allowed, else allowed). Apple writes a blank
value for a property it could not verify: blank means not proved, so it is absent.

WebAuthn anonymous attestation (same fmt name, W3C WebAuthn §8.8) fits the same shape: the
leaf instead carries 1.2.840.113635.100.8.2, `SEQUENCE { [1] EXPLICIT OCTET STRING nonce }`,
with nonce = SHA-256(authData || clientDataHash). A caller that sets `binding.challenge` to
authData || clientDataHash and trusts the Apple WebAuthn Root CA gets Evidence with no
identifiers; it must itself compare `Evidence.public_key` with the credential public key.
The root is not bundled: an ACME deployment never trusts it by default. Which nonce is
checked follows from which extension the leaf carries; a leaf carrying both is malformed.

Other attStmt members (iOS 14 WebAuthn statements also carry `alg`) are ignored: nothing
in them is relied on.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Mapping

from asn1crypto import core
from asn1crypto import x509 as asn1_x509

from attestation.context import Binding, VerificationContext
from attestation.errors import (
    ChallengeMismatch,
    IdentifierMissing,
    MalformedStatement,
    catch_builtins,
)
from attestation.evidence import Evidence, PermanentIdentifier, Posture, TrustLevel
from attestation.format import Format
from attestation.roots import bundled
from attestation.x509chain import check_revocation, extension_values, parse_certificate, verify_chain

FMT = "apple"

OID_SERIAL_NUMBER = "1.2.840.113635.100.8.9.1"
OID_UDID = "1.2.840.113635.100.8.9.2"
OID_SOFTWARE_UPDATE_DEVICE_ID = "1.2.840.113635.100.8.9.4"
OID_OS_VERSION = "1.2.840.113635.100.8.10.1"
OID_SEP_OS_VERSION = "1.2.840.113635.100.8.10.2"
OID_LLB_VERSION = "1.2.840.113635.100.8.10.3"
OID_FRESHNESS_CODE = "1.2.840.113635.100.8.11.1"
OID_SIP_STATUS = "1.2.840.113635.100.8.13.1"
OID_SECURE_BOOT = "1.2.840.113635.100.8.13.2"
OID_THIRD_PARTY_KEXTS = "1.2.840.113635.100.8.13.3"
OID_WEBAUTHN_NONCE = "1.2.840.113635.100.8.2"

PROFILE_MANAGED_DEVICE = "managed-device"
PROFILE_WEBAUTHN = "webauthn-anonymous"

# Extensions whose value is raw UTF-8 text, by the DeviceProperties field they fill.
_TEXT_PROPERTIES = {
    OID_SERIAL_NUMBER: "serial_number",
    OID_UDID: "udid",
    OID_SOFTWARE_UPDATE_DEVICE_ID: "software_update_device_id",
    OID_OS_VERSION: "os_version",
    OID_SEP_OS_VERSION: "sep_os_version",
    OID_LLB_VERSION: "llb_version",
    OID_SECURE_BOOT: "secure_boot",
}
# Extensions whose value is a DER INTEGER.
_INTEGER_PROPERTIES = {OID_SIP_STATUS: "sip_status", OID_THIRD_PARTY_KEXTS: "third_party_kexts"}

_SECURE_BOOT = {"Full Security": "full", "Reduced Security": "reduced", "Permissive Security": "permissive"}


class AppleAnonymousAttestation(core.Sequence):
    """Extension 1.2.840.113635.100.8.2 (WebAuthn §8.8): `SEQUENCE { nonce [1] EXPLICIT OCTET STRING }`."""

    _fields = [("nonce", core.OctetString, {"explicit": 1})]


@dataclass(frozen=True)
class DeviceProperties:
    """The Apple properties of a leaf certificate, decoded; `None` where absent or blank."""

    serial_number: str | None = None
    udid: str | None = None
    software_update_device_id: str | None = None
    os_version: str | None = None
    sep_os_version: str | None = None
    llb_version: str | None = None
    secure_boot: str | None = None  # Apple's own words, e.g. "Full Security"
    sip_status: int | None = None
    third_party_kexts: int | None = None
    freshness_code: bytes | None = None  # MDA nonce, raw octets
    webauthn_nonce: bytes | None = None  # WebAuthn anonymous attestation nonce


def default_roots() -> tuple[bytes, ...]:
    """Bundled trust anchors: the Apple Enterprise Attestation Root CA (DER)."""
    return bundled("apple")


def default_intermediates() -> tuple[bytes, ...]:
    """Bundled path-building helpers: Apple Enterprise Attestation Sub CA 1 (DER)."""
    return bundled("apple/intermediates")


def acme_binding(token: str, key_authorization: bytes) -> Binding:
    """MDA binds the freshness code to SHA-256 of the challenge token (see the module docstring)."""
    return Binding(att_to_be_signed=key_authorization, challenge=token.encode("utf-8"))


@catch_builtins
def verify(att_stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
    x5c = _x5c(att_stmt)
    # Devices send the Sub CA we also bundle: offer it once, or the walker checks the leaf twice.
    intermediates = tuple(der for der in ctx.trust.intermediates_for(FMT) if der not in x5c)
    path = verify_chain(x5c, ctx.trust.roots_for(FMT), ctx.now, intermediates=intermediates)
    check_revocation(path, ctx.revocation.get(FMT), FMT)
    leaf = path[0]
    props = parse_device_properties(leaf)
    profile = _check_freshness(props, ctx.binding.challenge)
    return Evidence(
        fmt=FMT,
        public_key=leaf.public_key.dump(),
        trust_level=TrustLevel.HARDWARE,
        permanent_identifiers=_identifiers(props, profile),
        posture=_posture(props, profile),
        chain=tuple(cert.dump() for cert in path),
        attested_at=leaf["tbs_certificate"]["validity"]["not_before"].native,
    )


FORMAT = Format(name=FMT, verify=verify, acme_binding=acme_binding)


@catch_builtins
def parse_device_properties(leaf: bytes | asn1_x509.Certificate) -> DeviceProperties:
    """Decode the Apple device-property extensions of a leaf certificate (DER or parsed).

    Verifies nothing: call it on a leaf whose chain is trusted. Raises MalformedStatement
    for a duplicated extension or a value that does not decode as Apple encodes it.
    """
    cert = leaf if isinstance(leaf, asn1_x509.Certificate) else parse_certificate(leaf, "leaf certificate")
    raw = extension_values(cert, "leaf certificate")
    fields: dict[str, Any] = {}
    for oid, name in _TEXT_PROPERTIES.items():
        if oid in raw:
            fields[name] = _text(raw[oid], name, oid)
    for oid, name in _INTEGER_PROPERTIES.items():
        if oid in raw:
            fields[name] = _integer(raw[oid], name, oid)
    if OID_FRESHNESS_CODE in raw:
        fields["freshness_code"] = raw[OID_FRESHNESS_CODE]
    if OID_WEBAUTHN_NONCE in raw:
        fields["webauthn_nonce"] = _webauthn_nonce(raw[OID_WEBAUTHN_NONCE])
    return DeviceProperties(**fields)


def _x5c(att_stmt: Mapping[str, Any]) -> list[bytes]:
    if not isinstance(att_stmt, Mapping):
        raise MalformedStatement("attStmt is not a map")
    x5c = att_stmt.get("x5c")
    if x5c is None:
        raise MalformedStatement("attStmt.x5c is missing")
    if not isinstance(x5c, (list, tuple)) or not x5c:
        raise MalformedStatement("attStmt.x5c is not a non-empty array")
    if not all(isinstance(der, (bytes, bytearray)) for der in x5c):
        raise MalformedStatement("attStmt.x5c holds an entry that is not a byte string")
    return [bytes(der) for der in x5c]





def _text(value: bytes, name: str, oid: str) -> str | None:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedStatement(f"{name} ({oid}) is not UTF-8 text") from None
    return text or None  # Apple writes a blank value for a property it could not verify


def _integer(value: bytes, name: str, oid: str) -> int:
    try:
        return core.Integer.load(value, strict=True).native
    except Exception as exc:  # asn1crypto raises ValueError / TypeError on bad DER
        raise MalformedStatement(f"{name} ({oid}) is not a DER INTEGER: {exc}") from exc


def _webauthn_nonce(value: bytes) -> bytes:
    try:
        return AppleAnonymousAttestation.load(value, strict=True)["nonce"].native
    except Exception as exc:
        raise MalformedStatement(f"nonce extension ({OID_WEBAUTHN_NONCE}) does not parse: {exc}") from exc


def _check_freshness(props: DeviceProperties, challenge: bytes) -> str:
    """Compare the leaf's nonce with SHA-256(challenge); return the profile it identifies."""
    expected = hashlib.sha256(challenge).digest()
    if props.freshness_code is not None and props.webauthn_nonce is not None:
        raise MalformedStatement(f"leaf carries both the freshness code ({OID_FRESHNESS_CODE}) and the WebAuthn nonce ({OID_WEBAUTHN_NONCE})")
    if props.freshness_code is not None:
        if not hmac.compare_digest(props.freshness_code, expected):
            raise ChallengeMismatch(f"freshness code ({OID_FRESHNESS_CODE}) does not equal SHA-256 of the challenge token")
        return PROFILE_MANAGED_DEVICE
    if props.webauthn_nonce is not None:
        if not hmac.compare_digest(props.webauthn_nonce, expected):
            raise ChallengeMismatch(f"nonce ({OID_WEBAUTHN_NONCE}) does not equal SHA-256 of the challenge (authData || clientDataHash)")
        return PROFILE_WEBAUTHN
    raise ChallengeMismatch(f"freshness code ({OID_FRESHNESS_CODE}) is missing from the leaf certificate")


def _identifiers(props: DeviceProperties, profile: str) -> tuple[PermanentIdentifier, ...]:
    if profile == PROFILE_WEBAUTHN:
        return ()  # anonymous attestation: no device identity, by design
    ids = tuple(PermanentIdentifier(value) for value in (props.serial_number, props.udid) if value is not None)
    if not ids:
        raise IdentifierMissing(
            f"neither serial number ({OID_SERIAL_NUMBER}) nor UDID ({OID_UDID}) is present (User Enrollment omits both)"
        )
    return ids


def _posture(props: DeviceProperties, profile: str) -> Posture:
    extra = [("apple.attestation", profile)]
    if props.sip_status is not None:
        extra.append(("apple.sip", {0: "enabled", 1: "disabled"}.get(props.sip_status, f"unknown-{props.sip_status}")))
    if props.third_party_kexts is not None:
        extra.append(("apple.third_party_kexts", "disallowed" if props.third_party_kexts == 0 else "allowed"))
    if props.software_update_device_id is not None:
        extra.append(("apple.software_update_device_id", props.software_update_device_id))
    secure_boot = None if props.secure_boot is None else _SECURE_BOOT.get(props.secure_boot, props.secure_boot)
    return Posture(
        os_version=props.os_version,
        sep_os_version=props.sep_os_version,
        llb_version=props.llb_version,
        secure_boot=secure_boot,
        key_protection="secure-enclave",
        extra=tuple(sorted(extra)),
    )
