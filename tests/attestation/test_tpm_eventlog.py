"""TCG event logs: the two real logs replayed against their quotes and the boot facts they
prove, one row per rejection reason through the simulated boot, the fact rules, and fuzzing."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.errors import AttestationError, MalformedStatement, RequirementFailed
from attestation.evidence import Posture
from attestation.tpm.constants import Alg
from attestation.tpm.eventlog import (
    EFI_GLOBAL_VARIABLE, BootFacts, EventType, boot_facts, parse_event_log, replay, uefi_variable,
)
from attestation.tpm.quote import QuoteBundle, boot_posture
from tests.fleet import tpm_quote as fleet
from tests.fleet.tpm_quote import Measurement, secure_boot_variable

SHA1, SHA256, SHA384 = Alg.SHA1, Alg.SHA256, Alg.SHA384
FIRMWARE_FACTS = {"boot_separators": "0,1,2,3,4,5,6,7", "secure_boot_variables": "PK,KEK,db,dbx"}


def facts_of(sample: fleet.Sample, nonce: bytes = fleet.NONCE) -> BootFacts:
    return boot_posture(sample.ak_public, sample.bundle, nonce).facts


def secure_boot_events(log):
    return [e for e in log.events if e.type == EventType.EFI_VARIABLE_DRIVER_CONFIG and uefi_variable(e)[:2] == (EFI_GLOBAL_VARIABLE, "SecureBoot")]


# --- real logs -------------------------------------------------------------------------------


def test_real_windows_gcp_sha1_log_replays_and_shows_secure_boot_on():
    real = fleet.windows_gcp()
    log = parse_event_log(real.event_log)
    assert not log.crypto_agile and log.digest_sizes == {SHA1: 20} and len(log.events) == 21
    (secure_boot,) = secure_boot_events(log)
    assert uefi_variable(secure_boot)[2] == b"\x01"  # the firmware measured SecureBoot = 1
    (quote, signature), = real.quotes
    facts = boot_posture(real.ak_public, QuoteBundle(quote, signature, real.pcrs, real.event_log), b"").facts
    assert facts.secure_boot == "enabled"
    assert dict(facts.extra) == {
        "boot_applications": "1", "boot_log_banks": "sha1", "boot_pcrs": "0,4,5,7,11,12,13,14",
        "boot_separators": "7,12,13,14", "secure_boot_variables": "PK,KEK,db,dbx", "tpm_quote_sig_alg": "rsassa-sha1",
    }


@pytest.mark.parametrize("quote_index,bank", [(0, "sha1"), (1, "sha256"), (2, "sha384")])
def test_real_gce_cos_log_replays_in_every_bank_and_shows_secure_boot_on(quote_index, bank):
    real = fleet.gce_cos()
    log = parse_event_log(real.event_log)
    assert log.crypto_agile and log.digest_sizes == {SHA1: 20, SHA256: 32, SHA384: 48}
    assert len(log.events) == 44 and log.startup_locality == 0
    assert [uefi_variable(e)[2] for e in secure_boot_events(log)] == [b"\x01"]
    quote, signature = real.quotes[quote_index]
    facts = boot_posture(real.ak_public, QuoteBundle(quote, signature, real.pcrs, real.event_log), fleet.GCE_NONCE).facts
    assert facts.secure_boot == "enabled"
    assert dict(facts.extra) == {
        **FIRMWARE_FACTS, "boot_applications": "3", "boot_log_banks": bank, "boot_pcrs": "0,1,2,3,4,5,6,7,8,9",
        "tpm_quote_sig_alg": "rsassa-sha256",
    }


def test_real_log_against_an_altered_pcr_names_the_pcr_and_bank():
    real = fleet.gce_cos()
    pcrs = {bank: dict(values) for bank, values in real.pcrs.items()}
    pcrs[SHA256][7] = bytes(32)
    with pytest.raises(RequirementFailed) as caught:
        replay(parse_event_log(real.event_log), pcrs)
    assert caught.value.check == "tpm-eventlog-replay"
    assert "PCR 7 of bank 0x000b (SHA256)" in str(caught.value)


def test_real_log_with_an_altered_event_digest():
    real = fleet.gce_cos()
    (event,) = secure_boot_events(parse_event_log(real.event_log))
    digest = event.digests[SHA384]
    edited = real.event_log.replace(digest, bytes([digest[0] ^ 1]) + digest[1:])
    with pytest.raises(RequirementFailed) as caught:
        replay(parse_event_log(edited), real.pcrs)
    assert caught.value.check == "tpm-eventlog-replay" and "PCR 7 of bank 0x000c (SHA384)" in str(caught.value)


@pytest.mark.parametrize("vector", ["windows_gcp", "gce_cos"])
def test_real_log_lying_about_secure_boot_with_the_digest_kept(vector):
    real = getattr(fleet, vector)()
    (event,) = secure_boot_events(parse_event_log(real.event_log))
    lie = real.event_log.replace(event.data, event.data[:-1] + b"\x00")
    assert lie != real.event_log
    quote, signature = real.quotes[0]
    with pytest.raises(RequirementFailed) as caught:
        boot_posture(real.ak_public, QuoteBundle(quote, signature, real.pcrs, lie), real.nonce)
    assert caught.value.check == "tpm-eventlog-event-data" and "SecureBoot" not in str(caught.value)


@pytest.mark.parametrize("vector", ["windows_gcp", "gce_cos"])
@pytest.mark.parametrize("cut", [1, 7, 100])
def test_real_log_truncated(vector, cut):
    with pytest.raises(MalformedStatement) as caught:
        parse_event_log(getattr(fleet, vector)().event_log[:-cut])
    assert caught.value.check == "tpm-eventlog"


# --- the simulated boot: one row per rejection reason -------------------------------------------


def late_startup_locality(log: bytes) -> bytes:
    digests = struct.pack("<H", SHA1) + bytes(20) + struct.pack("<H", SHA256) + bytes(32)
    data = b"StartupLocality\x00\x03"
    return log + struct.pack("<III", 0, EventType.NO_ACTION, 2) + digests + struct.pack("<I", len(data)) + data


def first_event_count(count: int):
    offset = len(fleet.spec_id_event(fleet.Knobs())) + 8
    return lambda log: log[:offset] + struct.pack("<I", count) + log[offset + 4:]


def append_record(pcr: int, size: int):
    return lambda log: log + struct.pack("<III", pcr, 1, 2) + struct.pack("<H", SHA1) + bytes(20) + struct.pack("<H", SHA256) + bytes(32) + struct.pack("<I", size)


BAD_NAME = EFI_GLOBAL_VARIABLE.bytes_le + struct.pack("<QQ", 1, 0) + b"\x00\xd8"  # a lone surrogate
REJECTIONS = [
    ("s-crtm-digest-altered", dict(flip_digest_of=1), RequirementFailed, "tpm-eventlog-replay", "PCR 0 of bank 0x000b"),
    ("secure-boot-digest-altered", dict(flip_digest_of=3), RequirementFailed, "tpm-eventlog-replay", "PCR 7 of bank 0x000b"),
    ("event-dropped", dict(drop_event=18), RequirementFailed, "tpm-eventlog-replay", "PCR 4"),
    ("locality-event-dropped", dict(startup_locality=3, drop_event=1), RequirementFailed, "tpm-eventlog-replay", "PCR 0"),
    ("secure-boot-value-lie", dict(logged_secure_boot=b"\x01", secure_boot=b"\x00"), RequirementFailed, "tpm-eventlog-event-data", "event 3 (PCR 7"),
    ("os-appends-secure-boot-on", dict(secure_boot=b"\x00", after_boot=(secure_boot_variable(b"\x01"),)),
     RequirementFailed, "tpm-eventlog-secure-boot-policy", "after PCR 7's separator"),
    ("separator-data-lie", dict(logged_separator=b"\x01\x00\x00\x00"), RequirementFailed, "tpm-eventlog-event-data", "EV_SEPARATOR"),
    ("log-empty", dict(log_edit=lambda log: b""), MalformedStatement, "tpm-eventlog", "empty"),
    ("log-truncated", dict(log_edit=lambda log: log[:-1]), MalformedStatement, "tpm-eventlog", "truncated"),
    ("log-trailing-byte", dict(log_edit=lambda log: log + b"\x00"), MalformedStatement, "tpm-eventlog", "truncated"),
    ("header-digest-size-wrong", dict(header_size_of=(SHA256, 20)), MalformedStatement, "tpm-eventlog", "wrong size"),
    ("header-bank-unknown-size", dict(header_size_of=(0x0099, 0)), MalformedStatement, "tpm-eventlog", "wrong size"),
    ("event-missing-a-bank", dict(log_edit=first_event_count(1)), MalformedStatement, "tpm-eventlog", "digests.count 1"),
    ("event-extra-bank", dict(log_edit=first_event_count(3)), MalformedStatement, "tpm-eventlog", "digests.count 3"),
    ("pcr-index-out-of-range", dict(log_edit=append_record(24, 0)), MalformedStatement, "tpm-eventlog", "pcrIndex 24"),
    ("event-size-beyond-the-log", dict(log_edit=append_record(1, 0xFFFFFFFF)), MalformedStatement, "tpm-eventlog", "truncated"),
    ("startup-locality-late", dict(log_edit=late_startup_locality), MalformedStatement, "tpm-eventlog", "StartupLocality"),
    ("startup-locality-invalid", dict(startup_locality=2), MalformedStatement, "tpm-eventlog", "StartupLocality 2"),
    ("secure-boot-not-uefi-variable", dict(before_separators=(Measurement(7, EventType.EFI_VARIABLE_DRIVER_CONFIG, b"\x00" * 20),)),
     MalformedStatement, "tpm-eventlog-event-data", "UEFI_VARIABLE_DATA"),
    ("variable-name-not-utf16", dict(before_separators=(Measurement(7, EventType.EFI_VARIABLE_DRIVER_CONFIG, BAD_NAME),)),
     MalformedStatement, "tpm-eventlog-event-data", "not UTF-16"),
]


@pytest.mark.parametrize("name,knobs,error,check,detail", REJECTIONS, ids=[row[0] for row in REJECTIONS])
def test_fleet_rejection(name, knobs, error, check, detail):
    with pytest.raises(error) as caught:
        facts_of(fleet.mutate(**knobs))
    assert caught.value.check == check and detail in str(caught.value), str(caught.value)


# --- the simulated boot: which facts a log proves -------------------------------------------------

DEFAULT = {**FIRMWARE_FACTS, "boot_applications": "2", "boot_log_banks": "sha256", "boot_pcrs": "0,1,2,3,4,5,6,7,8,9",
           "tpm_quote_sig_alg": "rsassa-sha256"}
FACTS = [
    ("default", dict(), "enabled", {}),
    ("secure-boot-off", dict(secure_boot=b"\x00"), "disabled", {}),
    ("conflicting-firmware-values", dict(before_separators=(secure_boot_variable(b"\x00"),)), None, {}),
    ("secure-boot-not-one-byte", dict(secure_boot=b"\x01\x00"), None, {}),
    ("startup-locality-3", dict(startup_locality=3), "enabled", {}),
    ("sha1-log", dict(crypto_agile=False, log_banks=(SHA1,), quote_banks=(SHA1,)), "enabled", {"boot_log_banks": "sha1"}),
    ("two-banks-quoted", dict(quote_banks=(SHA1, SHA256)), "enabled", {"boot_log_banks": "sha1,sha256"}),
    ("sha384-log", dict(log_banks=(SHA256, SHA384), quote_banks=(SHA384,), sig_hash=SHA384), "enabled",
     {"boot_log_banks": "sha384", "tpm_quote_sig_alg": "rsassa-sha384"}),
    ("pcr7-not-quoted", dict(select=b"\x7f\x03\x00"), None,
     {"boot_pcrs": "0,1,2,3,4,5,6,8,9", "boot_separators": "0,1,2,3,4,5,6", "secure_boot_variables": None}),
    ("pcr4-not-quoted", dict(select=b"\xef\x03\x00"), "enabled",
     {"boot_pcrs": "0,1,2,3,5,6,7,8,9", "boot_separators": "0,1,2,3,5,6,7", "boot_applications": None}),
    ("quoted-bank-not-in-log", dict(quote_banks=(SHA384,)), None,
     {k: None for k in DEFAULT if k != "tpm_quote_sig_alg"}),
    ("unlogged-os-measurement", dict(after_boot=(Measurement(10, 1, b"ima"),), drop_event=22), "enabled", {}),
]


@pytest.mark.parametrize("name,knobs,secure_boot,changes", FACTS, ids=[row[0] for row in FACTS])
def test_fleet_facts(name, knobs, secure_boot, changes):
    facts = facts_of(fleet.mutate(**knobs))
    expected = {k: v for k, v in {**DEFAULT, **changes}.items() if v is not None}
    assert facts.secure_boot == secure_boot
    assert dict(facts.extra) == expected


def test_startup_locality_3_starts_pcr0_at_3():
    sample = fleet.mutate(startup_locality=3)
    log = parse_event_log(sample.event_log)
    assert log.startup_locality == 3
    assert replay(log, sample.true_pcrs).verified[SHA256] >= {0, 7}


def test_without_an_event_log_only_the_quote_is_a_fact():
    sample = fleet.make()
    posture = boot_posture(sample.ak_public, QuoteBundle(sample.quote, sample.signature, sample.pcrs), fleet.NONCE)
    assert posture.facts == BootFacts(None, (("tpm_quote_sig_alg", "rsassa-sha256"),))
    assert posture.quote.pcrs[SHA256] == sample.true_pcrs[SHA256]


def test_facts_apply_to_a_posture():
    posture = Posture(key_protection="tpm", extra=(("tpm_model", "vTPM"), ("boot_pcrs", "stale")))
    merged = facts_of(fleet.make()).apply(posture)
    assert merged.secure_boot == "enabled" and merged.key_protection == "tpm"
    assert dict(merged.extra) == {**DEFAULT, "tpm_model": "vTPM"}
    assert [k for k, _ in merged.extra] == sorted(k for k, _ in merged.extra)


def test_a_log_no_quote_covers_proves_nothing():
    sample = fleet.make()
    log = parse_event_log(sample.event_log)
    assert boot_facts(log, replay(log, {})) == BootFacts()


# --- fuzzing -------------------------------------------------------------------------------------

FUZZ = settings(max_examples=int(os.environ.get("ACMEDA_FUZZ_EXAMPLES", 200)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = fleet.make()
WINDOWS_LOG = fleet.windows_gcp().event_log


def replay_and_derive(data: bytes) -> None:
    log = parse_event_log(data)
    boot_facts(log, replay(log, VALID.true_pcrs))


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_logs_only_attestation_errors(data):
    try:
        replay_and_derive(data)
    except AttestationError:
        pass


@FUZZ
@given(st.sampled_from([VALID.event_log, WINDOWS_LOG]), st.data())
def test_fuzz_mutated_logs_only_attestation_errors(base, data):
    offset = data.draw(st.integers(0, len(base) - 1))
    replacement = data.draw(st.binary(min_size=1, max_size=8))
    mutated = base[:offset] + replacement + base[offset + len(replacement):]
    try:
        replay_and_derive(mutated if data.draw(st.booleans()) else mutated[: data.draw(st.integers(0, len(mutated)))])
    except AttestationError:
        pass
