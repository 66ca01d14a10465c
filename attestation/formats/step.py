"""fmt "step": YubiKey PIV attestation, as smallstep defines it for ACME device-attest-01.

The attestation statement is `{"alg": COSE alg, "sig": bytes, "x5c": [slot, f9, ...]}`:
`x5c[0]` is the slot attestation certificate the YubiKey issues for a key it generated
(PIV "attest" command), signed by the device's f9 certificate `x5c[1]`, which Yubico
issued. YubiKey attestations carry no nonce, so freshness comes from `sig`: the attested
key signs `binding.att_to_be_signed` (the ACME key authorization, `acme_binding` =
`key_authorization_binding`). Checks, in order:

1. `alg` is one of ES256 (-7), ES384 (-35), RS256 (-257), PS256 (-37, salt = hash
   length, RFC 8230) or EdDSA (-8, Ed25519 only).
2. `x5c` chains to a configured root (`TrustStore.roots_for("step")`; by default the Yubico
   PIV Root CA Serial 263751 for firmware 4.3 to 5.7.3 and Yubico Attestation Root 1 for
   5.7.4+, whose two bundled intermediate levels the client does not send).
   Vendor quirk: some YubiKey 4 f9 certificates carry no basicConstraints at all (go-piv
   `Verify` patches them to CA for the same reason). Only when `x5c[1]` lacks the
   extension entirely is the chain re-verified with the leaf's direct issuer exempt from
   the issuer checks (`ChainPolicy.leaf_issuer_may_be_end_entity`), and the path is then
   accepted only in the YubiKey 4 shape: slot <- `x5c[1]` <- a configured root.
   Slot certificates lack basicConstraints too and their key signs anything its holder
   asks, so a slot certificate must never pass as an issuer.
3. `alg` fits the attested key (ES256 needs P-256, ES384 P-384, RS256/PS256 RSA, EdDSA
   Ed25519) and `sig` verifies over `att_to_be_signed` with it. Interop quirk: the step CLI
   sends `sig` as a CBOR byte string whose content is itself a CBOR-encoded byte string
   (step-ca decodes it with `cbor.Unmarshal`); other clients send the bare signature. Both
   are accepted deliberately: exactly one level of wrapping is removed when `sig` is a
   complete CBOR byte string, and the signature is checked in both forms. Either form is a
   signature by the attested key over the same bytes, so accepting both widens nothing.
4. The serial number (1.3.6.1.4.1.41482.3.7, DER INTEGER) is present.

The identifier is a PermanentIdentifier holding the decimal serial, the value ACME
clients put in their `permanent-identifier` order (step CLI, step-ca). No
HardwareModuleName: RFC 4108 wants a hardware-type OID naming the module model and Yubico
defines none for PIV, so one would have to be invented.

Posture (Yubico "PIV Attestation OID Arc"; these values are raw octets in extnValue, not
DER): firmware (…3.3, 3 octets major.minor.patch), PIN and touch policy (…3.8, 2 octets),
form factor (…3.9, 1 octet: low nibble the model, 0x80 the FIPS flag), and the PIV slot from
the leaf subject "YubiKey PIV Attestation <slot>". `attested_at` stays None: the slot
certificate copies its dates from the f9 certificate, so it states no attestation time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import cbor2
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from attestation.context import VerificationContext
from attestation.errors import (
    IdentifierMissing,
    InvalidSignature,
    MalformedStatement,
    RequirementFailed,
    UnsupportedFormat,
    UntrustedChain,
    catch_builtins,
)
from attestation.evidence import Evidence, PermanentIdentifier, Posture, TrustLevel
from attestation.format import Format, key_authorization_binding
from attestation.roots import bundled
from attestation.x509chain import check_revocation, extension_values, ChainPolicy, parse_certificate, public_key_of, verify_chain

FMT = "step"

OID_FIRMWARE = "1.3.6.1.4.1.41482.3.3"
OID_SERIAL = "1.3.6.1.4.1.41482.3.7"
OID_POLICY = "1.3.6.1.4.1.41482.3.8"
OID_FORM_FACTOR = "1.3.6.1.4.1.41482.3.9"

_PIN_POLICY = {1: "never", 2: "once", 3: "always", 4: "match-once", 5: "match-always"}
_TOUCH_POLICY = {1: "never", 2: "always", 3: "cached"}
_FORM_FACTOR = {
    0: "unspecified",
    1: "usb-a-keychain",
    2: "usb-a-nano",
    3: "usb-c-keychain",
    4: "usb-c-nano",
    5: "usb-c-lightning",
    6: "usb-a-bio",
    7: "usb-c-bio",
}
_FORM_FACTOR_FIPS = 0x80
_SLOT_PREFIX = "YubiKey PIV Attestation "


@dataclass(frozen=True)
class _Alg:
    name: str
    verify: Callable[[Any, bytes, bytes], None]  # (public key, signature, message), raises on mismatch
    fits: Callable[[Any], bool]


def _is_curve(name: str) -> Callable[[Any], bool]:
    return lambda key: isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == name


_ALGS: dict[int, _Alg] = {
    -7: _Alg("ES256", lambda k, s, m: k.verify(s, m, ec.ECDSA(hashes.SHA256())), _is_curve("secp256r1")),
    -35: _Alg("ES384", lambda k, s, m: k.verify(s, m, ec.ECDSA(hashes.SHA384())), _is_curve("secp384r1")),
    -257: _Alg(
        "RS256",
        lambda k, s, m: k.verify(s, m, padding.PKCS1v15(), hashes.SHA256()),
        lambda key: isinstance(key, rsa.RSAPublicKey),
    ),
    -37: _Alg(
        "PS256",
        lambda k, s, m: k.verify(s, m, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH), hashes.SHA256()),
        lambda key: isinstance(key, rsa.RSAPublicKey),
    ),
    -8: _Alg("EdDSA", lambda k, s, m: k.verify(s, m), lambda key: isinstance(key, ed25519.Ed25519PublicKey)),
}


@dataclass(frozen=True)
class PivAttestation:
    """What a YubiKey slot attestation certificate states; `None` where absent."""

    serial: int | None = None
    firmware_version: str | None = None
    pin_policy: str | None = None
    touch_policy: str | None = None
    form_factor: str | None = None
    form_factor_code: int | None = None
    fips: bool | None = None
    slot: str | None = None


@dataclass(frozen=True)
class _Statement:
    alg: int
    sig: bytes
    x5c: list[bytes]


def default_roots() -> tuple[bytes, ...]:
    """Bundled trust anchors: Yubico PIV Root CA Serial 263751 and Yubico Attestation Root 1 (DER)."""
    return bundled("yubico")


def default_intermediates() -> tuple[bytes, ...]:
    """Bundled path-building helpers of the firmware 5.7.4+ PKI (DER)."""
    return bundled("yubico/intermediates")


@catch_builtins
def verify(att_stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
    stmt = _parse_statement(att_stmt)
    path = _verify_chain(stmt.x5c, ctx)
    check_revocation(path, ctx.revocation.get(FMT), FMT)
    leaf = path[0]
    _verify_sig(leaf, stmt.alg, stmt.sig, ctx.binding.att_to_be_signed)
    props = parse_piv_attestation(leaf)
    if props.serial is None:
        raise IdentifierMissing(f"YubiKey serial number ({OID_SERIAL}) is missing from the slot attestation certificate")
    return Evidence(
        fmt=FMT,
        public_key=leaf.public_key.dump(),
        trust_level=TrustLevel.HARDWARE,
        permanent_identifiers=(PermanentIdentifier(str(props.serial)),),
        posture=_posture(props),
        chain=tuple(cert.dump() for cert in path),
    )


FORMAT = Format(name=FMT, verify=verify, acme_binding=key_authorization_binding)


@catch_builtins
def parse_piv_attestation(leaf: bytes | asn1_x509.Certificate) -> PivAttestation:
    """Decode the Yubico PIV attestation extensions of a slot certificate (DER or parsed).

    Verifies nothing: call it on a leaf whose chain is trusted. Raises MalformedStatement
    for a duplicated extension or a value that does not decode as Yubico encodes it.
    """
    cert = leaf if isinstance(leaf, asn1_x509.Certificate) else parse_certificate(leaf, "slot attestation certificate")
    raw = extension_values(cert, "slot attestation certificate")
    fields: dict[str, Any] = {"slot": _slot(cert)}
    if OID_SERIAL in raw:
        fields["serial"] = _serial(raw[OID_SERIAL])
    if OID_FIRMWARE in raw:
        fields["firmware_version"] = ".".join(str(part) for part in _octets(raw[OID_FIRMWARE], 3, "firmware version", OID_FIRMWARE))
    if OID_POLICY in raw:
        pin, touch = _octets(raw[OID_POLICY], 2, "PIN and touch policy", OID_POLICY)
        fields["pin_policy"] = _PIN_POLICY.get(pin, f"unknown-{pin:#04x}")
        fields["touch_policy"] = _TOUCH_POLICY.get(touch, f"unknown-{touch:#04x}")
    if OID_FORM_FACTOR in raw:
        (code,) = _octets(raw[OID_FORM_FACTOR], 1, "form factor", OID_FORM_FACTOR)
        fields["form_factor_code"] = code
        fields["form_factor"] = _FORM_FACTOR.get(code & 0x0F, f"unknown-{code & 0x0F:#04x}")
        fields["fips"] = bool(code & _FORM_FACTOR_FIPS)
    return PivAttestation(**fields)


def _parse_statement(att_stmt: Mapping[str, Any]) -> _Statement:
    if not isinstance(att_stmt, Mapping):
        raise MalformedStatement("attStmt is not a map")
    alg, sig, x5c = att_stmt.get("alg"), att_stmt.get("sig"), att_stmt.get("x5c")
    if alg is None:
        raise MalformedStatement("attStmt.alg is missing")
    if not isinstance(alg, int) or isinstance(alg, bool):
        raise MalformedStatement("attStmt.alg is not an integer")
    if alg not in _ALGS:
        supported = ", ".join(f"{spec.name} ({value})" for value, spec in _ALGS.items())
        raise UnsupportedFormat(f"attStmt.alg {alg} is not supported (supported: {supported})")
    if sig is None:
        raise MalformedStatement("attStmt.sig is missing")
    if not isinstance(sig, (bytes, bytearray)) or not sig:
        raise MalformedStatement("attStmt.sig is not a non-empty byte string")
    if x5c is None:
        raise MalformedStatement("attStmt.x5c is missing")
    if not isinstance(x5c, (list, tuple)) or not x5c:
        raise MalformedStatement("attStmt.x5c is not a non-empty array")
    if not all(isinstance(der, (bytes, bytearray)) for der in x5c):
        raise MalformedStatement("attStmt.x5c holds an entry that is not a byte string")
    return _Statement(alg=alg, sig=bytes(sig), x5c=[bytes(der) for der in x5c])


def _verify_chain(x5c: list[bytes], ctx: VerificationContext) -> list[asn1_x509.Certificate]:
    roots = ctx.trust.roots_for(FMT)
    intermediates = tuple(der for der in ctx.trust.intermediates_for(FMT) if der not in x5c)  # each candidate once
    try:
        return verify_chain(x5c, roots, ctx.now, intermediates=intermediates)
    except UntrustedChain as strict_error:
        if type(strict_error) is not UntrustedChain or not _f9_lacks_basic_constraints(x5c):
            raise
    # Relaxed for the f9 certificate alone, and only in the YubiKey 4 shape: exactly
    # slot <- f9 <- configured root. A slot certificate (which has no basicConstraints
    # either) must never act as a CA: its key signs whatever its holder asks.
    relaxed = ChainPolicy(leaf_issuer_may_be_end_entity=True)
    path = verify_chain(x5c, roots, ctx.now, intermediates=intermediates, policy=relaxed)
    if len(path) != 3 or path[1].dump() != x5c[1] or path[2].dump() not in {bytes(root) for root in roots}:
        raise UntrustedChain(
            "f9 certificate without basicConstraints is accepted only as the slot certificate's issuer "
            "directly under a configured root (YubiKey 4 quirk)"
        )
    return path


def _f9_lacks_basic_constraints(x5c: list[bytes]) -> bool:
    """The YubiKey 4 quirk: the f9 certificate has no basicConstraints extension at all."""
    if len(x5c) < 2:
        return False
    f9 = parse_certificate(x5c[1], "f9 certificate")
    return all(ext["extn_id"].native != "basic_constraints" for ext in f9["tbs_certificate"]["extensions"])




def _verify_sig(leaf: asn1_x509.Certificate, alg: int, sig: bytes, message: bytes) -> None:
    spec = _ALGS[alg]
    key = public_key_of(leaf.public_key)
    if not spec.fits(key):
        raise RequirementFailed(f"attStmt.alg {spec.name} ({alg}) does not fit the attested key ({_describe_key(key)})")
    for candidate in _signature_forms(sig):
        try:
            spec.verify(key, candidate, message)
            return
        except (_CryptoInvalidSignature, ValueError):
            continue
    raise InvalidSignature(f"sig ({spec.name}) does not verify over attToBeSigned (the key authorization) with the attested key")


def _signature_forms(sig: bytes) -> list[bytes]:
    """`sig` unwrapped once (step CLI form) when it is one complete CBOR byte string, then as sent."""
    if sig[0] >> 5 != 2:  # CBOR major type 2 (byte string); anything else is a bare signature
        return [sig]
    stream = io.BytesIO(sig)
    try:
        inner = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORError, ValueError, TypeError, EOFError):
        return [sig]
    if not isinstance(inner, bytes) or stream.tell() != len(sig):
        return [sig]
    return [inner, sig]


def _describe_key(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__.removesuffix("PublicKey").lstrip("_") or "unknown"



def _serial(value: bytes) -> int:
    try:
        serial = core.Integer.load(value, strict=True).native
    except Exception as exc:  # asn1crypto raises ValueError / TypeError on bad DER
        raise MalformedStatement(f"serial number ({OID_SERIAL}) is not a DER INTEGER: {exc}") from exc
    if serial < 0:
        raise MalformedStatement(f"serial number ({OID_SERIAL}) is negative")
    return serial


def _octets(value: bytes, size: int, name: str, oid: str) -> tuple[int, ...]:
    if len(value) != size:
        raise MalformedStatement(f"{name} ({oid}) is {len(value)} octets, not {size}")
    return tuple(value)


def _slot(cert: asn1_x509.Certificate) -> str | None:
    common_name = cert.subject.native.get("common_name")
    if isinstance(common_name, str) and common_name.startswith(_SLOT_PREFIX):
        return common_name[len(_SLOT_PREFIX):].strip().lower() or None
    return None


def _posture(props: PivAttestation) -> Posture:
    extra: list[tuple[str, str]] = []
    if props.form_factor is not None:
        extra.append(("yubikey.form_factor", props.form_factor))
        extra.append(("yubikey.fips", "true" if props.fips else "false"))
    if props.slot is not None:
        extra.append(("yubikey.piv_slot", props.slot))
    return Posture(
        firmware_version=props.firmware_version,
        pin_policy=props.pin_policy,
        touch_policy=props.touch_policy,
        key_protection="piv",
        extra=tuple(sorted(extra)),
    )
