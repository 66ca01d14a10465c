"""`android-key`: Android Key Attestation (draft-ietf-acme-device-attest; WebAuthn §8.4).

attStmt = {"alg": COSE algorithm, "sig": bytes, "x5c": [leaf DER, intermediates..., (root)]}.

Checks, in order, each failure naming itself:
1. the statement has the fields, of the right types (MalformedStatement);
2. `alg` is one of `ALGORITHMS` and the leaf key type is supported (UnsupportedFormat);
3. the chain leads to a configured root at `ctx.now` (UntrustedChain, ChainExpired), and no
   certificate on it is in the status list `ctx.revocation["android-key"]` (CertificateRevoked).
   x5c[1] must be the leaf's issuer, which need not be a CA (see `_anchored_leaf`);
4. the leaf, and only the leaf, carries a well-formed KeyDescription (RequirementFailed,
   MalformedStatement), whose attestationChallenge equals `ctx.binding.challenge`
   (ChallengeMismatch);
5. the key was generated in the device (origin GENERATED) and may sign (purpose ∋ SIGN),
   read from teeEnforced for a TEE or StrongBox trust level and from both lists for a
   software one, as WebAuthn §8.4 requires (RequirementFailed): an imported key may exist
   outside the device, whatever the level of the KeyMint that holds a copy;
6. `sig` verifies over `ctx.binding.att_to_be_signed` with the leaf key and `alg` (InvalidSignature).

Facts come from the hardware-enforced (teeEnforced) authorization list only: the
softwareEnforced list is written by Android userspace and proves nothing. Whether a
security level, boot state or identifier is good enough is the caller's policy.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

from asn1crypto import keys
from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from attestation.asn1.android_key import KEY_DESCRIPTION_OID, AnyPublicKeyInfo, KeyDescription, parse_key_description
from attestation.context import VerificationContext
from attestation.errors import (ChallengeMismatch, InvalidSignature, MalformedStatement,
                                RequirementFailed, UnsupportedFormat, UntrustedChain, catch_builtins)
from attestation.evidence import Evidence, PermanentIdentifier, Posture, TrustLevel
from attestation.format import Format, key_authorization_binding
from attestation.roots import bundled
from attestation.x509chain import (ChainPolicy, check_revocation, _check_issuer_constraints, _check_validity, _signed_by,
                                   parse_certificate, public_key_of, verify_chain)

try:  # ML-DSA needs a recent cryptography; without it ML-DSA leaves are refused as unsupported.
    from cryptography.hazmat.primitives.asymmetric import mldsa as _mldsa
except ImportError:  # pragma: no cover - depends on the installed cryptography
    _mldsa = None

FMT = "android-key"


@dataclass(frozen=True)
class CoseAlgorithm:
    name: str
    key: str  # "ec", "rsa" or the ML-DSA parameter set
    hash: type[hashes.HashAlgorithm] | None = None
    pss: bool = False


# The COSE algorithms accepted for `sig` (RFC 9053, RFC 8230, draft-ietf-cose-dilithium).
ALGORITHMS: Mapping[int, CoseAlgorithm] = {
    -7: CoseAlgorithm("ES256", "ec", hashes.SHA256),
    -35: CoseAlgorithm("ES384", "ec", hashes.SHA384),
    -36: CoseAlgorithm("ES512", "ec", hashes.SHA512),
    -257: CoseAlgorithm("RS256", "rsa", hashes.SHA256),
    -37: CoseAlgorithm("PS256", "rsa", hashes.SHA256, pss=True),
    -48: CoseAlgorithm("ML-DSA-44", "ML-DSA-44"),
    -49: CoseAlgorithm("ML-DSA-65", "ML-DSA-65"),
    -50: CoseAlgorithm("ML-DSA-87", "ML-DSA-87"),
}

_CLASSIC_KEYS = {"1.2.840.113549.1.1.1": "rsa", "1.2.840.10045.2.1": "ec"}
_MLDSA_KEYS = {
    "2.16.840.1.101.3.4.3.17": "ML-DSA-44",
    "2.16.840.1.101.3.4.3.18": "ML-DSA-65",
    "2.16.840.1.101.3.4.3.19": "ML-DSA-87",
}
_LEVELS = {
    "Software": (TrustLevel.SOFTWARE, "software"),
    "TrustedEnvironment": (TrustLevel.TEE, "tee"),
    "StrongBox": (TrustLevel.HARDWARE, "strongbox"),
}
_BOOT_STATES = {"Verified": "verified", "SelfSigned": "self-signed", "Unverified": "unverified", "Failed": "failed"}
_DEVICE_IDS = ("brand", "device", "product", "manufacturer", "model")
# KeyMint KeyOrigin.aidl and KeyPurpose.aidl (hardware/interfaces/security/keymint/aidl)
_ORIGIN_GENERATED = 0
_ORIGINS = {0: "GENERATED", 1: "DERIVED", 2: "IMPORTED", 3: "RESERVED", 4: "SECURELY_IMPORTED"}
_PURPOSE_SIGN = 2
_PURPOSES = {0: "ENCRYPT", 1: "DECRYPT", 2: "SIGN", 3: "VERIFY", 4: "DERIVE_KEY", 5: "WRAP_KEY", 6: "AGREE_KEY",
             7: "ATTEST_KEY"}


def default_roots() -> tuple[bytes, ...]:
    """Google's hardware attestation roots (DER): RSA 2016/2019/2021/2022 issuances and Key Attestation CA1."""
    return bundled("google")


