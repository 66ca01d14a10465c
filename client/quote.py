"""Boot posture for the `tpm` statement: a TPM2_Quote of the PCRs with the AK, the PCR values it
attests and the firmware's TCG event log (the wire format: docs/tpm-boot-posture.md).

The quote carries the same qualifyingData as TPM2_Certify, SHA-256(key authorization), so the
CA knows it was made for this challenge, by the AK it already trusts. It selects PCRs 0..15 of
the SHA-256 bank (the SHA-1 bank on a TPM that allocated no other): 16..23 are resettable and
the CA does not replay them. The CA replays the event log against the quoted values and reads
the Secure Boot state from it.

Where the log comes from: `--event-log PATH`, else the log the kernel exposes for the TPM the
TCTI reaches (`/sys/kernel/security/tpmN/binary_bios_measurements`, readable by root only on
most distributions). A simulator reached over TCP has no kernel log: the host's log describes
the host's TPM, whose PCRs the simulator does not hold, and sending it would only get the
enrollment refused.

No log, no quote. Without the log the CA can prove only that the TPM signed some PCR values
and with which algorithm: the values themselves reach neither the certificate nor any policy
(a PCR digest means something only next to the log that explains it), and the AK's algorithm
is already a fact of the certificate (`tpm_sig_alg`). A quote still costs a TPM signature (slow
on a discrete TPM with an RSA AK), about a kilobyte of request, and one more way for the
enrollment to fail, so it is not sent for nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from tpm2_pytss import TPMS_ATTEST, TPMT_SIGNATURE, TSS2_Exception
from tpm2_pytss.constants import TPM2_ALG, TPM2_ST

from client.tpm import KeyBlob, Tpm, TpmError

QUOTED_PCRS = tuple(range(16))  # the static PCRs the firmware log describes
BANKS = (TPM2_ALG.SHA256, TPM2_ALG.SHA1)  # in this order of preference
HASH_NAMES = {TPM2_ALG.SHA1: "sha1", TPM2_ALG.SHA256: "sha256", TPM2_ALG.SHA384: "sha384", TPM2_ALG.SHA512: "sha512"}
ATTEMPTS = 5  # a PCR extended between the read and the quote (IMA extends PCR 10 at runtime): read again
KERNEL_EVENT_LOG = "/sys/kernel/security/tpm{}/binary_bios_measurements"


@dataclass(frozen=True)
class EventLog:
    """The TCG event log to send, and where it was read (for the messages)."""

    data: bytes
    source: str


@dataclass(frozen=True)
class BootEvidence:
    """A quote, its signature, the PCR values it attests and the event log, as the CA reads them."""

    quote: bytes  # TPMS_ATTEST
    signature: bytes  # TPMT_SIGNATURE
    pcrs: Mapping[int, Mapping[int, bytes]]  # bank (TPM_ALG_ID) -> PCR index -> value
    event_log: bytes
    attempts: int = 1

    def statement_members(self) -> dict:
        """The optional members of the `tpm` attStmt (docs/tpm-boot-posture.md)."""
        pcrs = {bank: dict(values) for bank, values in self.pcrs.items()}
        return {"quote": self.quote, "quoteSig": self.signature, "pcrs": pcrs, "eventLog": self.event_log}


# --- the event log -------------------------------------------------------------------------


def kernel_event_log_path(tcti: str) -> Path | None:
    """The kernel's event log of the TPM a `device` TCTI opens (/dev/tpmN or /dev/tpmrmN, /dev/tpm0
    by default); None for any other TCTI (a simulator, swtpm): the kernel's log is not its log."""
    name, _, conf = tcti.partition(":")
    if name not in ("device", "libtss2-tcti-device.so.0"):
        return None
    match = re.fullmatch(r"(?:/dev/tpm(?:rm)?(\d+))?", conf)
    return Path(KERNEL_EVENT_LOG.format(match.group(1) or 0)) if match else None


def load_event_log(explicit: bytes | None, tcti: str) -> tuple[EventLog | None, str]:
    """The log to send (the one given, else the kernel's if readable) and, when there is none,
    why, for the command's report."""
    if explicit is not None:
        return EventLog(explicit, "--event-log"), ""
    path = kernel_event_log_path(tcti)
    if path is None:
        return None, f"no boot posture: the TCTI {tcti!r} reaches no kernel TPM, pass its log with --event-log"
    try:
        data = path.read_bytes()
    except OSError as exc:  # absent (no TPM driver, no UEFI) or not readable by this user (root only)
        return None, f"no boot posture: cannot read the event log {path} ({exc.strerror}); run as root or pass --event-log"
    if not data:
        return None, f"no boot posture: the event log {path} is empty"
    return EventLog(data, str(path)), ""


# --- the quote -----------------------------------------------------------------------------


def quoted_bank(tpm: Tpm, pcrs: tuple[int, ...] = QUOTED_PCRS) -> int:
    """SHA-256 when the TPM allocated it for these PCRs, else SHA-1 (older firmware TPMs)."""
    allocated = tpm.allocated_pcrs()
    for bank in BANKS:
        if set(pcrs) <= allocated.get(bank, frozenset()):
            return bank
    raise TpmError(f"the TPM has allocated neither the SHA-256 nor the SHA-1 bank for PCRs {list(pcrs)}")


def _quoted_digest(quote: bytes, signature: bytes) -> tuple[bytes, str]:
    """The quote's pcrDigest and the name of the hash that made it (the signing scheme's)."""
    try:
        attest, _ = TPMS_ATTEST.unmarshal(quote)
        parsed, _ = TPMT_SIGNATURE.unmarshal(signature)
    except (TSS2_Exception, ValueError, TypeError) as exc:
        raise TpmError(f"the TPM's quote does not parse: {exc}") from None
    if attest.type != TPM2_ST.ATTEST_QUOTE or parsed.signature.any.hashAlg not in HASH_NAMES:
        raise TpmError("TPM2_Quote did not return a quote signed with a SHA hash")
    return bytes(attest.attested.quote.pcrDigest), HASH_NAMES[parsed.signature.any.hashAlg]


def boot_evidence(tpm: Tpm, ak: KeyBlob, qualifying_data: bytes, event_log: bytes,
                  pcrs: tuple[int, ...] = QUOTED_PCRS, attempts: int = ATTEMPTS) -> BootEvidence:
    """Read the PCRs, quote them, and keep the pair only if the quote attests exactly the values
    read: TPM2_PCR_Read answers 8 PCRs per call and any PCR may be extended between those calls
    and the quote (IMA, a measured application), so a mismatch means read and quote again."""
    bank = quoted_bank(tpm, pcrs)
    for attempt in range(1, attempts + 1):
        values = tpm.pcr_values(bank, pcrs)
        quote, signature = tpm.quote(ak, bank, pcrs, qualifying_data)
        digest, hash_name = _quoted_digest(quote, signature)
        if digest == hashlib.new(hash_name, b"".join(values[index] for index in sorted(values))).digest():
            return BootEvidence(quote, signature, {bank: values}, event_log, attempt)
    raise TpmError(f"the PCRs kept changing between TPM2_PCR_Read and TPM2_Quote ({attempts} attempts); "
                   "enroll again, or with --no-quote")
