"""The TCG PC Client event log: strict parsing, replay against quoted PCRs, boot facts.

Structures are those of the *TCG PC Client Platform Firmware Profile Specification* (PFP),
Family "2.0", Level 00, Revision 1.05, §10 "Event Logging", and of the *TCG EFI Protocol
Specification* for the log formats. Integers are little-endian.

- Crypto-agile log (EFI_TCG2_EVENT_LOG_FORMAT_TCG_2): the first record is a
  TCG_PCClientPCREvent (pcrIndex 0, EV_NO_ACTION, a zero SHA-1 digest) whose data is a
  TCG_EfiSpecIDEventStruct ("Spec ID Event03") listing each bank's algorithm and digest
  size; every later record is a TCG_PCR_EVENT2 (pcrIndex, eventType, TPML_DIGEST_VALUES
  with one digest per listed bank, eventSize, event).
- SHA-1 log (EFI_TCG2_EVENT_LOG_FORMAT_TCG_1_2, what Windows exports on some platforms):
  every record is a TCG_PCClientPCREvent with a SHA-1 digest.

The log is untrusted bytes: every length is bounded by what is left, every digest size
comes from the Spec ID event, every bank of the header must appear exactly once in each
record, and anything else is `MalformedStatement` (check `tpm-eventlog`).

Replay (`replay`) starts each static PCR (0..15) of each quoted bank from zero (PCR 0 from
0..0||locality when a StartupLocality event says the TPM started at locality 3 or 4) and
extends it with each event's digest in log order (EV_NO_ACTION records are not extended).
A quoted PCR the log extends must equal the replay, else `RequirementFailed`
(`tpm-eventlog-replay`) naming the PCR and bank. PCRs 16..23 are resettable (debug, DRTM,
application) and not bound to the boot log: they are never replayed.

Facts (`boot_facts`) come only from events on a PCR whose replay matched a quoted value,
and, where they read event data (EV_EFI_VARIABLE_DRIVER_CONFIG, EV_SEPARATOR), only when
that data hashes to the event's digest in every verified bank: otherwise
`RequirementFailed` (`tpm-eventlog-event-data`), because a log could otherwise keep the
digest and lie about the value.

The event *type* is covered by no digest (replay binds the PCR index and the digest; only
EV_NO_ACTION, which replay skips, is bound by it), and software can extend PCR 7 after boot.
So where a fact depends on it, the type is not trusted (go-attestation's "event log
disclosure"): on PCRs 0..7 a separator is a record whose digest is H(UINT32 0) or
H(UINT32 0xFFFFFFFF), whatever its type, an EV_SEPARATOR with another digest is refused,
and PCR 7 has at most one (`tpm-eventlog-separator`); the Secure Boot policy variables are
recognised in PCR 7 by their UEFI_VARIABLE_DATA, whatever the type, and a record naming
one under a type firmware does not use, or after the separator, is refused
(`tpm-eventlog-secure-boot-policy`). Facts that rest on the type alone (the count of boot
applications, separators on PCRs 8..15) are labels, not proofs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from enum import IntEnum
from functools import cache
from typing import Mapping
from uuid import UUID

from attestation.errors import MalformedStatement, RequirementFailed, catch_builtins
from attestation.evidence import Posture
from attestation.tpm.constants import DIGEST_SIZE, HASHES, MAX_DIGEST, Alg, alg_name
from attestation.tpm.wire import LittleEndianReader


class EventType(IntEnum):
    """PFP §10.4.1, the event types this module reads (any other value is carried as is)."""

    NO_ACTION = 0x00000003
    SEPARATOR = 0x00000004
    EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EFI_VARIABLE_AUTHORITY = 0x800000E0


SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
STARTUP_LOCALITIES = frozenset({0, 3, 4})  # TPM2_Startup at locality 0 or 3, or an H-CRTM (4)
PCR_COUNT = 24  # PC Client TPMs implement PCR 0..23
REPLAYED_PCRS = range(16)  # the static-root PCRs; 16..23 are resettable and not in this log
MAX_BANKS = 16  # numberOfAlgorithms: one entry per hash algorithm a TPM may implement
SHA1_SIZE = 20
EFI_GLOBAL_VARIABLE = UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
SECURE_BOOT_VARIABLES = {  # the Secure Boot policy the PFP has measured into PCR 7, in its order
    (EFI_GLOBAL_VARIABLE, "PK"): 0, (EFI_GLOBAL_VARIABLE, "KEK"): 1, (EFI_IMAGE_SECURITY_DATABASE, "db"): 2,
    (EFI_IMAGE_SECURITY_DATABASE, "dbx"): 3, (EFI_IMAGE_SECURITY_DATABASE, "dbt"): 4, (EFI_IMAGE_SECURITY_DATABASE, "dbr"): 5,
}
SECURE_BOOT = (EFI_GLOBAL_VARIABLE, "SecureBoot")
SECURE_BOOT_DB = (EFI_IMAGE_SECURITY_DATABASE, "db")
SECURE_BOOT_VALUES = {b"\x01": "enabled", b"\x00": "disabled"}
SEPARATOR_PCRS = range(8)  # the PFP's separators; 8..15 are the OS's (Windows logs "WBCL" on 12..14)
SEPARATOR_VALUES = (bytes(4), b"\xff\xff\xff\xff")  # PFP: UINT32 0, or 0xFFFFFFFF after an error


@dataclass(frozen=True)
class Event:
    """One measured record. `number` is its position in the log (the Spec ID header is 0)."""

    number: int
    pcr: int
    type: int
    digests: Mapping[int, bytes]  # bank (TPM_ALG_ID) -> digest
    data: bytes

    def describe(self) -> str:
        try:
            kind = f"EV_{EventType(self.type).name}"
        except ValueError:
            kind = f"type {self.type:#010x}"
        return f"event {self.number} (PCR {self.pcr}, {kind})"


@dataclass(frozen=True)
class EventLog:
    """A parsed log: the digest size of each bank it records, its events, the startup locality."""

    crypto_agile: bool
    digest_sizes: Mapping[int, int]
    events: tuple[Event, ...]
    startup_locality: int = 0


# --- parsing --------------------------------------------------------------------------------


def _read_pcr_index(r: LittleEndianReader, field: str) -> int:
    pcr = r.u32(field)
    if pcr >= PCR_COUNT:
        raise r.fail(f"{field} {pcr} is not a PCR (0..{PCR_COUNT - 1})")
    return pcr


def _read_sha1_event(r: LittleEndianReader, number: int) -> Event:
    """TCG_PCClientPCREvent: pcrIndex, eventType, digest[20], eventDataSize, event."""
    at = f"event[{number}]"
    pcr = _read_pcr_index(r, f"{at}.pcrIndex")
    event_type = r.u32(f"{at}.eventType")
    digest = r.raw(SHA1_SIZE, f"{at}.digest")
    data = r.raw(r.u32(f"{at}.eventDataSize"), f"{at}.event")
    return Event(number, pcr, event_type, {Alg.SHA1: digest}, data)


def _read_agile_event(r: LittleEndianReader, number: int, sizes: Mapping[int, int]) -> Event:
    """TCG_PCR_EVENT2: pcrIndex, eventType, TPML_DIGEST_VALUES, eventSize, event."""
    at = f"event[{number}]"
    pcr = _read_pcr_index(r, f"{at}.pcrIndex")
    event_type = r.u32(f"{at}.eventType")
    count = r.u32(f"{at}.digests.count")
    if count != len(sizes):
        raise r.fail(f"{at}.digests.count {count} differs from the {len(sizes)} bank(s) of the Spec ID event")
    digests: dict[int, bytes] = {}
    for i in range(count):
        alg = r.u16(f"{at}.digests[{i}].hashAlg")
        if alg not in sizes or alg in digests:
            raise r.fail(f"{at}.digests[{i}].hashAlg {alg_name(alg)} is not a bank of the Spec ID event, or repeats")
        digests[alg] = r.raw(sizes[alg], f"{at}.digests[{i}].digest")
    data = r.raw(r.u32(f"{at}.eventSize"), f"{at}.event")
    return Event(number, pcr, event_type, digests, data)


def _spec_id_banks(header: Event) -> dict[int, int] | None:
    """The banks of a TCG_EfiSpecIDEventStruct header, or None when `header` is not one."""
    if header.pcr != 0 or header.type != EventType.NO_ACTION or not header.data.startswith(SPEC_ID_SIGNATURE):
        return None
    r = LittleEndianReader(header.data, "Spec ID event", "tpm-eventlog")
    if header.digests[Alg.SHA1] != bytes(SHA1_SIZE):
        raise r.fail("the header's digest is not zero")
    r.raw(len(SPEC_ID_SIGNATURE), "signature")
    r.u32("platformClass"), r.u8("specVersionMinor"), r.u8("specVersionMajor"), r.u8("specErrata")
    uintn_size = r.u8("uintnSize")
    if uintn_size not in (1, 2):
        raise r.fail(f"uintnSize {uintn_size} is neither 1 (UINT32) nor 2 (UINT64)")
    count = r.u32("numberOfAlgorithms")
    if not 0 < count <= MAX_BANKS:
        raise r.fail(f"numberOfAlgorithms {count} is not 1..{MAX_BANKS}")
    sizes: dict[int, int] = {}
    for i in range(count):
        alg, size = r.u16(f"digestSizes[{i}].algorithmId"), r.u16(f"digestSizes[{i}].digestSize")
        expected = DIGEST_SIZE.get(alg)
        if alg in sizes or (expected is not None and size != expected) or not 0 < size <= MAX_DIGEST:
            raise r.fail(f"digestSizes[{i}]: {alg_name(alg)} with {size} bytes repeats or has the wrong size")
        sizes[alg] = size
    r.raw(r.u8("vendorInfoSize"), "vendorInfo")
    r.finish()
    return sizes


def _startup_locality(events: tuple[Event, ...]) -> int:
    """PFP StartupLocality event (EV_NO_ACTION on PCR 0): at most one, before PCR 0 is extended."""
    locality, extended = None, False
    for event in events:
        if event.pcr != 0:
            continue
        if event.type != EventType.NO_ACTION:
            extended = True
        elif event.data.startswith(STARTUP_LOCALITY_SIGNATURE):
            if locality is not None or extended or len(event.data) != len(STARTUP_LOCALITY_SIGNATURE) + 1:
                raise MalformedStatement(f"{event.describe()}: a StartupLocality event repeats, is late or has extra bytes", check="tpm-eventlog")
            locality = event.data[-1]
            if locality not in STARTUP_LOCALITIES:
                raise MalformedStatement(f"{event.describe()}: StartupLocality {locality} is not 0, 3 or 4", check="tpm-eventlog")
    return locality or 0


@catch_builtins
def parse_event_log(data: bytes) -> EventLog:
    """Parse a crypto-agile or SHA-1 TCG event log strictly (MalformedStatement, `tpm-eventlog`)."""
    r = LittleEndianReader(data, "event log", "tpm-eventlog")
    if not r.remaining:
        raise r.fail("the log is empty")
    first = _read_sha1_event(r, 0)
    sizes = _spec_id_banks(first)
    events = [] if sizes is not None else [first]
    while r.remaining:
        number = len(events) + (sizes is not None)
        events.append(_read_sha1_event(r, number) if sizes is None else _read_agile_event(r, number, sizes))
    events_tuple = tuple(events)
    return EventLog(sizes is not None, sizes or {Alg.SHA1: SHA1_SIZE}, events_tuple, _startup_locality(events_tuple))


# --- replay ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    """Per bank, the quoted PCRs the log extends and whose replay equals the quoted value."""

    verified: Mapping[int, frozenset[int]]

    def banks_covering(self, pcr: int) -> tuple[int, ...]:
        return tuple(bank for bank, pcrs in self.verified.items() if pcr in pcrs)


def _digest(bank: int, data: bytes) -> bytes:
    return hashlib.new(HASHES[bank].name, data).digest()


def _initial_value(pcr: int, size: int, locality: int) -> bytes:
    """PCR values after TPM2_Startup(CLEAR): zero, but PCR 0 ends in the startup locality."""
    return bytes(size - 1) + bytes([locality]) if pcr == 0 else bytes(size)


def _replay_bank(log: EventLog, bank: int) -> dict[int, bytes]:
    size, values = log.digest_sizes[bank], {}
    for event in log.events:
        if event.type == EventType.NO_ACTION or event.pcr not in REPLAYED_PCRS:
            continue
        start = values.get(event.pcr) or _initial_value(event.pcr, size, log.startup_locality)
        values[event.pcr] = _digest(bank, start + event.digests[bank])
    return values


@catch_builtins
def replay(log: EventLog, quoted: Mapping[int, Mapping[int, bytes]]) -> Replay:
    """Replay every quoted bank the log records; a quoted PCR the log extends must match."""
    verified: dict[int, frozenset[int]] = {}
    for bank, values in quoted.items():
        if bank not in log.digest_sizes or bank not in HASHES:
            continue  # the log does not record this bank (or it cannot be computed): nothing is proved
        replayed = _replay_bank(log, bank)
        for pcr in sorted(set(values) & set(replayed)):
            if replayed[pcr] != values[pcr]:
                raise RequirementFailed(
                    f"the event log replays PCR {pcr} of bank {alg_name(bank)} to {replayed[pcr].hex()}, "
                    f"but the quote attests {values[pcr].hex()}", check="tpm-eventlog-replay",
                )
        verified[bank] = frozenset(set(values) & set(replayed))
    return Replay(verified)


# --- facts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootFacts:
    """Posture facts the replayed log proved: `secure_boot` and named extra facts."""

    secure_boot: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def apply(self, posture: Posture) -> Posture:
        """`posture` with these facts added (a fact of `posture` of the same name is replaced)."""
        extra = dict(posture.extra) | dict(self.extra)
        return replace(posture, secure_boot=self.secure_boot or posture.secure_boot, extra=tuple(sorted(extra.items())))


def _check_event_data(event: Event, banks: tuple[int, ...]) -> None:
    """The event's data must be what was measured: its hash is the digest in every verified bank."""
    for bank in banks:
        if _digest(bank, event.data) != event.digests[bank]:
            raise RequirementFailed(
                f"{event.describe()}: the event data does not hash to its {alg_name(bank)} digest",
                check="tpm-eventlog-event-data",
            )