def software_roots() -> tuple[bytes, ...]:
    """The AOSP software attestation root: opt-in only; evidence under it is reported as SOFTWARE."""
    return bundled("google-software")


# --- revocation: Google's attestation status list ------------------------------------------


@dataclass(frozen=True)
class RevocationList:
    """https://android.googleapis.com/attestation/status, keyed by lowercase hex serial."""

    entries: Mapping[str, tuple[str, str | None]]  # serial hex → (status, reason)

    def __call__(self, serial: int) -> str | None:
        hit = self.entries.get(format(serial, "x")) if serial >= 0 else None
        if hit is None:
            return None
        status, reason = hit
        return f"{status} ({reason})" if reason else status


def load_revocation_list(data: bytes) -> RevocationList:
    """Parse the status list JSON; raise ValueError on anything unexpected (it is operator input)."""
    document = json.loads(data)
    if not isinstance(document, dict) or not isinstance(document.get("entries"), dict):
        raise ValueError("attestation status list has no 'entries' object")
    entries: dict[str, tuple[str, str | None]] = {}
    for key, value in document["entries"].items():
        serial = format(int(key.strip(), 16), "x")  # ValueError on a non-hex key
        status = value.get("status") if isinstance(value, dict) else None
        if status not in ("REVOKED", "SUSPENDED"):
            raise ValueError(f"attestation status list entry {key!r} has unknown status {status!r}")
        reason = value.get("reason")
        entries[serial] = (status, reason if isinstance(reason, str) else None)
    return RevocationList(entries)




# --- statement and chain -------------------------------------------------------------------


@catch_builtins
def _statement(att_stmt: Mapping[str, Any]) -> tuple[int, bytes, list[bytes]]:
    if not isinstance(att_stmt, Mapping):
        raise MalformedStatement("attStmt is not a map")
    for name in ("alg", "sig", "x5c"):
        if name not in att_stmt:
            raise MalformedStatement(f"attStmt has no {name!r}")
    alg, sig, x5c = att_stmt["alg"], att_stmt["sig"], att_stmt["x5c"]
    if not isinstance(alg, int) or isinstance(alg, bool):
        raise MalformedStatement("attStmt 'alg' is not an integer")
    if not isinstance(sig, (bytes, bytearray)):
        raise MalformedStatement("attStmt 'sig' is not a byte string")
    if not isinstance(x5c, (list, tuple)) or not x5c or not all(isinstance(c, (bytes, bytearray)) for c in x5c):
        raise MalformedStatement("attStmt 'x5c' is not a non-empty array of byte strings")
    return alg, bytes(sig), [bytes(c) for c in x5c]


@catch_builtins
def _leaf_key(der: bytes) -> tuple[str, bytes]:
    """(key type, SubjectPublicKeyInfo DER) of the leaf, or UnsupportedFormat naming the type."""
    cert = parse_certificate(der, "leaf certificate")  # strict: no bytes after the DER
    try:
        spki = cert["tbs_certificate"]["subject_public_key_info"].dump()
        oid = AnyPublicKeyInfo.load(spki)["algorithm"]["algorithm"].dotted
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise MalformedStatement(f"leaf certificate is not a valid X.509 certificate: {exc}") from exc
    kind = _CLASSIC_KEYS.get(oid) or _MLDSA_KEYS.get(oid)
    if kind is None:
        raise UnsupportedFormat(f"leaf key type {oid} is not supported (RSA, EC, ML-DSA are)")
    if kind.startswith("ML-DSA") and _mldsa is None:
        raise UnsupportedFormat(f"leaf key type {kind} is not supported by this cryptography build")
    return kind, spki


