"""The device posture extension: the one codec the issuer writes with and the gate reads with.

The extension (OID `ca.oids.DEVICE_POSTURE`, non-critical) carries what the attestation
proved about the device when the certificate was issued. Only proved facts are encoded;
a fact the evidence did not prove is absent, never a default. The extension value is the
DER encoding of `DevicePosture`::

    AcmedaDevicePosture DEFINITIONS IMPLICIT TAGS ::= BEGIN

    id-acmeda OBJECT IDENTIFIER ::= { 2 25 55515455809226192695543010104513035564 }
    id-acmeda-devicePosture OBJECT IDENTIFIER ::= { id-acmeda 1 1 }

    DevicePosture ::= SEQUENCE {
        version     INTEGER { v1(1) },          -- v1 decoders read 1 and reject the rest
        format      UTF8String (SIZE (1..MAX)), -- attestation format: "apple", "tpm", ...
        trustLevel  TrustLevel,
        attestedAt  GeneralizedTime,            -- UTC, whole seconds: YYYYMMDDHHMMSSZ
        facts       PostureFacts }

    TrustLevel ::= ENUMERATED { software(0), cloud(1), tee(2), hardware(3) }

    PostureFacts ::= SEQUENCE {
        osVersion         [0]  UTF8String        OPTIONAL,
        osPatchLevel      [1]  PatchLevel        OPTIONAL,
        vendorPatchLevel  [2]  PatchLevel        OPTIONAL,
        bootPatchLevel    [3]  PatchLevel        OPTIONAL,
        verifiedBoot      [4]  VerifiedBootState OPTIONAL,
        bootloaderLocked  [5]  BOOLEAN           OPTIONAL,
        secureBoot        [6]  UTF8String        OPTIONAL,
        sepOsVersion      [7]  UTF8String        OPTIONAL,
        llbVersion        [8]  UTF8String        OPTIONAL,
        firmwareVersion   [9]  UTF8String        OPTIONAL,
        keyProtection     [10] UTF8String        OPTIONAL,
        pinPolicy         [11] UTF8String        OPTIONAL,
        touchPolicy       [12] UTF8String        OPTIONAL,
        extra             [13] ExtraFacts        OPTIONAL,
        keyAttested       [14] BOOLEAN           OPTIONAL,
        replayable        [15] BOOLEAN           OPTIONAL,
        ... }  -- additions take [16] and up, in tag order; older decoders skip them

    PatchLevel ::= UTF8String (FROM ("0".."9")) (SIZE (6 | 8))  -- YYYYMM or YYYYMMDD

    VerifiedBootState ::= ENUMERATED { verified(0), selfSigned(1), unverified(2), failed(3) }

    ExtraFacts ::= SEQUENCE SIZE (1..MAX) OF ExtraFact  -- names unique, ascending

    ExtraFact ::= SEQUENCE { name UTF8String (SIZE (1..MAX)), value UTF8String }

    END

`docs/certificate-profile.md` explains each field, which formats prove it, and the
versioning rules. The decoder is strict: anything but the DER of a version-1 value
(trailing bytes, an unknown enumeration value, facts out of tag order) raises
`PostureDecodeError`. The one leniency is the extension marker of `PostureFacts`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Final

from asn1crypto import core, parser
from cryptography import x509

from attestation.evidence import Evidence, Posture, TrustLevel
from ca import oids

VERSION: Final = 1
OID: Final = x509.ObjectIdentifier(oids.DEVICE_POSTURE)
CRITICAL: Final = False  # the issuer adds the extension with critical=CRITICAL

_TRUST_LEVELS = {0: "software", 1: "cloud", 2: "tee", 3: "hardware"}
_VERIFIED_BOOT = {0: "verified", 1: "self-signed", 2: "unverified", 3: "failed"}
_PATCH_LEVEL = re.compile(r"[0-9]{6}(?:[0-9]{2})?")
_GENERALIZED_TIME = re.compile(rb"[0-9]{14}Z")
_CONTEXT_CLASS = 2


class PostureDecodeError(ValueError):
    """The bytes are not a DevicePosture this decoder can read; the message names the problem."""


class _TrustLevel(core.Enumerated):
    _map = _TRUST_LEVELS


class _VerifiedBootState(core.Enumerated):
    _map = _VERIFIED_BOOT


class _PatchLevel(core.UTF8String):
    """YYYYMM or YYYYMMDD; the digits are checked by `_check_patch_level`."""


class _ExtraFact(core.Sequence):
    _fields = [("name", core.UTF8String), ("value", core.UTF8String)]


class _ExtraFacts(core.SequenceOf):
    _child_spec = _ExtraFact


class _PostureFacts(core.Sequence):
    _fields = [
        ("osVersion", core.UTF8String, {"implicit": 0, "optional": True}),
        ("osPatchLevel", _PatchLevel, {"implicit": 1, "optional": True}),
        ("vendorPatchLevel", _PatchLevel, {"implicit": 2, "optional": True}),
        ("bootPatchLevel", _PatchLevel, {"implicit": 3, "optional": True}),
        ("verifiedBoot", _VerifiedBootState, {"implicit": 4, "optional": True}),
        ("bootloaderLocked", core.Boolean, {"implicit": 5, "optional": True}),
        ("secureBoot", core.UTF8String, {"implicit": 6, "optional": True}),
        ("sepOsVersion", core.UTF8String, {"implicit": 7, "optional": True}),
        ("llbVersion", core.UTF8String, {"implicit": 8, "optional": True}),
        ("firmwareVersion", core.UTF8String, {"implicit": 9, "optional": True}),
        ("keyProtection", core.UTF8String, {"implicit": 10, "optional": True}),
        ("pinPolicy", core.UTF8String, {"implicit": 11, "optional": True}),
        ("touchPolicy", core.UTF8String, {"implicit": 12, "optional": True}),
        ("extra", _ExtraFacts, {"implicit": 13, "optional": True}),
        ("keyAttested", core.Boolean, {"implicit": 14, "optional": True}),
        ("replayable", core.Boolean, {"implicit": 15, "optional": True}),
    ]


class _DevicePosture(core.Sequence):
    _fields = [
        ("version", core.Integer),
        ("format", core.UTF8String),
        ("trustLevel", _TrustLevel),
        ("attestedAt", core.GeneralizedTime),
        ("facts", _PostureFacts),
    ]


# Posture attribute -> PostureFacts field, for every fact but `extra`.
FACT_FIELDS: Final[Mapping[str, str]] = {
    "os_version": "osVersion",
    "os_patch_level": "osPatchLevel",
    "vendor_patch_level": "vendorPatchLevel",
    "boot_patch_level": "bootPatchLevel",
    "verified_boot": "verifiedBoot",
    "bootloader_locked": "bootloaderLocked",
    "secure_boot": "secureBoot",
    "sep_os_version": "sepOsVersion",
    "llb_version": "llbVersion",
    "firmware_version": "firmwareVersion",
    "key_protection": "keyProtection",
    "pin_policy": "pinPolicy",
    "touch_policy": "touchPolicy",
    "key_attested": "keyAttested",
    "replayable": "replayable",
}
_ATTRIBUTE_OF = {name: attr for attr, name in FACT_FIELDS.items()}
_LAST_KNOWN_TAG = 15  # `replayable`; additions are tagged above it
_BOOLEAN_FACTS = frozenset({"bootloader_locked", "key_attested", "replayable"})


@dataclass(frozen=True)
class DecodedPosture:
    """A decoded DevicePosture. `posture` holds exactly the facts the extension carried."""

    version: int
    fmt: str
    trust_level: TrustLevel
    attested_at: datetime  # timezone-aware UTC, whole seconds
    posture: Posture

    def to_json(self) -> dict[str, Any]:
        """The JSON view, named as in the ASN.1; absent facts are absent keys, never null."""
        facts: dict[str, Any] = {}
        for attr, name in FACT_FIELDS.items():
            value = getattr(self.posture, attr)
            if value is not None:
                facts[name] = value
        if self.posture.extra:
            facts["extra"] = [{"name": name, "value": value} for name, value in self.posture.extra]
        return {
            "version": self.version,
            "format": self.fmt,
            "trustLevel": self.trust_level.value,
            "attestedAt": self.attested_at.isoformat().replace("+00:00", "Z"),
            "facts": facts,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DecodedPosture:
        """Inverse of `to_json` (for test vectors and tools; the certificate is the truth)."""
        facts = dict(obj["facts"])
        extra = tuple((item["name"], item["value"]) for item in facts.pop("extra", ()))
        unknown = set(facts) - set(_ATTRIBUTE_OF)
        if unknown:
            raise ValueError(f"unknown facts {sorted(unknown)}")
        posture = Posture(**{_ATTRIBUTE_OF[name]: value for name, value in facts.items()}, extra=extra)
        attested_at = datetime.fromisoformat(obj["attestedAt"]).astimezone(timezone.utc)
        return cls(obj["version"], obj["format"], TrustLevel(obj["trustLevel"]), attested_at, posture)


def issued_evidence(evidence: Evidence) -> Evidence:
    """The evidence with the two facts the CA states about the attestation itself: whether it
    certified the certificate's key, and (only when true) that it was replayable."""
    posture = replace(evidence.posture, key_attested=evidence.public_key is not None,
                      replayable=True if evidence.replayable else None)
    return replace(evidence, posture=posture)


