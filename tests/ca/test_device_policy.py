"""Device policy: each rule accepts compliant evidence and refuses the rest, naming the rule."""

from __future__ import annotations

import pytest

from attestation.evidence import Evidence, Posture, TrustLevel
from ca.device_policy import DevicePolicy, patch_month, version_tuple
from ca.problems import BadAttestationStatement


def evidence(level=TrustLevel.HARDWARE, **posture) -> Evidence:
    return Evidence(fmt="android-key", public_key=b"k", trust_level=level, posture=Posture(**posture))


@pytest.mark.parametrize("policy, ev, rule", [
    (DevicePolicy(), evidence(TrustLevel.SOFTWARE), "min-trust-level"),
    (DevicePolicy(min_trust_level=TrustLevel.HARDWARE), evidence(TrustLevel.TEE), "min-trust-level"),
    (DevicePolicy(min_os_version="15"), evidence(os_version="14.9.9"), "min-os-version"),
    (DevicePolicy(min_os_version="15"), evidence(), "min-os-version"),
    (DevicePolicy(min_patch_level="2025-06"), evidence(os_patch_level="202505"), "min-patch-level"),
    (DevicePolicy(min_patch_level="2025-06"), evidence(), "min-patch-level"),
    (DevicePolicy(require_verified_boot=True), evidence(verified_boot="unverified"), "require-verified-boot"),
    (DevicePolicy(require_verified_boot=True), evidence(), "require-verified-boot"),
    (DevicePolicy(require_bootloader_locked=True), evidence(bootloader_locked=False), "require-bootloader-locked"),
    (DevicePolicy(require_bootloader_locked=True), evidence(), "require-bootloader-locked"),
])
def test_refusals_name_the_rule(policy, ev, rule):
    with pytest.raises(BadAttestationStatement, match=f"device policy rule {rule}:"):
        policy.check(ev)


def test_compliant_evidence_passes():
    policy = DevicePolicy(min_trust_level=TrustLevel.TEE, min_os_version="15", min_patch_level="2025-06",
                          require_verified_boot=True, require_bootloader_locked=True)
    policy.check(evidence(TrustLevel.TEE, os_version="15.0.0", os_patch_level="20250605",
                          verified_boot="verified", bootloader_locked=True))


def test_version_and_patch_parsing():
    assert version_tuple("15.0.0") == version_tuple("15") < version_tuple("15.1")
    assert patch_month("2025-06") == patch_month("202506") == patch_month("20250630") == (2025, 6)
    with pytest.raises(ValueError):
        DevicePolicy(min_os_version="fifteen")
