"""`Evidence`: what a verified attestation proved, and nothing more.

Facts the evidence did not prove are `None`, never guessed. The CA turns this into the
certificate's SAN and posture extension, and decides policy on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class TrustLevel(str, Enum):
    """How strongly the attested key is protected, weakest first (`rank` orders them)."""

    SOFTWARE = "software"
    CLOUD = "cloud"
    TEE = "tee"
    HARDWARE = "hardware"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {TrustLevel.SOFTWARE: 0, TrustLevel.CLOUD: 1, TrustLevel.TEE: 2, TrustLevel.HARDWARE: 3}


@dataclass(frozen=True)
class PermanentIdentifier:
    """RFC 4043 PermanentIdentifier: a value, and the OID of who assigned it (if stated)."""

    value: str
    assigner: str | None = None


@dataclass(frozen=True)
class HardwareModule:
    """RFC 4108 HardwareModuleName: a hardware type OID and a serial number."""

    hw_type: str
    serial: bytes


@dataclass(frozen=True)
class Posture:
    """Posture facts the evidence proved. Every field is optional: absent means not proved."""

    os_version: str | None = None
    os_patch_level: str | None = None  # YYYYMM or YYYYMMDD as the format states it
    vendor_patch_level: str | None = None
    boot_patch_level: str | None = None
    verified_boot: str | None = None  # e.g. "verified", "self-signed", "unverified", "failed"
    bootloader_locked: bool | None = None
    secure_boot: str | None = None  # e.g. Apple "full", TPM "enabled"
    sep_os_version: str | None = None
    llb_version: str | None = None
    firmware_version: str | None = None  # TPM / YubiKey / TEE firmware
    key_protection: str | None = None  # "software", "tee", "strongbox", "secure-enclave", "tpm", "piv"
    pin_policy: str | None = None
    touch_policy: str | None = None
    extra: tuple[tuple[str, str], ...] = ()  # further named facts, sorted by name
    # Written by the CA, not by formats: whether the attestation certified the certificate's
    # key (False: the key is bound only through the ACME account), and whether the evidence
    # was replayable (admitted once per identifier). See `ca.posture.issued_posture`.
    key_attested: bool | None = None
    replayable: bool | None = None


@dataclass(frozen=True)
class Evidence:
    """The result of a successful verification."""

    fmt: str
    public_key: bytes | None  # SubjectPublicKeyInfo DER of the attested key; None when not attested
    trust_level: TrustLevel
    permanent_identifiers: tuple[PermanentIdentifier, ...] = ()
    hardware_modules: tuple[HardwareModule, ...] = ()
    posture: Posture = field(default_factory=Posture)
    chain: tuple[bytes, ...] = ()  # DER, leaf first, up to and including the trust anchor
    attested_at: datetime | None = None
    # True when the evidence carries no challenge binding and could be replayed by whoever saw
    # it (EC2 instance identity documents): the CA then admits it once per identifier only.
    replayable: bool = False
