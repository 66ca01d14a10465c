"""Device attestation from configuration: enabled formats, operator roots, the refreshable
Android revocation list (read from a local file, as an operator would refresh it)."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization

from attestation.registry import default_trust
from ca.config import Config
from ca.device_setup import RefreshingRevocationList, device_policy, enabled_formats, trust_store
from tests.vectors import read


def test_enabled_formats_and_unknown_names():
    assert sorted(enabled_formats(Config())) == ["android-key", "apple", "step", "tpm"]
    assert list(enabled_formats(Config(attestation_formats=("apple",)))) == ["apple"]
    with pytest.raises(ValueError, match="unknown nope"):
        enabled_formats(Config(attestation_formats=("apple", "nope")))


def _operator_root(tmp_path, fmt: str):
    from tests.fleet.apple import pki

    folder = tmp_path / "roots" / fmt
    folder.mkdir(parents=True)
    root = pki().root
    (folder / "fleet.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return root.public_bytes(serialization.Encoding.DER)


def test_operator_roots_are_added_or_replace_the_bundled_ones(tmp_path):
    der = _operator_root(tmp_path, "apple")
    formats = enabled_formats(Config(attestation_formats=("apple",)))
    added = trust_store(Config(attestation_roots=tmp_path / "roots"), formats)
    assert der in added.roots_for("apple") and set(default_trust().roots_for("apple")) < set(added.roots_for("apple"))
    only = trust_store(Config(attestation_roots=tmp_path / "roots", attestation_roots_only=True), formats)
    assert only.roots_for("apple") == (der,)


def test_revocation_list_is_reread_when_the_file_changes(tmp_path):
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"entries": {}}))
    check = RefreshingRevocationList(path)
    assert check(0xABC) is None
    path.write_text(json.dumps({"entries": {"abc": {"status": "REVOKED", "reason": "KEY_COMPROMISE"}}}))
    os.utime(path, ns=(1, 1))  # a refresh within the same clock tick still differs in size and mtime
    assert "REVOKED" in check(0xABC)
    path.write_text("{ half written")
    os.utime(path, ns=(2, 2))
    assert "REVOKED" in check(0xABC), "a broken refresh keeps the last good list"


def test_real_status_list_snapshot_loads(tmp_path):
    path = tmp_path / "status.json"
    path.write_bytes(read("android-key-chains/google-android-key-attestation/status.json"))
    RefreshingRevocationList(path)


def test_device_policy_from_config():
    policy = device_policy(replace(Config(), device_min_trust_level="hardware", device_min_os_version="15"))
    assert policy.min_trust_level.value == "hardware" and policy.min_os_version == "15"
    with pytest.raises(ValueError, match="device_min_trust_level"):
        device_policy(replace(Config(), device_min_trust_level="strong"))