def stated_posture(evidence: Evidence) -> tuple[str, TrustLevel, Posture]:
    """Everything the extension would state of `evidence` but attestedAt: the inputs of
    `encode_posture(issued_evidence(evidence), ...)`. Two evidences with equal values write the
    same extension at the same time, so one certificate can carry both."""
    issued = issued_evidence(evidence)
    return issued.fmt, TrustLevel(issued.trust_level), issued.posture


def encode_posture(evidence: Evidence, attested_at: datetime) -> bytes:
    """DER of the DevicePosture extension value for `evidence`, attested at `attested_at`.

    `attested_at` must be timezone-aware; it is written in UTC, truncated to whole seconds.
    Raises `ValueError` for evidence the profile cannot carry (an empty format, a patch
    level that is not YYYYMM[DD], an unknown verified-boot state, unsorted extra facts):
    a verifier bug must stop issuance, not be papered over in a certificate.
    """
    return _encode(evidence.fmt, TrustLevel(evidence.trust_level), attested_at, evidence.posture)


def decode_posture(der: bytes) -> DecodedPosture:
    """Decode a DevicePosture extension value; raise `PostureDecodeError` for anything else."""
    try:
        return _decode(bytes(der))
    except PostureDecodeError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise PostureDecodeError("DevicePosture: " + " ".join(str(exc).split())) from exc