@lru_cache(maxsize=64)
def _anchor(der: bytes) -> tuple[datetime, datetime, bytes]:
    """notBefore, notAfter and subject DER of a configured root (parsed once per process)."""
    cert = parse_certificate(der, "trust anchor")
    validity = cert["tbs_certificate"]["validity"]
    return validity["not_before"].native, validity["not_after"].native, cert.subject.dump()


@catch_builtins
def _likely_anchors(chain: Sequence[bytes], roots: Sequence[bytes], now: datetime) -> tuple[bytes, ...]:
    """The roots worth trying first: valid at `now`, and sent in x5c or naming an x5c issuer."""
    current = [r for r in roots if _anchor(r)[0] <= now <= _anchor(r)[1]]
    issuers = {parse_certificate(der, "chain certificate").issuer.dump() for der in chain}
    return tuple(r for r in current if r in chain) or tuple(r for r in current if _anchor(r)[2] in issuers)


def _anchored(chain: Sequence[bytes], ctx: VerificationContext) -> list[asn1_x509.Certificate]:
    """verify_chain, trying the likely anchors first and all of them if that fails.

    Google reissued its RSA root with the same key and subject (2016, 2019, 2021, 2022) and
    the walker takes the first anchor whose key signs, so an expired issuance listed first
    would fail a chain that a current one anchors. Narrowing first also saves parsing every
    anchor on every call. A path found with the narrowed set is a path to a configured root,
    checked in full; if none is found, the full set is tried so the error names the problem.
    """
    roots = ctx.trust.roots_for(FMT)
    intermediates = ctx.trust.intermediates_for(FMT)
    likely = _likely_anchors(chain, roots, ctx.now) if roots else ()
    if likely:
        sent_anchor_dropped = [der for der in chain if der not in likely] or list(chain)
        try:
            return verify_chain(sent_anchor_dropped, likely, ctx.now, intermediates=intermediates)
        except UntrustedChain:
            if set(likely) == set(roots) and len(sent_anchor_dropped) == len(chain):
                raise
    return verify_chain(chain, roots, ctx.now, intermediates=intermediates)


@catch_builtins  # x509chain lets ValueError out for an unknown signature algorithm
def _anchored_leaf(x5c: Sequence[bytes], ctx: VerificationContext) -> list[asn1_x509.Certificate]:
    """The path of x5c: x5c[1:] by verify_chain, then the leaf's link to x5c[1] checked here.

    Two Android realities need the leaf link outside verify_chain (until x509chain grows the
    option): the certificate of the device's attestation key, which signs the leaf, is not
    always a CA (Sony: cA=FALSE, keyUsage digitalSignature), and ML-DSA leaves do not parse
    with asn1crypto's key schema. So the leaf's issuer is exempt from the CA-flag and
    keyCertSign checks; every issuer above it is checked at its true depth. This is safe
    because no certificate but the leaf may carry a KeyDescription (see `_key_description`),
    so an attested key can never stand in for an attestation key.
    """
    if len(x5c) < 2:
        raise UntrustedChain("x5c holds only the leaf certificate; its issuer is missing")
    issuers = _anchored(x5c[1:], ctx)
    if len(issuers) == 2 and issuers[0].dump() == issuers[1].dump():
        issuers = issuers[:1]  # x5c[1] is itself the root
    leaf = parse_certificate(x5c[0], "leaf certificate")
    if not _signed_by(leaf, issuers[0]):
        raise UntrustedChain("leaf certificate is not signed by the next certificate in x5c")
    _check_validity(leaf, ctx.now, "leaf")
    path = [leaf, *issuers]
    for depth, cert in enumerate(path[2:], 2):
        _check_issuer_constraints(cert, depth - 1, ChainPolicy())
    return path


# --- KeyDescription ------------------------------------------------------------------------


@catch_builtins
def _key_description(path: Sequence[asn1_x509.Certificate]) -> KeyDescription:
    values = [
        ext["extn_value"].contents
        for ext in path[0]["tbs_certificate"]["extensions"]
        if ext["extn_id"].dotted == KEY_DESCRIPTION_OID
    ]
    if not values:
        raise RequirementFailed(f"leaf certificate has no KeyDescription extension {KEY_DESCRIPTION_OID}")
    if len(values) > 1:
        raise MalformedStatement("leaf certificate has more than one KeyDescription extension")
    for cert in path[1:]:
        if any(ext["extn_id"].dotted == KEY_DESCRIPTION_OID for ext in cert["tbs_certificate"]["extensions"]):
            raise RequirementFailed(f"issuer {cert.subject.human_friendly!r} carries a KeyDescription extension")
    return parse_key_description(values[0])