@catch_builtins
def uefi_variable(event: Event) -> tuple[UUID, str, bytes]:
    """UEFI_VARIABLE_DATA (PFP, "Measuring UEFI Variables"): VariableName (GUID),
    UnicodeNameLength and VariableDataLength (UINT64), UnicodeName (CHAR16s), VariableData."""
    r = LittleEndianReader(event.data, f"{event.describe()} UEFI_VARIABLE_DATA", "tpm-eventlog-event-data")
    guid = UUID(bytes_le=r.raw(16, "VariableName"))
    name_length, data_length = r.u64("UnicodeNameLength"), r.u64("VariableDataLength")
    try:
        name = r.raw(2 * name_length, "UnicodeName").decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise r.fail(f"UnicodeName is not UTF-16: {exc}") from exc
    value = r.raw(data_length, "VariableData")
    r.finish()
    return guid, name, value


@cache
def _separator_digests(bank: int) -> Mapping[bytes, bytes]:
    return {_digest(bank, value): value for value in SEPARATOR_VALUES}


def _is_separator(event: Event, banks: tuple[int, ...]) -> bool:
    """On PCRs 0..7, a separator by its digest (the type is covered by no digest, so a real
    separator relabelled still counts); on 8..15, by its type (a label)."""
    if event.pcr not in SEPARATOR_PCRS:
        return event.type == EventType.SEPARATOR
    values = {_separator_digests(bank).get(event.digests[bank]) for bank in banks}
    if values == {None}:
        if event.type == EventType.SEPARATOR:
            raise RequirementFailed(
                f"{event.describe()}: separator check: the digest is neither H(00000000) nor H(ffffffff)",
                check="tpm-eventlog-separator",
            )
        return False
    if len(values) != 1:
        raise RequirementFailed(
            f"{event.describe()}: separator check: the digest is a separator's in some banks only",
            check="tpm-eventlog-separator",
        )
    return True


