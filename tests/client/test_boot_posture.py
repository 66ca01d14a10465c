"""Boot posture end to end: the test plays the firmware of a measured boot on a real software TPM
(swtpm), extending its SHA-256 PCRs with the synthetic UEFI boot of tests/fleet/tpm_quote.py
and writing that boot's event log; `acmeda device enroll --event-log FILE` then quotes the PCRs
with its AK and a real `acmeda serve` replays the log against the quote. The device certificate
must carry the Secure Boot state the PCRs hold, and a log that lies about it must be refused in
the server's own words."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

import cbor2
import pytest
from tpm2_pytss import ESAPI, TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG

from attestation import decode_attestation_object
from attestation.tpm.constants import Alg
from attestation.tpm.quote import QuoteBundle, boot_posture, verify_quote
from attestation.tpm.structs import TpmtPublic
from ca.posture import posture_from_certificate
from client.cli import main
from client.quote import QUOTED_PCRS, BootEvidence, boot_evidence, kernel_event_log_path, load_event_log, quoted_bank
from client.state import StateDir
from client.tpm import Tpm, TpmError
from tests.fleet import tpm_quote

ENABLED, DISABLED = b"\x01", b"\x00"
NONCE = hashlib.sha256(b"token.thumbprint").digest()
LOGGED_PCRS = "0,1,2,3,4,5,6,7,8,9"  # what the synthetic boot extends


def _knobs(secure_boot: bytes, **lies) -> tpm_quote.Knobs:
    # swtpm is manufactured with only the SHA-256 bank active: a SHA-256-only crypto-agile log.
    return replace(tpm_quote.Knobs(), log_banks=(Alg.SHA256,), secure_boot=secure_boot, **lies)


def play_firmware(tcti: str, measured: bytes, logged: tpm_quote.Knobs | None = None) -> bytes:
    """Measure a UEFI boot with SecureBoot = `measured` into the TPM's PCRs, as firmware does (the
    digest of each measurement, extended in order), and return the log: that boot's, or the one
    `logged` describes (a lying log)."""
    knobs = _knobs(measured)
    measurements = tpm_quote.boot(knobs.secure_boot)
    with ESAPI(tcti) as esapi:
        for m in measurements:
            digest = hashlib.sha256(m.measured if m.measured is not None else m.data).digest()
            values = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))])
            esapi.pcr_extend(ESYS_TR.PCR0 + m.pcr, values)
    logged = logged or knobs
    return tpm_quote.event_log(logged, tpm_quote.boot(logged.secure_boot))


def _args(ca, swtpm, state, *extra: str) -> list[str]:
    return ["enroll", "--ca", ca.directory, "--tcti", swtpm.tcti, "--state-dir", str(state),
            "--ca-bundle", str(ca.tls_root), *extra]


def _facts(state) -> tuple[str | None, dict[str, str]]:
    posture = posture_from_certificate(StateDir(state).device().certificate).posture
    return posture.secure_boot, dict(posture.extra)


def test_the_swtpm_holds_what_the_generator_predicts(swtpm, tmp_path):
    """The harness itself: swtpm starts PCR 0 at zero (TPM2_Startup at locality 0, no
    StartupLocality event), so the generator's PCRs are the TPM's, PCR by PCR."""
    play_firmware(swtpm.tcti, ENABLED)
    knobs = _knobs(ENABLED)
    expected = tpm_quote._pcr_bank(knobs, Alg.SHA256, tpm_quote.boot(ENABLED))
    with Tpm(swtpm.tcti) as tpm:
        held = tpm.pcr_values(Alg.SHA256, range(24))
    assert held == expected


@pytest.mark.parametrize("measured, ak_type, state, sig_alg", [
    (ENABLED, "ecc", "enabled", "ecdsa-sha256"),
    (DISABLED, "rsa", "disabled", "rsassa-sha256"),
])
def test_enrollment_with_the_event_log_proves_the_secure_boot_state(tpm_ca, swtpm, tmp_path, capsys, record_property,
                                                                   measured, ak_type, state, sig_alg):
    log = tmp_path / "binary_bios_measurements"
    log.write_bytes(play_firmware(swtpm.tcti, measured))
    home = tmp_path / "state"
    started = time.perf_counter()
    assert main(_args(tpm_ca, swtpm, home, "--event-log", str(log), "--ak-type", ak_type)) == 0, capsys.readouterr().err
    record_property("enroll_with_quote_seconds", round(time.perf_counter() - started, 3))
    assert "with boot posture (PCR quote and the event log from --event-log)" in capsys.readouterr().out
    secure_boot, facts = _facts(home)
    assert secure_boot == state
    assert facts["tpm_quote_sig_alg"] == sig_alg
    assert facts["boot_pcrs"] == LOGGED_PCRS and facts["boot_log_banks"] == "sha256"
    assert facts["boot_separators"] == "0,1,2,3,4,5,6,7" and facts["secure_boot_variables"] == "PK,KEK,db,dbx"
    assert facts["tpm_model"] and facts["tpm_sig_alg"]  # the TPM's own facts are still there

    # Renewal quotes again, for the new challenge: the renewed certificate carries the posture too.
    assert main(["renew", "--force", *_args(tpm_ca, swtpm, home, "--event-log", str(log))[1:]]) == 0
    assert _facts(home)[0] == state


@pytest.mark.parametrize("logged, detail", [
    (_knobs(DISABLED, logged_secure_boot=ENABLED),
     "event 3 (PCR 7, EV_EFI_VARIABLE_DRIVER_CONFIG): the event data does not hash to its 0x000b (SHA256) digest"),
    (_knobs(ENABLED),
     "the event log replays PCR 7 of bank 0x000b (SHA256) to "),
], ids=["SecureBoot shown as 1, digest of the measured 0 kept", "the log of a Secure Boot enabled boot"])
def test_a_log_that_lies_about_the_boot_is_refused(tpm_ca, swtpm, tmp_path, capsys, logged, detail):
    """The PCRs hold a Secure Boot disabled boot; the log claims it was enabled."""
    log = tmp_path / "binary_bios_measurements"
    log.write_bytes(play_firmware(swtpm.tcti, DISABLED, logged=logged))
    assert main(_args(tpm_ca, swtpm, tmp_path / "state", "--event-log", str(log))) == 1
    err = capsys.readouterr().err
    assert "enroll failed: urn:ietf:params:acme:error:badAttestationStatement: " in err
    assert detail in err and "Traceback" not in err
    assert StateDir(tmp_path / "state").device() is None


@pytest.mark.parametrize("flags, note", [
    (["--no-quote"], None),
    ([], "no boot posture: the TCTI 'swtpm:host=127.0.0.1,port="),  # no kernel log for a simulator
], ids=["--no-quote", "no event log"])
def test_enrollment_without_a_quote_proves_no_boot_state(tpm_ca, swtpm, tmp_path, capsys, flags, note):
    play_firmware(swtpm.tcti, ENABLED)  # the boot was good, but nothing proves it
    home = tmp_path / "state"
    assert main(_args(tpm_ca, swtpm, home, *flags)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "with boot posture" not in out and (note is None or note in out)
    secure_boot, facts = _facts(home)
    assert secure_boot is None
    assert not {name for name in facts if name.startswith(("boot_", "tpm_quote", "secure_boot"))}


# --- the quote on the TPM, checked by the server's verifier --------------------------------


@pytest.mark.parametrize("ak_type", ["ecc", "rsa"])
def test_boot_evidence_verifies_with_the_servers_verifier(swtpm, ak_type, record_property):
    log = play_firmware(swtpm.tcti, ENABLED)
    with Tpm(swtpm.tcti) as tpm:
        ak = tpm.create_ak(ak_type)
        tpm.load(ak)
        started = time.perf_counter()
        evidence = boot_evidence(tpm, ak, NONCE, log)
        record_property("boot_evidence_seconds", round(time.perf_counter() - started, 4))
    assert evidence.attempts == 1 and set(evidence.pcrs) == {Alg.SHA256}
    assert sorted(evidence.pcrs[Alg.SHA256]) == list(QUOTED_PCRS)
    bundle = QuoteBundle.from_att_stmt(evidence.statement_members())
    posture = boot_posture(TpmtPublic.parse(ak.public_area), bundle, NONCE)  # the AK's TPMT_PUBLIC: its scheme too
    assert posture.facts.secure_boot == "enabled"


def test_a_pcr_extended_between_read_and_quote_is_read_again(swtpm):
    """IMA extends PCR 10 at any time: a read that the quote no longer matches is done again."""
    with Tpm(swtpm.tcti) as tpm, ESAPI(swtpm.tcti) as ima:
        ak = tpm.create_ak()
        read = tpm.pcr_values
        calls = []

        def read_then_extend(bank, indices):
            values = read(bank, indices)
            calls.append(values)
            if len(calls) == 1:  # after the first read, before the quote
                ima.pcr_extend(ESYS_TR.PCR10, TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256,
                                                                          digest=TPMU_HA(sha256=bytes(32)))]))
            return values

        tpm.pcr_values = read_then_extend
        evidence = boot_evidence(tpm, ak, NONCE, b"log")
        assert evidence.attempts == 2 and calls[0][10] != calls[1][10]
        verify_quote(TpmtPublic.parse(ak.public_area), evidence.quote, evidence.signature, evidence.pcrs, NONCE)

        def always_extend(bank, indices):
            values = read(bank, indices)
            ima.pcr_extend(ESYS_TR.PCR10, TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=bytes(32)))]))
            return values

        tpm.pcr_values = always_extend
        with pytest.raises(TpmError, match=r"kept changing between TPM2_PCR_Read and TPM2_Quote \(3 attempts\)"):
            boot_evidence(tpm, ak, NONCE, b"log", attempts=3)


def test_pcr_read_returns_every_pcr_beyond_eight_per_call(swtpm):
    with Tpm(swtpm.tcti) as tpm:
        values = tpm.pcr_values(Alg.SHA256, range(24))
        assert sorted(values) == list(range(24)) and all(len(v) == 32 for v in values.values())
        assert values[17] == b"\xff" * 32 and values[0] == bytes(32)
        with pytest.raises(TpmError, match="is the bank allocated"):
            tpm.pcr_values(Alg.SHA1, range(8))  # swtpm here allocates only SHA-256


class _Banks:
    def __init__(self, allocated):
        self.allocated = allocated

    def allocated_pcrs(self):
        return self.allocated


@pytest.mark.parametrize("allocated, bank", [
    ({Alg.SHA1: frozenset(range(24)), Alg.SHA256: frozenset(range(24))}, Alg.SHA256),
    ({Alg.SHA1: frozenset(range(24)), Alg.SHA256: frozenset()}, Alg.SHA1),  # older firmware TPMs
    ({Alg.SHA1: frozenset(), Alg.SHA384: frozenset(range(24))}, None),
], ids=["SHA-256 first", "SHA-1 when SHA-256 is not allocated", "neither"])
def test_the_quoted_bank(allocated, bank):
    if bank is None:
        with pytest.raises(TpmError, match="neither the SHA-256 nor the SHA-1 bank"):
            quoted_bank(_Banks(allocated))
    else:
        assert quoted_bank(_Banks(allocated)) == bank


# --- where the log comes from ---------------------------------------------------------------


@pytest.mark.parametrize("tcti, path", [
    ("device:/dev/tpmrm0", "/sys/kernel/security/tpm0/binary_bios_measurements"),
    ("device:/dev/tpm1", "/sys/kernel/security/tpm1/binary_bios_measurements"),
    ("device", "/sys/kernel/security/tpm0/binary_bios_measurements"),
    ("swtpm:host=127.0.0.1,port=2321", None),
    ("mssim:host=localhost", None),
    ("device:/tmp/fake", None),
])
def test_only_a_kernel_tpm_has_the_kernels_event_log(tcti, path):
    assert kernel_event_log_path(tcti) == (None if path is None else Path(path))


def test_an_unreadable_kernel_log_means_no_quote_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr("client.quote.KERNEL_EVENT_LOG", str(tmp_path / "tpm{}" / "binary_bios_measurements"))
    log, note = load_event_log(None, "device:/dev/tpmrm0")
    assert log is None and "cannot read the event log" in note and "run as root or pass --event-log" in note
    (tmp_path / "tpm0").mkdir()
    (tmp_path / "tpm0" / "binary_bios_measurements").write_bytes(b"firmware log")
    log, note = load_event_log(None, "device:/dev/tpmrm0")
    assert log.data == b"firmware log" and log.source.endswith("tpm0/binary_bios_measurements") and not note


def test_event_log_usage_errors(tmp_path, capsys):
    common = ["enroll", "--ca", "https://127.0.0.1:1/directory", "--state-dir", str(tmp_path / "s")]
    assert main([*common, "--event-log", str(tmp_path / "absent")]) == 2
    assert "--event-log" in capsys.readouterr().err
    (tmp_path / "empty").write_bytes(b"")
    assert main([*common, "--event-log", str(tmp_path / "empty")]) == 2
    assert "the file is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main([*common, "--no-quote", "--event-log", str(tmp_path / "empty")])
    assert usage.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_ca_decodes_the_statement_members_the_client_sends():
    """`pcrs` has integer keys ({uint => {uint => bstr}}, docs/tpm-boot-posture.md): the CA's strict
    attestation-object decoder must take them, or no quote ever reaches the verifier."""
    members = BootEvidence(b"quote", b"signature", {Alg.SHA256: {0: bytes(32), 7: b"\x07" * 32}}, b"log").statement_members()
    decoded = decode_attestation_object(cbor2.dumps({"fmt": "tpm", "attStmt": {"ver": "2.0", **members}}))
    assert decoded.att_stmt["pcrs"] == {Alg.SHA256: {0: bytes(32), 7: b"\x07" * 32}}
    assert QuoteBundle.from_att_stmt(decoded.att_stmt).event_log == b"log"


def test_a_log_too_large_for_the_ca_says_what_to_do(tpm_ca, swtpm, tmp_path, capsys):
    """acmeda bounds a request body (256 KiB); the attestation object travels base64url twice."""
    log = tmp_path / "huge"
    log.write_bytes(bytes(1 << 20))
    assert main(_args(tpm_ca, swtpm, tmp_path / "state", "--event-log", str(log))) == 1
    err = capsys.readouterr().err
    assert "request body is too large" in err and "1048576-byte event log: enroll with --no-quote" in err
