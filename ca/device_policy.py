"""Device policy: whether verified evidence is good enough for a device certificate.

Verifiers prove facts; this module decides, after verification, whether the facts meet the
operator's rules. Every refusal names the rule and what the evidence showed. A rule that
needs a fact the evidence did not prove refuses too: absent is not compliant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from attestation.evidence import Evidence, TrustLevel
from ca.problems import BadAttestationStatement

_VERSION = re.compile(r"^\d+(\.\d+)*$")
_PATCH = re.compile(r"^(\d{4})-?(\d{2})(?:-?(\d{2}))?$")


def version_tuple(text: str) -> tuple[int, ...]:
    if not _VERSION.match(text):
        raise ValueError(f"{text!r} is not a dotted version number")
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()  # 15.0.0 == 15
    return tuple(parts)


def patch_month(text: str) -> tuple[int, int]:
    """'2025-06', '202506' or '20250605' → (2025, 6): patch levels compare by month."""
    match = _PATCH.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a patch level (YYYY-MM, YYYYMM or YYYYMMDD)")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class DevicePolicy:
    min_trust_level: TrustLevel = TrustLevel.TEE
    min_os_version: str | None = None
    min_patch_level: str | None = None
    require_verified_boot: bool = False
    require_bootloader_locked: bool = False
    # A Nitro Enclave in debug mode exposes its memory to the parent instance and reports
    # all-zero PCRs, so nothing it attests about its image holds: refused unless allowed.
    allow_nitro_debug: bool = False

    def __post_init__(self) -> None:
        if self.min_os_version is not None:
            version_tuple(self.min_os_version)
        if self.min_patch_level is not None:
            patch_month(self.min_patch_level)

    def check(self, evidence: Evidence) -> None:
        for rule in (self._trust_level, self._os_version, self._patch_level, self._verified_boot, self._bootloader,
                     self._nitro_debug):
            rule(evidence)

    def _trust_level(self, evidence: Evidence) -> None:
        if evidence.trust_level.rank < self.min_trust_level.rank:
            _refuse("min-trust-level", f"needs {self.min_trust_level.value} or stronger; the {evidence.fmt} "
                                      f"evidence proves {evidence.trust_level.value}")

    def _os_version(self, evidence: Evidence) -> None:
        _at_least("min-os-version", "OS", evidence.posture.os_version, self.min_os_version, version_tuple)

    def _patch_level(self, evidence: Evidence) -> None:
        _at_least("min-patch-level", "patch level", evidence.posture.os_patch_level, self.min_patch_level, patch_month)

    def _verified_boot(self, evidence: Evidence) -> None:
        if self.require_verified_boot and evidence.posture.verified_boot != "verified":
            _refuse("require-verified-boot", f"needs verified boot; the evidence proves "
                                            f"{evidence.posture.verified_boot or 'no boot state'}")

    def _bootloader(self, evidence: Evidence) -> None:
        if self.require_bootloader_locked and evidence.posture.bootloader_locked is not True:
            state = {None: "no bootloader state", False: "an unlocked bootloader"}[evidence.posture.bootloader_locked]
            _refuse("require-bootloader-locked", f"needs a locked bootloader; the evidence proves {state}")

    def _nitro_debug(self, evidence: Evidence) -> None:
        if not self.allow_nitro_debug and ("nitro_debug", "true") in evidence.posture.extra:
            _refuse("allow-nitro-debug", "the Nitro Enclave runs in debug mode (all-zero PCRs: its image is "
                                         "not measured and its memory is readable by the parent instance)")


def _at_least(rule: str, what: str, proved: str | None, minimum: str | None, key: Callable[[str], Any]) -> None:
    """`proved` must be present, comparable and not older than `minimum` (when one is set)."""
    if minimum is None:
        return
    if proved is None:
        _refuse(rule, f"needs {what} {minimum} or newer; the evidence proves no {what}")
    try:
        too_old = key(proved) < key(minimum)
    except ValueError:
        _refuse(rule, f"the evidence's {what} {proved!r} is not comparable")
    if too_old:
        _refuse(rule, f"needs {what} {minimum} or newer; the evidence proves {proved}")


def _refuse(rule: str, detail: str) -> NoReturn:
    raise BadAttestationStatement(f"device policy rule {rule}: {detail}")
