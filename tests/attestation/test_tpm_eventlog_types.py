"""Event types are covered by no digest: a log may relabel any record, and software may extend
PCR 7 after boot. Separators and Secure Boot policy variables are recognised by content, so
relabelling (the go-attestation event log disclosure) neither hides the firmware's policy nor
makes an appended one count. Logs are the simulated boot's, relabelled after the TPM measured."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace

import pytest

from attestation.errors import AttestationError, RequirementFailed
from attestation.format import key_authorization_binding
from attestation.formats import tpm
from attestation.tpm.constants import Alg
from attestation.tpm.eventlog import (
    EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE, Event, EventType, _is_separator, parse_event_log, uefi_variable,
)
from attestation.tpm.quote import QuoteBundle, boot_posture
from tests.fleet import tpm as tpm_fleet, tpm_quote as fleet
from tests.fleet.tpm_quote import EV_EFI_ACTION, EV_EFI_VARIABLE_AUTHORITY, Measurement, secure_boot_variable

SHA1, SHA256 = Alg.SHA1, Alg.SHA256
SEPARATOR_7 = Measurement(7, EventType.SEPARATOR, bytes(4))
SPOOF = (secure_boot_variable(b"\x01"), SEPARATOR_7)  # what software extends into PCR 7 after boot


def relabel(raw: bytes, changes: dict[int, tuple[int, bytes | None]]) -> bytes:
    """The crypto-agile log with event number -> (new type, new data or None to keep it)."""
    out = raw[: 32 + struct.unpack_from("<I", raw, 28)[0]]  # the Spec ID header, as is
    for e in parse_event_log(raw).events:
        kind, data = changes.get(e.number, (e.type, None))
        data = e.data if data is None else data
        out += struct.pack("<III", e.pcr, kind, len(e.digests)) + b"".join(struct.pack("<H", b) + d for b, d in e.digests.items())
        out += struct.pack("<I", len(data)) + data
    return out


def first_on_pcr7(raw: bytes, name: str | None) -> int:
    """The number of the first PCR 7 record naming variable `name` (None: the first separator)."""
    for e in parse_event_log(raw).events:
        if e.pcr == 7 and name is None and e.type == EventType.SEPARATOR:
            return e.number
        if e.pcr == 7 and name is not None and e.type == EventType.EFI_VARIABLE_DRIVER_CONFIG and uefi_variable(e)[1] == name:
            return e.number
    raise LookupError(name)


def facts_of(sample: fleet.Sample, relabelled: dict[str | None, tuple[int, bytes | None]]):
    changes = {first_on_pcr7(sample.event_log, name): change for name, change in relabelled.items()}
    bundle = QuoteBundle(sample.quote, sample.signature, sample.pcrs, relabel(sample.event_log, changes))
    return boot_posture(sample.ak_public, bundle, fleet.NONCE).facts


def variable(guid, name: str, value: bytes, kind: int = EventType.EFI_VARIABLE_DRIVER_CONFIG, pcr: int = 7) -> Measurement:
    return Measurement(pcr, kind, fleet.uefi_variable(guid, name, value))


ACTION = (EV_EFI_ACTION, None)
OFF = dict(secure_boot=b"\x00")
REFUSED = [
    ("reviewer-repro-secure-boot-and-separator-relabelled", dict(**OFF, after_boot=SPOOF), {"SecureBoot": ACTION, None: ACTION},
     "tpm-eventlog-separator", "PCR 7 has 2 separators"),
    ("firmware-separator-relabelled-one-appended", dict(**OFF, after_boot=SPOOF), {None: ACTION},
     "tpm-eventlog-separator", "PCR 7 has 2 separators"),
    ("second-separator-appended", dict(after_boot=(SEPARATOR_7,)), {}, "tpm-eventlog-separator", "PCR 7 has 2 separators"),
    ("ev-separator-other-digest-pcr7", dict(after_boot=(Measurement(7, EventType.SEPARATOR, b"\x01\x00\x00\x00"),)), {},
     "tpm-eventlog-separator", "neither H(00000000) nor H(ffffffff)"),
    ("ev-separator-other-digest-pcr4", dict(after_boot=(Measurement(4, EventType.SEPARATOR, b"WBCL"),)), {},
     "tpm-eventlog-separator", "event 22 (PCR 4, EV_SEPARATOR)"),
    ("secure-boot-relabelled-action", dict(OFF), {"SecureBoot": ACTION}, "tpm-eventlog-secure-boot-policy", "SecureBoot variable under a type"),
    ("secure-boot-relabelled-authority", dict(OFF), {"SecureBoot": (EV_EFI_VARIABLE_AUTHORITY, None)},
     "tpm-eventlog-secure-boot-policy", "SecureBoot variable under a type"),
    ("db-relabelled", dict(), {"db": ACTION}, "tpm-eventlog-secure-boot-policy", "db variable under a type"),
    ("secure-boot-relabelled-and-data-hidden", dict(OFF), {"SecureBoot": (EV_EFI_ACTION, b"nothing to see")},
     "tpm-eventlog-event-data", "event 3 (PCR 7, type 0x80000007)"),
    ("secure-boot-after-separator-relabelled", dict(**OFF, after_boot=(variable(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01", EV_EFI_ACTION),)),
     {}, "tpm-eventlog-secure-boot-policy", "SecureBoot variable under a type"),
    ("pk-after-separator", dict(after_boot=(variable(EFI_GLOBAL_VARIABLE, "PK", b"attacker PK"),)), {},
     "tpm-eventlog-secure-boot-policy", "PK variable after PCR 7's separator"),
]


@pytest.mark.parametrize("name,knobs,relabelled,check,detail", REFUSED, ids=[row[0] for row in REFUSED])
def test_relabelled_or_appended_policy_is_refused(name, knobs, relabelled, check, detail):
    with pytest.raises(RequirementFailed) as caught:
        facts_of(fleet.mutate(**knobs), relabelled)
    assert caught.value.check == check and detail in str(caught.value), str(caught.value)


DB_AUTHORITY = variable(EFI_IMAGE_SECURITY_DATABASE, "db", b"option ROM signer", EV_EFI_VARIABLE_AUTHORITY)
ACCEPTED = [
    ("firmware-separator-relabelled", dict(), {None: ACTION}, "enabled", "PK,KEK,db,dbx"),
    ("firmware-separator-relabelled-secure-boot-off", dict(OFF), {None: ACTION}, "disabled", "PK,KEK,db,dbx"),
    ("db-authority-before-separator", dict(before_separators=(DB_AUTHORITY,)), {}, "enabled", "PK,KEK,db,dbx"),
    ("db-config-relabelled-authority", dict(), {"db": (EV_EFI_VARIABLE_AUTHORITY, None)}, "enabled", "PK,KEK,db,dbx"),
    ("db-authority-after-separator", dict(after_boot=(DB_AUTHORITY,)), {}, "enabled", "PK,KEK,db,dbx"),
]


@pytest.mark.parametrize("name,knobs,relabelled,secure_boot,variables", ACCEPTED, ids=[row[0] for row in ACCEPTED])
def test_facts_by_content_whatever_the_type(name, knobs, relabelled, secure_boot, variables):
    facts = facts_of(fleet.mutate(**knobs), relabelled)
    assert facts.secure_boot == secure_boot
    assert dict(facts.extra)["secure_boot_variables"] == variables
    assert dict(facts.extra)["boot_separators"] == "0,1,2,3,4,5,6,7"


def _event(kind: int, sha1: bytes, sha256: bytes) -> Event:
    return Event(1, 7, kind, {SHA1: hashlib.sha1(sha1).digest(), SHA256: hashlib.sha256(sha256).digest()}, b"")


@pytest.mark.parametrize("event,expected", [
    (_event(EventType.SEPARATOR, bytes(4), bytes(4)), True),
    (_event(EventType.SEPARATOR, b"\xff" * 4, b"\xff" * 4), True),  # the error separator
    (_event(EV_EFI_ACTION, bytes(4), bytes(4)), True),  # relabelled
    (_event(EV_EFI_ACTION, b"\x01\x00\x00\x00", b"\x01\x00\x00\x00"), False),
    (_event(EventType.SEPARATOR, bytes(4), b"\x01\x00\x00\x00"), "in some banks only"),
    (_event(EV_EFI_ACTION, bytes(4), b"\xff" * 4), "in some banks only"),
], ids=["zero", "error", "relabelled", "other", "one-bank-only", "values-differ"])
def test_separator_by_digest_in_every_bank(event, expected):
    if isinstance(expected, bool):
        assert _is_separator(event, (SHA1, SHA256)) is expected
        return
    with pytest.raises(RequirementFailed) as caught:
        _is_separator(event, (SHA1, SHA256))
    assert caught.value.check == "tpm-eventlog-separator" and expected in str(caught.value)


@pytest.mark.parametrize("relabelled", [False, True], ids=["as-measured", "relabelled"])
def test_reviewer_end_to_end_spoof_is_refused(relabelled):
    """sb_spoof_e2e: the fleet's AK signs a genuine quote of a SecureBoot=0 boot that software
    extended with SecureBoot=1 and a separator; no log, relabelled or not, yields `enabled`."""
    keyauth = b"token.thumbprint"
    sample = tpm_fleet.make(replace(tpm_fleet.Knobs(), alg=-257), key_authorization_binding("token", keyauth))
    knobs = replace(fleet.Knobs(), secure_boot=b"\x00", extra_data=hashlib.sha256(keyauth).digest())
    measured = fleet.boot(b"\x00") + list(SPOOF)
    pcrs = {bank: fleet._pcr_bank(knobs, bank, measured) for bank in (SHA1, SHA256)}
    message = fleet.quote(knobs, pcrs)
    log = fleet.event_log(knobs, measured)
    if relabelled:
        log = relabel(log, {first_on_pcr7(log, "SecureBoot"): ACTION, first_on_pcr7(log, None): ACTION})
    stmt = {**sample.att_stmt, "quote": message, "pcrs": pcrs, "eventLog": log,
            "quoteSig": fleet.sign(knobs, tpm_fleet.private_key("rsa", slot=2), message)}
    with pytest.raises(AttestationError) as caught:
        tpm.verify(stmt, sample.ctx)
    assert caught.value.check == "tpm-eventlog-separator"