def _policy_variable(event: Event) -> tuple[tuple[UUID, str], bytes] | None:
    """The Secure Boot policy variable (SecureBoot, PK, KEK, db, ...) whose UEFI_VARIABLE_DATA
    `event` carries, whatever its type; None for other data (which only a config event must parse)."""
    try:
        guid, name, value = uefi_variable(event)
    except MalformedStatement:
        if event.type == EventType.EFI_VARIABLE_DRIVER_CONFIG:
            raise
        return None
    key = (guid, name)
    return (key, value) if key == SECURE_BOOT or key in SECURE_BOOT_VARIABLES else None


def _check_policy_type(event: Event, key: tuple[UUID, str], after_separator: bool) -> None:
    """The firmware measures a policy variable as EV_EFI_VARIABLE_DRIVER_CONFIG, before the
    separator. Any other label on one is a relabelled record: refused rather than counted,
    which is stricter and what real logs allow. One exception on either side of the separator:
    EV_EFI_VARIABLE_AUTHORITY naming db, the db entry that verified an image (PFP; before the
    separator for option ROM drivers on physical machines, after it for the boot loader)."""
    if event.type == EventType.EFI_VARIABLE_AUTHORITY and key == SECURE_BOOT_DB:
        return
    if event.type != EventType.EFI_VARIABLE_DRIVER_CONFIG:
        problem = f"the {key[1]} variable under a type firmware does not measure it with (relabelled)"
    elif after_separator:
        problem = f"the {key[1]} variable after PCR 7's separator (measured by software)"
    else:
        return
    raise RequirementFailed(f"{event.describe()}: secure boot policy check: {problem}", check="tpm-eventlog-secure-boot-policy")