def _check_challenge(description: KeyDescription, ctx: VerificationContext) -> None:
    if not hmac.compare_digest(description["attestation_challenge"].native, bytes(ctx.binding.challenge)):
        raise ChallengeMismatch("KeyDescription attestationChallenge does not equal the expected challenge")


def _patch_level(value: int | None, lengths: tuple[int, ...]) -> str | None:
    text = str(value) if value is not None else ""
    if len(text) not in lengths or not text.isdigit() or not 1 <= int(text[4:6]) <= 12:
        return None
    return text


def _os_version(value: int | None) -> str | None:
    if value is None or not 0 < value < 1_000_000:
        return None  # 0 means "not available"
    return f"{value // 10000}.{value // 100 % 100}.{value % 100}"


def _level(description: KeyDescription) -> tuple[TrustLevel, str]:
    """The weaker of attestationSecurityLevel and keyMintSecurityLevel (they agree on real devices)."""
    levels = [_LEVELS[description[name].native] for name in ("attestation_security_level", "keymint_security_level")]
    return min(levels, key=lambda level: level[0].rank)


def _trust(chain: Sequence[bytes], description: KeyDescription) -> tuple[TrustLevel, str]:
    if chain[-1] in software_roots():
        return TrustLevel.SOFTWARE, "software"  # anyone holds this root's key
    return _level(description)


@catch_builtins
def _check_key_origin_and_purpose(description: KeyDescription, trust_level: TrustLevel) -> None:
    """WebAuthn §8.4: origin GENERATED and purpose ∋ SIGN, from teeEnforced alone when the key
    is to count as TEE- or StrongBox-protected, else from the union of both lists."""
    if trust_level is TrustLevel.SOFTWARE:
        names, where = ("hardware_enforced", "software_enforced"), "teeEnforced or softwareEnforced"
    else:
        names, where = ("hardware_enforced",), "teeEnforced"
    origins = {description[name]["origin"].native for name in names} - {None}
    if not origins:
        raise RequirementFailed(f"{where} has no key origin: the key is not proved GENERATED in the device")
    for origin in sorted(origins):
        if origin != _ORIGIN_GENERATED:
            raise RequirementFailed(f"key origin is {_ORIGINS.get(origin, 'unknown')} ({origin}), not GENERATED: "
                                    "the key may exist outside the device")
    purposes = set().union(*(description[name]["purpose"].native or () for name in names))
    if _PURPOSE_SIGN not in purposes:
        listed = ", ".join(f"{_PURPOSES.get(p, 'unknown')} ({p})" for p in sorted(purposes)) or "none"
        raise RequirementFailed(f"key purpose in {where} ({listed}) does not include SIGN (2)")


@catch_builtins
def _hardware_facts(description: KeyDescription) -> tuple[dict, dict[str, str], tuple[PermanentIdentifier, ...]]:
    tee = description["hardware_enforced"]
    posture: dict[str, Any] = {
        "os_version": _os_version(tee["os_version"].native),
        "os_patch_level": _patch_level(tee["os_patch_level"].native, (6,)),
        "vendor_patch_level": _patch_level(tee["vendor_patch_level"].native, (6, 8)),
        "boot_patch_level": _patch_level(tee["boot_patch_level"].native, (6, 8)),
    }
    extra: dict[str, str] = {}
    root = tee["root_of_trust"]
    if root.native is not None:
        posture["verified_boot"] = _BOOT_STATES[root["verified_boot_state"].native]
        posture["bootloader_locked"] = bool(root["device_locked"].native)
        extra["android.verified_boot_key"] = root["verified_boot_key"].native.hex()
        if root["verified_boot_hash"].native is not None:
            extra["android.verified_boot_hash"] = root["verified_boot_hash"].native.hex()
    for name in _DEVICE_IDS:
        value = tee[f"attestation_id_{name}"].native
        if value is not None:
            extra[f"android.id.{name}"] = value.decode("utf-8")
    if tee["device_unique_attestation"].native is not None:
        extra["android.device_unique_attestation"] = "true"
    serial = tee["attestation_id_serial"].native
    identifiers = (PermanentIdentifier(serial.decode("utf-8")),) if serial is not None else ()
    return posture, extra, identifiers


