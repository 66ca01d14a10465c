"""What AK enrollment adds around the service: acmeda's attestation CA (ca.pki), the EK trust
and the `tpm` anchor from configuration (ca.device_setup), and the operator's `acmeda tpm`
commands."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.context import TrustStore
from attestation.tpm.ek import default_ek_trust, ek_hash
from ca import config as config_mod
from ca.app import build_app, build_services
from ca.clock import FrozenClock
from ca.config import Config
from ca.device_setup import ek_trust, with_attestation_ca
from ca.keys import KeyType
from ca.pki import CAStoreError, OID_TCG_KP_AIK_CERTIFICATE, load_or_create_attestation_ca, load_or_create_ca
from ca.storage.repository import Store
from enroll.ek_registry import EkEntry, EkRegistry, ek_hash_of_file
from tests.enroll import soft_tpm

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[2]


def _authorities(data_dir, key_type=KeyType.ECDSA_P256, passphrase=None, clock=None):
    clock = clock or FrozenClock(NOW)
    ca, _ = load_or_create_ca(data_dir, key_type=key_type, passphrase=passphrase, clock=clock)
    return ca, load_or_create_attestation_ca(data_dir, ca, passphrase=passphrase, clock=clock)


@pytest.mark.parametrize("key_type", [KeyType.ECDSA_P256, KeyType.ECDSA_P384])
def test_the_attestation_ca_is_created_next_to_the_ca_keys(tmp_path, key_type):
    ca, authority = _authorities(tmp_path, key_type)
    ak_dir = tmp_path / "ca" / "attestation"
    assert sorted(p.name for p in ak_dir.iterdir()) == ["intermediate.key", "intermediate.pem"]
    assert stat.S_IMODE(os.stat(ak_dir / "intermediate.key").st_mode) == 0o600
    certificate = authority.certificate
    certificate.verify_directly_issued_by(ca.root)
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [OID_TCG_KP_AIK_CERTIFICATE]
    assert certificate.subject.rfc4514_string() == "CN=acmeda Attestation CA"
    assert type(authority.key.public_key().curve) is type(ca.intermediate_key.public_key().curve)
    assert not any(p.name.startswith(".attestation-staging") for p in (tmp_path / "ca").iterdir())


def test_the_attestation_ca_is_reused_and_checked(tmp_path):
    _ca, first = _authorities(tmp_path)
    _ca, again = _authorities(tmp_path, clock=FrozenClock(NOW + timedelta(days=40)))
    assert again.der == first.der
    (tmp_path / "ca" / "attestation" / "intermediate.key").unlink()
    with pytest.raises(CAStoreError, match="no intermediate.key"):
        _authorities(tmp_path)


def test_a_passphrase_protects_the_attestation_ca_key(tmp_path):
    _authorities(tmp_path, passphrase=b"secret")
    assert b"ENCRYPTED" in (tmp_path / "ca" / "attestation" / "intermediate.key").read_bytes()
    assert _authorities(tmp_path, passphrase=b"secret")[1] is not None


def test_without_the_root_key_there_is_no_attestation_ca(tmp_path):
    ca, _ = load_or_create_ca(tmp_path, key_type=KeyType.ECDSA_P256, passphrase=None, clock=FrozenClock(NOW))
    (tmp_path / "ca" / "root.key").rename(tmp_path / "offline-root.key")
    assert load_or_create_attestation_ca(tmp_path, ca, passphrase=None, clock=FrozenClock(NOW)) is None


async def test_without_an_attestation_ca_the_directory_has_no_new_tpm_ak(tmp_path, aiohttp_client):
    config = Config(data_dir=tmp_path / "data", tls=False)
    load_or_create_ca(config.data_dir, key_type=KeyType.ECDSA_P256, passphrase=None, clock=FrozenClock(NOW))
    (config.data_dir / "ca" / "root.key").unlink()
    services = await build_services(config, clock=FrozenClock(NOW), environ={})
    client = await aiohttp_client(build_app(services))
    directory = await (await client.get("/directory")).json()
    assert services.tpm_enrollment is None and "newTpmAk" not in directory and "newOrder" in directory


async def test_the_attestation_ca_anchors_the_tpm_format(tmp_path):
    services = await build_services(Config(data_dir=tmp_path / "data", tls=False, attestation_roots_only=True),
                                    clock=FrozenClock(NOW), environ={})
    try:
        validator = services.validators.validator_for("device-attest-01")
        anchors = validator._trust.roots_for("tpm")
        assert anchors == (services.tpm_enrollment.chain[0],), "acmeda's own CA survives attestation_roots_only"
    finally:
        await services.store.close()
    trust = with_attestation_ca(TrustStore(roots={"tpm": (b"vendor",)}), b"acmeda")
    assert trust.roots_for("tpm") == (b"vendor", b"acmeda")


def test_ek_trust_from_configuration(tmp_path):
    folder = tmp_path / "ek-roots"
    (folder / "intermediates").mkdir(parents=True)
    maker = soft_tpm.maker("operator")
    (folder / "maker.pem").write_bytes(maker.root_pem)
    (folder / "intermediates" / "ca.pem").write_bytes(maker.intermediate.public_bytes(serialization.Encoding.PEM))
    added = ek_trust(Config(tpm_ek_roots=folder))
    assert soft_tpm.der(maker.root) in added.roots and set(default_ek_trust().roots) < set(added.roots)
    assert soft_tpm.der(maker.intermediate) in added.intermediates
    only = ek_trust(Config(tpm_ek_roots=folder, tpm_ek_roots_only=True))
    assert only.roots == (soft_tpm.der(maker.root),)
    with pytest.raises(ValueError, match="tpm_ek_roots_only needs tpm_ek_roots"):
        ek_trust(Config(tpm_ek_roots_only=True))


def test_tpm_settings_have_defaults():
    config = Config()
    assert (config.tpm_allow_pinned_ek, config.tpm_activation_lifetime, config.tpm_ak_certificate_lifetime) == (
        False, timedelta(minutes=5), timedelta(days=30))


# --- the registry and `acmeda tpm` ------------------------------------------------------------


@pytest.mark.parametrize(("entry", "match"), [
    ({"ek_hash": "ABC"}, "64 lowercase hex"),
    ({"identifier": "a/b"}, "may not contain '/'"),
    ({"identifier": "x", "assigner": "not-an-oid"}, "not a dotted-decimal"),
    ({"assigner": "1.2.3"}, "needs an identifier"),
    ({"model": "x" * 65}, "1 to 64 characters"),
])
def test_registry_entries_are_checked(entry, match):
    with pytest.raises(ValueError, match=match):
        EkEntry(**{"ek_hash": "0" * 64, **entry})


async def test_registry_updates_merge_and_keep_the_pin(tmp_path, clock):
    store = await Store.open(str(tmp_path / "db.sqlite"))
    registry = EkRegistry(store, clock)
    await registry.put(EkEntry("a" * 64, identifier="lab-1", pinned=True, manufacturer="id:4E544300"))
    await registry.put(EkEntry("a" * 64, model="NPCT75x", version="id:1"))
    row = await registry.get("a" * 64)
    assert (row.identifier, row.pinned, row.manufacturer, row.model) == ("lab-1", True, "id:4E544300", "NPCT75x")
    await store.close()


def test_ek_hash_of_the_files_an_operator_has(tmp_path):
    key = soft_tpm.private_key("rsa", 3)
    expected = ek_hash(key.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    certificate = soft_tpm.maker().ek_certificate(key.public_key())
    public = soft_tpm.ek_public("rsa", 3).to_bytes()
    for data in (certificate, x509.load_der_x509_certificate(certificate).public_bytes(serialization.Encoding.PEM),
                 key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
                 key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
                 public, len(public).to_bytes(2, "big") + public):
        assert ek_hash_of_file(data) == expected
    with pytest.raises(ValueError, match="neither an EK certificate"):
        ek_hash_of_file(b"\x30\x03garbage")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ca.cli", *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def test_acmeda_tpm_commands(tmp_path):
    public_file = tmp_path / "ek.pub"
    public = soft_tpm.ek_public("rsa", 3).to_bytes()
    public_file.write_bytes(len(public).to_bytes(2, "big") + public)
    printed = _cli("tpm", "ek-hash", str(public_file))
    assert printed.returncode == 0, printed.stderr
    ek = printed.stdout.strip()
    data = str(tmp_path / "data")
    pinned = _cli("tpm", "pin-ek", str(public_file), "--identifier", "lab-7", "--manufacturer", "id:4E544300",
                  "--model", "NPCT75x", "--version", "id:00070002", "--data-dir", data)
    assert pinned.returncode == 0 and f"EK {ek} enrolls as lab-7 (pinned)" in pinned.stdout, pinned.stderr
    registered = _cli("tpm", "register-ek", "b" * 64, "--identifier", "asset-9", "--data-dir", data)
    assert registered.returncode == 0 and "enrolls as asset-9" in registered.stdout
    refused = _cli("tpm", "register-ek", "B" * 64, "--identifier", "x", "--data-dir", data)
    assert refused.returncode == 2 and "64 lowercase hex" in refused.stderr


@pytest.mark.parametrize("args", [["tpm"], ["tpm", "pin-ek"], ["tpm", "register-ek"], ["tpm", "ek-hash"]])
def test_tpm_help(args):
    result = _cli(*args, "--help")
    assert result.returncode == 0 and "usage: acmeda tpm" in result.stdout


def test_tpm_settings_from_the_environment():
    config = config_mod.load(None, environ={"ACMEDA_TPM_ACTIVATION_LIFETIME": "90s", "ACMEDA_TPM_ALLOW_PINNED_EK": "yes",
                                            "ACMEDA_TPM_EK_ROOTS": "/etc/acmeda/ek", "ACMEDA_TPM_AK_CERTIFICATE_LIFETIME": "7d"})
    assert (config.tpm_activation_lifetime, config.tpm_allow_pinned_ek) == (timedelta(seconds=90), True)
    assert (config.tpm_ek_roots, config.tpm_ak_certificate_lifetime) == (Path("/etc/acmeda/ek"), timedelta(days=7))