def _secure_boot_policy(events: list[Event], separators: list[Event], banks: tuple[int, ...]) -> tuple[str | None, list[str]]:
    """SecureBoot and the policy variables measured in PCR 7 before its separator (the firmware's),
    recognised by content: software may append to PCR 7 after boot, and relabel any record."""
    if len(separators) > 1:
        raise RequirementFailed(
            f"separator check: PCR 7 has {len(separators)} separators (events {', '.join(str(e.number) for e in separators)}); "
            "firmware measures one, the others were appended", check="tpm-eventlog-separator",
        )
    if not separators:
        return None, []  # no separator: the firmware's part of PCR 7 cannot be told apart
    values, measured = set(), set()
    for event in events:
        after_separator = event.number >= separators[0].number
        if not after_separator:
            _check_event_data(event, banks)  # the firmware's PCR 7 records hash their data: none can hide
        found = _policy_variable(event)
        if found is None:
            continue
        key, value = found
        _check_policy_type(event, key, after_separator)
        if after_separator:
            continue
        if key == SECURE_BOOT:
            values.add(value)
        else:
            measured.add(key)
    state = SECURE_BOOT_VALUES.get(values.pop()) if len(values) == 1 else None  # none, or conflicting
    return state, [name for _, name in sorted(measured, key=SECURE_BOOT_VARIABLES.__getitem__)]


