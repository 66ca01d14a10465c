"""A fake Android fleet: root → attestation key → leaf with a KeyDescription, bound to a Binding.

`attest(binding)` returns a valid `android-key` attestation statement, the attested private
key (for the CSR at finalize) and the trust store, revocation list and context that verify
it; `for_acme(token, key_authorization)` binds it the way the CA does. Every field the
verifier checks has a knob in `Knobs`, so each rejection reason is one keyword away:

    att = attest(binding, serial_in="software", boot_state="SelfSigned")
    verify(att.att_stmt, att.context())

The KeyDescription is encoded with the production schema (`attestation.asn1.android_key`),
certificates with `cryptography`. CA keys are generated once per process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, padding, rsa
from cryptography.x509.oid import NameOID

from attestation.asn1.android_key import KEY_DESCRIPTION_OID, DerBoolean, KeyDescription
from attestation.context import Binding, TrustStore, VerificationContext
from attestation.formats.android_key import FMT, FORMAT, RevocationList, load_revocation_list

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)  # = tests/conftest.py START
ANDROID_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ANDROID_END = datetime(2048, 1, 1, tzinfo=timezone.utc)
COSE_ALG = {"ec": -7, "rsa": -257, "ml-dsa-65": -49}


@dataclass(frozen=True)
class Knobs:
    """Defaults describe a healthy TEE device with a locked, verified boot and a serial."""

    challenge: bytes | None = None  # None: binding.challenge
    security_level: str = "TrustedEnvironment"  # attestationSecurityLevel
    keymint_level: str | None = None  # None: same as security_level
    version: int = 400
    boot_state: str | None = "Verified"  # None: no RootOfTrust at all
    device_locked: bool | str = True  # "ber": deviceLocked TRUE encoded as 0x01
    os_version: int | None = 150000
    os_patch_level: int | None = 202501
    vendor_patch_level: int | None = 20250105
    boot_patch_level: int | None = 20250105
    serial: str = "FLEET-0001"
    serial_in: str = "tee"  # "tee", "software" (softwareEnforced only) or "absent"
    brand: str | None = "acmeda"
    key_type: str = "ec"  # "ec", "rsa" or "ml-dsa-65"
    alg: int | None = None  # None: the one matching key_type
    sig: str = "good"  # "good", "wrong-data", "garbage"
    untrusted: bool = False  # chain to a root that is not in the trust store
    expired: str | None = None  # "leaf", "intermediate" or "root": not valid at `now`
    revoked: str | None = None  # "leaf", "intermediate" or "root": listed in the status list
    revoked_status: str = "REVOKED"  # or "SUSPENDED"
    key_description: str = "leaf"  # "leaf", "absent", "also-intermediate", "truncated"
    intermediate_is_ca: bool = True  # False: the attestation key cert says cA=FALSE (Sony)
    include_root: bool = True  # put the root at the end of x5c
    extra_tee: dict[str, Any] = field(default_factory=dict)  # any other hardwareEnforced field
    extra_software: dict[str, Any] = field(default_factory=dict)  # any softwareEnforced field


@dataclass(frozen=True)
class Attestation:
    att_stmt: dict[str, Any]
    binding: Binding
    now: datetime
    trust: TrustStore  # the fleet root for "android-key"
    revocation: RevocationList
    key: Any  # the attested private key
    chain: tuple[bytes, ...]  # x5c as sent

    def att_obj(self) -> bytes:
        """The CBOR attestation object a device sends in device-attest-01 (draft §5: {fmt, attStmt})."""
        return cbor2.dumps({"fmt": FMT, "attStmt": self.att_stmt})

    def context(self, **changes: Any) -> VerificationContext:
        ctx = VerificationContext(binding=self.binding, now=self.now, trust=self.trust,
                                  revocation={FMT: self.revocation})
        return replace(ctx, **changes)


@lru_cache(maxsize=None)
def _ca_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1() if name.endswith("root") else ec.SECP256R1())


@lru_cache(maxsize=None)
def _rsa_leaf_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _leaf_key(key_type: str):
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return _rsa_leaf_key()
    if key_type == "ml-dsa-65":
        return mldsa.MLDSA65PrivateKey.generate()
    raise ValueError(key_type)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _window(role: str, knobs: Knobs, now: datetime, default: tuple[datetime, datetime]) -> tuple[datetime, datetime]:
    if knobs.expired == role:
        return now - timedelta(days=30), now - timedelta(days=1)
    return default


def _authorization_lists(knobs: Knobs) -> tuple[dict[str, Any], dict[str, Any]]:
    tee: dict[str, Any] = {"purpose": {2}, "algorithm": {"ec": 3, "rsa": 1}.get(knobs.key_type, 4),
                           "origin": 0, "no_auth_required": None}
    if knobs.boot_state is not None:
        locked = DerBoolean.load(b"\x01\x01\x01") if knobs.device_locked == "ber" else bool(knobs.device_locked)
        tee["root_of_trust"] = {"verified_boot_key": bytes(32), "device_locked": locked,
                                "verified_boot_state": knobs.boot_state, "verified_boot_hash": bytes(range(32))}
    for name in ("os_version", "os_patch_level", "vendor_patch_level", "boot_patch_level"):
        if getattr(knobs, name) is not None:
            tee[name] = getattr(knobs, name)
    if knobs.brand is not None:
        tee["attestation_id_brand"] = knobs.brand.encode()
    software: dict[str, Any] = {"creation_date_time": 1_700_000_000_000}
    if knobs.serial_in in ("tee", "software"):
        (tee if knobs.serial_in == "tee" else software)["attestation_id_serial"] = knobs.serial.encode()
    tee.update(knobs.extra_tee)
    software.update(knobs.extra_software)
    return software, tee


def key_description(knobs: Knobs, challenge: bytes) -> bytes:
    """The DER of a KeyDescription as KeyMint would write it for these knobs."""
    software, tee = _authorization_lists(knobs)
    return KeyDescription({
        "attestation_version": knobs.version,
        "attestation_security_level": knobs.security_level,
        "keymint_version": knobs.version,
        "keymint_security_level": knobs.keymint_level or knobs.security_level,
        "attestation_challenge": challenge,
        "unique_id": b"",
        "software_enforced": software,
        "hardware_enforced": tee,
    }).dump()


def _certificate(subject: str, issuer: str, public_key, signer, window, *, ca: bool | None,
                 serial: int, extensions: tuple[x509.ExtensionType, ...] = ()) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(public_key).serial_number(serial)
               .not_valid_before(window[0]).not_valid_after(window[1]))
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, ca, ca, False, False),
                                        critical=True)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signer, hashes.SHA256())


def _kd_extension(knobs: Knobs, challenge: bytes) -> tuple[x509.ExtensionType, ...]:
    if knobs.key_description == "absent":
        return ()
    der = key_description(knobs, challenge)
    if knobs.key_description == "truncated":
        der = der[: len(der) // 2]
    return (x509.UnrecognizedExtension(x509.ObjectIdentifier(KEY_DESCRIPTION_OID), der),)


def _chain(knobs: Knobs, now: datetime, leaf_public, challenge: bytes) -> tuple[list[x509.Certificate], bytes]:
    root_name = "Fleet Untrusted Root" if knobs.untrusted else "Fleet Attestation Root"
    root_key, mid_key = _ca_key(root_name + " root"), _ca_key("fleet intermediate")
    trusted_root_key = _ca_key("Fleet Attestation Root root")
    long = (now - timedelta(days=365), now + timedelta(days=3650))
    root = _certificate(root_name, root_name, root_key.public_key(), root_key, _window("root", knobs, now, long),
                        ca=True, serial=0x1001)
    mid_ext = _kd_extension(knobs, challenge) if knobs.key_description == "also-intermediate" else ()
    mid = _certificate("Fleet TEE attestation key", root_name, mid_key.public_key(), root_key,
                       _window("intermediate", knobs, now, long), ca=knobs.intermediate_is_ca, serial=0x2002,
                       extensions=mid_ext)
    leaf = _certificate("Android Keystore Key", "Fleet TEE attestation key", leaf_public, mid_key,
                        _window("leaf", knobs, now, (ANDROID_EPOCH, ANDROID_END)), ca=None, serial=1,
                        extensions=_kd_extension(knobs, challenge))
    trusted_root = root if not knobs.untrusted else _certificate(
        "Fleet Attestation Root", "Fleet Attestation Root", trusted_root_key.public_key(), trusted_root_key,
        long, ca=True, serial=0x1001)
    return [leaf, mid, root], trusted_root.public_bytes(serialization.Encoding.DER)


def _sign(key, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def _revocation(knobs: Knobs, chain: list[x509.Certificate]) -> RevocationList:
    entries = {"c0ffee": {"status": "REVOKED", "reason": "KEY_COMPROMISE"}}  # never a fleet serial
    if knobs.revoked is not None:
        cert = chain[["leaf", "intermediate", "root"].index(knobs.revoked)]
        entries[format(cert.serial_number, "x")] = {"status": knobs.revoked_status, "reason": "KEY_COMPROMISE"}
    return load_revocation_list(json.dumps({"entries": entries}).encode())


def attest(binding: Binding, *, now: datetime = NOW, knobs: Knobs | None = None, key: Any = None,
           **changes: Any) -> Attestation:
    """An android-key statement for `binding`, valid at `now` unless a knob says otherwise."""
    knobs = replace(knobs or Knobs(), **changes)
    key = key or _leaf_key(knobs.key_type)
    challenge = binding.challenge if knobs.challenge is None else knobs.challenge
    chain, root_der = _chain(knobs, now, key.public_key(), challenge)
    signed = binding.att_to_be_signed + (b"!" if knobs.sig == "wrong-data" else b"")
    sig = b"\x30\x00" if knobs.sig == "garbage" else _sign(key, signed)
    x5c = [c.public_bytes(serialization.Encoding.DER) for c in (chain if knobs.include_root else chain[:2])]
    att_stmt = {"alg": knobs.alg if knobs.alg is not None else COSE_ALG[knobs.key_type], "sig": sig, "x5c": x5c}
    return Attestation(att_stmt=att_stmt, binding=binding, now=now, trust=TrustStore(roots={FMT: (root_der,)}),
                       revocation=_revocation(knobs, chain), key=key, chain=tuple(x5c))


def for_acme(token: str, key_authorization: bytes, **knobs: Any) -> Attestation:
    """`attest` bound the way the CA binds it (`android_key.FORMAT.acme_binding`)."""
    return attest(FORMAT.acme_binding(token, key_authorization), **knobs)
