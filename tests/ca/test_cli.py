"""`acmeda` as an operator meets it: zero-config first start, the banner, file modes, reuse on
restart, the key passphrase, `--help` everywhere, and configuration precedence."""

from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from ca import config as config_mod
from ca.cli import _parser
from ca.keys import KeyType
from tests.interop.conftest import free_port, stop_ca, start_ca

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ca.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, **(env or {})})


def test_zero_config_first_start_then_reuse(tmp_path):
    ca = start_ca(tmp_path, http01_port=free_port(), dns_port=53)
    try:
        stdout = [line for line in ca.output().splitlines() if line.startswith("acmeda:")]
        assert stdout[0].startswith("acmeda: ACME directory https://127.0.0.1:")
        assert stdout[1] == f"acmeda: root certificate {ca.data_dir / 'ca' / 'root.pem'}"
        fingerprint = re.search(r"fingerprint ([0-9a-f]{64})", stdout[2]).group(1)
    finally:
        stop_ca(ca)
    for key in [*(ca.data_dir / "ca").glob("*.key"), *(ca.data_dir / "tls").glob("*.key")]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE((ca.data_dir / "acmeda.db").stat().st_mode) == 0o600, "the database holds the nonce and EAB keys"
    again = start_ca(tmp_path, http01_port=free_port(), dns_port=53)
    try:
        assert f"fingerprint {fingerprint}" in again.output(), "a restart must reuse the CA"
    finally:
        stop_ca(again)


def test_passphrase_encrypts_keys_and_is_required_to_start(tmp_path):
    data = tmp_path / "data"
    env = {"ACMEDA_KEY_PASSPHRASE": "correct horse"}
    assert _cli("db", "upgrade", "--data-dir", str(data)).returncode == 0
    created = _cli("eab", "create", "--data-dir", str(data), env=env)
    assert created.returncode == 0, created.stderr
    assert b"ENCRYPTED" in (data / "ca" / "intermediate.key").read_bytes()
    refused = _cli("eab", "create", "--data-dir", str(data), env={"ACMEDA_KEY_PASSPHRASE": "wrong"})
    assert refused.returncode == 1 and "intermediate.key" in refused.stderr


@pytest.mark.parametrize("args", [[], ["serve"], ["eab"], ["eab", "create"], ["db", "upgrade"]])
def test_help(args):
    result = _cli(*args, "--help")
    assert result.returncode == 0 and "usage: acmeda" in result.stdout


def test_bad_setting_is_a_configuration_error():
    result = _cli("serve", "--server-cert-lifetime", "7 weeks")
    assert result.returncode == 2 and "--server-cert-lifetime" in result.stderr


@pytest.mark.parametrize("args, named", [
    (["--attestation-formats", "apple,bogus"], "attestation_formats: unknown bogus"),
    (["--tpm-ek-roots-only", "true"], "tpm_ek_roots_only needs tpm_ek_roots"),
    (["--device-min-trust-level", "chip"], "device_min_trust_level: 'chip'"),
], ids=["unknown format", "no EK roots at all", "unknown trust level"])
def test_setting_that_cannot_work_is_one_line_not_a_traceback(tmp_path, args, named):
    result = _cli("serve", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", *args)
    assert result.returncode == 1 and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["serve", *argv])


def test_precedence_flags_then_environment_then_file_then_default(tmp_path):
    toml = tmp_path / "acmeda.toml"
    toml.write_text('listen = "127.0.0.1:1111"\nkey-type = "rsa-2048"\ndevice_cert_lifetime = "12h"\nhttp01_port = 8080\n')
    env = {"ACMEDA_CONFIG": str(toml), "ACMEDA_LISTEN": "127.0.0.1:2222", "ACMEDA_HTTP01_PORT": "8081"}
    config = config_mod.load(_args("--listen", "127.0.0.1:3333"), environ=env)
    assert config.listen == "127.0.0.1:3333"  # flag beats environment and file
    assert config.http01_port == 8081  # environment beats file
    assert config.key_type is KeyType.RSA_2048 and config.device_cert_lifetime == timedelta(hours=12)  # file
    assert config.server_cert_lifetime == timedelta(days=7)  # default


def test_unknown_file_setting_is_refused(tmp_path):
    toml = tmp_path / "acmeda.toml"
    toml.write_text("lisen = 'typo'\n")
    with pytest.raises(ValueError, match="lisen"):
        config_mod.load(_args("--config", str(toml)), environ={})