def posture_extension(evidence: Evidence, attested_at: datetime) -> x509.UnrecognizedExtension:
    """The extension for the issuer: `builder.add_extension(ext, critical=CRITICAL)`."""
    return x509.UnrecognizedExtension(OID, encode_posture(evidence, attested_at))


def posture_from_certificate(cert: x509.Certificate) -> DecodedPosture | None:
    """The certificate's decoded posture, or None when it has no posture extension.

    A present but malformed extension raises `PostureDecodeError`; it never reads as None.
    """
    try:
        extension = cert.extensions.get_extension_for_oid(OID)
    except x509.ExtensionNotFound:
        return None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):  # only if cryptography learnt the OID
        raise PostureDecodeError(f"unexpected parsed extension type {type(value).__name__}")
    return decode_posture(value.value)


def _encode(fmt: str, trust_level: TrustLevel, attested_at: datetime, posture: Posture) -> bytes:
    if not isinstance(fmt, str) or not fmt:
        raise ValueError("format must be a non-empty string")
    value = _DevicePosture({
        "version": VERSION,
        "format": fmt,
        "trustLevel": trust_level.value,
        "attestedAt": core.GeneralizedTime(_generalized_time(attested_at)),
        "facts": _facts_value(posture),
    })
    return value.dump()


def _generalized_time(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("attested_at must be timezone-aware")
    t = moment.astimezone(timezone.utc)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}Z"


def _facts_value(posture: Posture) -> _PostureFacts:
    value: dict[str, Any] = {}
    for attr, name in FACT_FIELDS.items():
        fact = getattr(posture, attr)
        if fact is not None:
            _check_fact(attr, fact)
            value[name] = fact
    if posture.extra:
        _check_extra(posture.extra)
        value["extra"] = [{"name": name, "value": fact} for name, fact in posture.extra]
    # asn1crypto reads an empty dict as "not set"; no facts is an empty SEQUENCE.
    return _PostureFacts(value) if value else _PostureFacts(contents=b"")


def _check_fact(attr: str, fact: object) -> None:
    """The type and vocabulary rules of one fact, shared by encoder and decoder."""
    if attr in _BOOLEAN_FACTS:
        if not isinstance(fact, bool):
            raise ValueError(f"{attr} must be a bool, not {type(fact).__name__}")
        return
    if not isinstance(fact, str):
        raise ValueError(f"{attr} must be a str, not {type(fact).__name__}")
    if attr.endswith("_patch_level") and not _PATCH_LEVEL.fullmatch(fact):
        raise ValueError(f"{attr} {fact!r} is not YYYYMM or YYYYMMDD")
    if attr == "verified_boot" and fact not in _VERIFIED_BOOT.values():
        raise ValueError(f"verified_boot {fact!r} is not one of {sorted(_VERIFIED_BOOT.values())}")