@catch_builtins
def boot_facts(log: EventLog, verified: Replay) -> BootFacts:
    """The facts of the events on verified PCRs (see the module docstring)."""
    covered = [event for event in log.events if verified.banks_covering(event.pcr)]
    for event in covered:
        if event.type in (EventType.EFI_VARIABLE_DRIVER_CONFIG, EventType.SEPARATOR):
            _check_event_data(event, verified.banks_covering(event.pcr))
    extended = [event for event in covered if event.type != EventType.NO_ACTION]  # replay binds this type
    separators = [event for event in extended if _is_separator(event, verified.banks_covering(event.pcr))]
    secure_boot, variables = _secure_boot_policy(
        [event for event in extended if event.pcr == 7], [event for event in separators if event.pcr == 7],
        verified.banks_covering(7),
    )
    applications = sum(1 for e in covered if e.pcr == 4 and e.type == EventType.EFI_BOOT_SERVICES_APPLICATION)
    banks = sorted(bank for bank, pcrs in verified.verified.items() if pcrs)
    facts = {
        "boot_log_banks": ",".join(Alg(bank).name.lower() for bank in banks),
        "boot_pcrs": ",".join(str(pcr) for pcr in sorted(set().union(*verified.verified.values()))),
        "boot_separators": ",".join(str(pcr) for pcr in sorted({event.pcr for event in separators})),
        "boot_applications": str(applications) if 4 in {e.pcr for e in covered} else "",
        "secure_boot_variables": ",".join(variables),
    }
    return BootFacts(secure_boot, tuple(sorted((k, v) for k, v in facts.items() if v)))