def test_first_use_forget_releases_an_instance_to_the_next_account(tmp_path):
    import asyncio

    from attestation.evidence import Evidence, TrustLevel
    from ca.clock import SystemClock
    from ca.identifiers import Identifier, IdentifierType
    from ca.storage.repository import Store
    from enroll.first_use import FirstUseRegistry

    data = tmp_path / "data"
    assert _cli("db", "upgrade", "--data-dir", str(data)).returncode == 0
    instance = Identifier(IdentifierType.PERMANENT_IDENTIFIER, "i-0abc/2.25.1")
    evidence = Evidence(fmt="aws-iid", public_key=None, trust_level=TrustLevel.CLOUD, replayable=True)

    async def admit(thumbprint: str) -> bool:
        store = await Store.open(f"sqlite:///{data / 'acmeda.db'}")
        try:
            return await FirstUseRegistry(store, SystemClock()).admit(instance, evidence, thumbprint)
        finally:
            await store.close()

    assert asyncio.run(admit("first-account")) and not asyncio.run(admit("second-account"))
    released = _cli("first-use", "forget", instance.value, "--data-dir", str(data))
    assert released.returncode == 0 and "released" in released.stdout, released.stderr
    assert asyncio.run(admit("second-account")), "after forget the next account owns the instance"
    again = _cli("first-use", "forget", "i-unknown", "--data-dir", str(data))
    assert again.returncode == 1 and "has no owning account" in again.stderr


def test_an_alias_registered_twice_is_one_line_not_a_traceback(tmp_path):
    data = str(tmp_path / "data")
    added = _cli("alias", "add", "enroll-7", "--attested", "SERIAL-A", "--data-dir", data)
    assert added.returncode == 0, added.stderr
    again = _cli("alias", "add", "enroll-7", "--attested", "SERIAL-B", "--data-dir", data)
    assert again.returncode == 1 and "alias enroll-7 is registered already for SERIAL-A" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr


def test_a_database_that_cannot_be_reached_is_one_line_naming_it_without_its_password(tmp_path):
    port = free_port()  # nothing listens there
    for args in (["db", "upgrade"], ["eab", "create"]):
        result = _cli(*args, "--data-dir", str(tmp_path), "--database-url", f"postgresql://acmeda:s3cret@127.0.0.1:{port}/ca")
        assert result.returncode == 1, result.stderr
        assert f"cannot reach the database postgresql://acmeda:***@127.0.0.1:{port}/ca: Connection refused" in result.stderr
        assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


def test_a_missing_postgresql_database_is_named(postgres_url):
    missing = postgres_url.rsplit("/", 1)[0] + "/acmeda_no_such_database"
    result = _cli("db", "upgrade", "--database-url", missing)
    assert result.returncode == 1 and f'{missing}: database "acmeda_no_such_database" does not exist' in result.stderr, \
        result.stderr


def test_a_file_that_is_not_a_database_is_one_line_naming_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "acmeda.db").write_bytes(b"not an SQLite database, whatever its name says")
    result = _cli("eab", "create", "--data-dir", str(data))
    assert result.returncode == 1
    assert f"cannot open the database {data / 'acmeda.db'}: file is not a database" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_data_directory_that_cannot_be_made_is_one_line_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _cli("serve", "--data-dir", str(blocker / "data"), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert f"cannot create the data directory {blocker / 'data'}: Not a directory" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_made_by_db_upgrade_is_private_too(tmp_path):
    """`acmeda db upgrade` on a new data directory creates the database itself: 0600, as `serve` does."""
    data = tmp_path / "data"
    assert _cli("db", "upgrade", "--data-dir", str(data)).returncode == 0
    assert stat.S_IMODE((data / "acmeda.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("setting, value, words", [
    ("data_dir", "5", "data_dir"),  # a number where a path belongs: TypeError inside, one line outside
    ("workers", "1.5", "invalid whole number 1.5"),
    ("workers", "true", "invalid whole number True"),
    ("validation_timeout", '"0s"', "must be longer than zero"),
    ("server_cert_lifetime", "[1]", "invalid duration [1]"),
])
def test_a_file_setting_of_the_wrong_type_or_value_is_refused_by_name(tmp_path, setting, value, words):
    toml = tmp_path / "acmeda.toml"
    toml.write_text(f"{setting} = {value}\n")
    with pytest.raises(ValueError, match=re.escape(words)) as caught:
        config_mod.load(_args("--config", str(toml)), environ={})
    assert f"{toml}: {setting}" in str(caught.value)