def _check_extra(extra: tuple[tuple[str, str], ...]) -> None:
    for name, value in extra:
        if not isinstance(name, str) or not isinstance(value, str) or not name:
            raise ValueError(f"extra fact {(name, value)!r} must be a pair of strings, name non-empty")
    names = [name for name, _ in extra]
    if any(later <= earlier for earlier, later in zip(names, names[1:])):
        raise ValueError(f"extra facts must have unique names in ascending order, got {names}")


def _decode(der: bytes) -> DecodedPosture:
    value = _DevicePosture.load(der, strict=True)
    version = value["version"].native
    if version != VERSION:
        raise PostureDecodeError(f"unknown DevicePosture version {version}; this decoder reads {VERSION}")
    if len(value) != len(_DevicePosture._fields):
        raise PostureDecodeError("DevicePosture has elements after facts; its top level is closed")
    fmt = value["format"].native
    if not fmt:
        raise PostureDecodeError("format is empty")
    trust_level = TrustLevel(_enum_name(value["trustLevel"], "trustLevel"))
    attested_at = _read_time(value["attestedAt"])
    additions = [tag for tag in _fact_tags(value["facts"]) if tag > _LAST_KNOWN_TAG]
    decoded = DecodedPosture(VERSION, fmt, trust_level, attested_at, _read_facts(value["facts"]))
    _check_der(der, value, decoded, bool(additions))
    return decoded


def _enum_name(value: core.Enumerated, field: str) -> str:
    number, names = int(value), type(value)._map
    if number not in names:
        raise PostureDecodeError(f"{field} {number} is not a known value (known: {names})")
    return names[number]


def _read_time(value: core.GeneralizedTime) -> datetime:
    if not _GENERALIZED_TIME.fullmatch(value.contents):
        raise PostureDecodeError(f"attestedAt {value.contents!r} is not YYYYMMDDHHMMSSZ")
    moment = datetime.strptime(value.contents.decode("ascii"), "%Y%m%d%H%M%SZ")
    return moment.replace(tzinfo=timezone.utc)


def _read_facts(facts: _PostureFacts) -> Posture:
    values: dict[str, Any] = {}
    for attr, name in FACT_FIELDS.items():
        field = facts[name]
        if isinstance(field, core.Void):
            continue
        if isinstance(field, core.Enumerated):
            values[attr] = _enum_name(field, name)
        else:
            values[attr] = field.native
            _check_fact(attr, values[attr])
    extra_field = facts["extra"]
    if isinstance(extra_field, core.Void):
        return Posture(**values)
    extra = tuple((item["name"].native, item["value"].native) for item in extra_field)
    if not extra:
        raise PostureDecodeError("extra is present but empty; an empty list is encoded as absent")
    _check_extra(extra)
    return Posture(**values, extra=extra)


def _fact_tags(facts: _PostureFacts) -> list[int]:
    """Tag numbers of the facts' elements, which must be context-specific and ascending.

    asn1crypto's typed Sequence cannot name an element it has no spec for, so the
    extension additions are found with its TLV reader (`parser.parse` / `parser.peek`).
    """
    tags: list[int] = []
    rest = facts.contents or b""
    while rest:
        class_, _method, tag, _header, _contents, _trailer = parser.parse(rest)
        if class_ != _CONTEXT_CLASS:
            raise PostureDecodeError(f"facts element with tag {tag} is not context-specific")
        if tags and tag <= tags[-1]:
            raise PostureDecodeError(f"facts element [{tag}] repeated or out of order after [{tags[-1]}]")
        tags.append(tag)
        rest = rest[parser.peek(rest):]
    return tags


def _check_der(der: bytes, value: _DevicePosture, decoded: DecodedPosture, has_additions: bool) -> None:
    """Reject BER leniencies: what was read must re-encode to the very bytes received.

    Without additions (all a v1 issuer writes) the whole value is compared. With additions
    each element this decoder read is compared; the bytes of skipped additions are opaque.
    """
    if not has_additions:
        if _encode(decoded.fmt, decoded.trust_level, decoded.attested_at, decoded.posture) != der:
            raise PostureDecodeError("not DER: the value does not re-encode to the same bytes")
        return
    facts = value["facts"]
    read = [value[name] for name in ("version", "format", "trustLevel", "attestedAt")]
    read += [facts[name] for name, *_ in _PostureFacts._fields if not isinstance(facts[name], core.Void)]
    for element in read:
        received = element.dump()
        if element.dump(force=True) != received:
            raise PostureDecodeError(f"not DER: {type(element).__name__} {received.hex()}")