@catch_builtins
def _as_sent(path: Sequence[asn1_x509.Certificate], x5c: Sequence[bytes],
             ctx: VerificationContext) -> tuple[bytes, ...]:
    """The path as the DER it arrived in (x5c or trust store), matched by signature value.

    `Certificate.dump()` may re-encode (asn1crypto mistakes a length ending in 0x80 for an
    indefinite one), which is slow and would alter a BER-encoded certificate's bytes.
    """
    sent = [*x5c, *ctx.trust.intermediates_for(FMT), *ctx.trust.roots_for(FMT)]
    by_signature = {asn1_x509.Certificate.load(der)["signature_value"].native: der for der in sent}
    return tuple(by_signature[cert["signature_value"].native] for cert in path)


def _evidence(chain: tuple[bytes, ...], description: KeyDescription, spki: bytes, ctx: VerificationContext,
              trust: tuple[TrustLevel, str]) -> Evidence:
    trust_level, protection = trust
    extra = {
        "android.attestation_version": str(description["attestation_version"].native),
        "android.keymint_version": str(description["keymint_version"].native),
    }
    posture: dict[str, Any] = {}
    identifiers: tuple[PermanentIdentifier, ...] = ()
    if chain[-1] not in software_roots():  # under the software root, no fact is proved
        posture, facts, identifiers = _hardware_facts(description)
        extra.update(facts)
    return Evidence(
        fmt=FMT,
        public_key=spki,
        trust_level=trust_level,
        permanent_identifiers=identifiers,
        posture=Posture(key_protection=protection, extra=tuple(sorted(extra.items())), **posture),
        chain=chain,
        attested_at=ctx.now,
    )


# --- entry points --------------------------------------------------------------------------


def verify_x5c(x5c: Sequence[bytes], ctx: VerificationContext) -> Evidence:
    """Checks 2–5 on a bare chain: all of `verify` but `sig` (what captured chains can exercise)."""
    return _verified_x5c(x5c, ctx)[0]


def _verified_x5c(x5c: Sequence[bytes], ctx: VerificationContext) -> tuple[Evidence, str]:
    if not x5c:
        raise MalformedStatement("x5c is empty")
    key_type, spki = _leaf_key(x5c[0])
    path = _anchored_leaf(x5c, ctx)
    check_revocation(path, ctx.revocation.get(FMT), FMT)
    description = _key_description(path)
    _check_challenge(description, ctx)
    chain = _as_sent(path, x5c, ctx)
    trust = _trust(chain, description)
    _check_key_origin_and_purpose(description, trust[0])
    return _evidence(chain, description, spki, ctx, trust), key_type


@catch_builtins
def _public_key(key_type: str, spki: bytes):
    if key_type in ("ec", "rsa"):
        return public_key_of(keys.PublicKeyInfo.load(spki))
    return serialization.load_der_public_key(spki)


def _check_signature(alg_id: int, sig: bytes, key_type: str, spki: bytes, data: bytes) -> None:
    alg = ALGORITHMS[alg_id]
    if alg.key != key_type:
        raise InvalidSignature(f"alg {alg.name} does not match the attested {key_type} key")
    key = _public_key(key_type, spki)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, data, ec.ECDSA(alg.hash()))
        elif isinstance(key, rsa.RSAPublicKey):
            pad = padding.PSS(padding.MGF1(alg.hash()), padding.PSS.DIGEST_LENGTH) if alg.pss else padding.PKCS1v15()
            key.verify(sig, data, pad, alg.hash())
        else:
            key.verify(sig, data)  # ML-DSA, empty context
    except _CryptoInvalidSignature:
        raise InvalidSignature(f"sig does not verify over attToBeSigned with the attested key ({alg.name})") from None


def verify(att_stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
    alg, sig, x5c = _statement(att_stmt)
    if alg not in ALGORITHMS:
        allowed = ", ".join(f"{a.name} ({i})" for i, a in ALGORITHMS.items())
        raise UnsupportedFormat(f"alg {alg} is not supported; allowed: {allowed}")
    evidence, key_type = _verified_x5c(x5c, ctx)
    _check_signature(alg, sig, key_type, evidence.public_key or b"", bytes(ctx.binding.att_to_be_signed))
    return evidence


FORMAT = Format(name=FMT, verify=verify, acme_binding=key_authorization_binding)
