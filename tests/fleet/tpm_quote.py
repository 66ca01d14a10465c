"""A simulated measured boot for mutation tests of TPM quotes and event logs, and readers of
the two real quote vectors.

`make(knobs)` boots a simulated UEFI platform: a list of measurements (S-CRTM version,
Secure Boot policy in PCR 7, separators, boot applications, boot loader events) that a
simulated TPM extends into every bank of the log; then it writes the crypto-agile (or SHA-1)
event log, quotes the selected PCRs with a generated AK under the chosen scheme and returns
everything the verifier takes. Each field the verifier checks has a knob, and the "lies"
knobs change only what the log *says* after the TPM measured the truth, so each rejection
reason is one `dataclasses.replace` away from a valid sample.

`windows_gcp()` and `gce_cos()` read the real vectors (MANIFEST §3c); the go-tpm-tools
protobuf is decoded with a minimal wire reader: five fields are not worth a dependency.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass, replace
from typing import Any, Callable
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from attestation.tpm.constants import DIGEST_SIZE, TPM_GENERATED_VALUE, Alg, EccCurve, St
from attestation.tpm.eventlog import EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE, EventType
from attestation.tpm.quote import QuoteBundle
from attestation.tpm.structs import (
    CertifyInfo, ClockInfo, EccParms, EccPoint, PcrSelection, QuoteInfo, RsaParms, Scheme, SymDefObject, TpmsAttest,
    TpmtPublic, TpmtSignature,
)
from tests import vectors
from tests.fleet.tpm import private_key

NONCE = hashlib.sha256(b"token.thumbprint").digest()  # SHA-256(key authorization), as in ACME
AK_ATTRIBUTES = 0x00050072  # fixedTPM fixedParent sensitiveDataOrigin userWithAuth restricted sign
EV_S_CRTM_VERSION, EV_POST_CODE, EV_IPL = 0x8, 0x1, 0xD
EV_EFI_VARIABLE_AUTHORITY, EV_EFI_ACTION = 0x800000E0, 0x80000007
_HASH = {Alg.SHA1: hashes.SHA1, Alg.SHA256: hashes.SHA256, Alg.SHA384: hashes.SHA384, Alg.SHA512: hashes.SHA512}


@dataclass(frozen=True)
class Measurement:
    """What firmware measures: `measured` is hashed into the PCR, `data` is what it logs."""

    pcr: int
    type: int
    data: bytes
    measured: bytes | None = None  # None: the data itself (most events); an image for applications


def uefi_variable(guid: UUID, name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA as firmware logs it."""
    unicode = name.encode("utf-16-le")
    return guid.bytes_le + struct.pack("<QQ", len(name), len(value)) + unicode + value


def secure_boot_variable(value: bytes) -> Measurement:
    return Measurement(7, EventType.EFI_VARIABLE_DRIVER_CONFIG, uefi_variable(EFI_GLOBAL_VARIABLE, "SecureBoot", value))


def boot(secure_boot: bytes, before_separators: tuple[Measurement, ...] = ()) -> list[Measurement]:
    """A UEFI boot as the PFP lays it out: firmware, Secure Boot policy, separators, boot path."""
    policy = [secure_boot_variable(secure_boot), *before_separators] + [
        Measurement(7, EventType.EFI_VARIABLE_DRIVER_CONFIG, uefi_variable(guid, name, f"{name} contents".encode()))
        for guid, name in ((EFI_GLOBAL_VARIABLE, "PK"), (EFI_GLOBAL_VARIABLE, "KEK"),
                           (EFI_IMAGE_SECURITY_DATABASE, "db"), (EFI_IMAGE_SECURITY_DATABASE, "dbx"))
    ]
    separators = [Measurement(pcr, EventType.SEPARATOR, bytes(4)) for pcr in range(8)]
    return [
        Measurement(0, EV_S_CRTM_VERSION, "acmeda vTPM firmware 1.0".encode("utf-16-le")),
        Measurement(0, EV_POST_CODE, b"POST CODE", measured=b"firmware volume"),
        *policy,
        Measurement(4, EV_EFI_ACTION, b"Calling EFI Application from Boot Option"),
        *separators,
        Measurement(7, EV_EFI_VARIABLE_AUTHORITY, uefi_variable(EFI_IMAGE_SECURITY_DATABASE, "db", b"signer cert")),
        Measurement(4, EventType.EFI_BOOT_SERVICES_APPLICATION, b"image load event shim", measured=b"shim PE image"),
        Measurement(4, EventType.EFI_BOOT_SERVICES_APPLICATION, b"image load event grub", measured=b"grub PE image"),
        Measurement(8, EV_IPL, b"grub_cmd: linux /vmlinuz root=/dev/sda1\x00"),
        Measurement(9, EV_IPL, b"/vmlinuz\x00", measured=b"kernel image"),
    ]


@dataclass(frozen=True)
class Knobs:
    """Every field the verifier checks. The defaults build a valid RSASSA-SHA256 quote of all
    24 SHA-256 PCRs with a crypto-agile SHA-1 + SHA-256 log of a Secure Boot enabled boot."""

    # the platform and the TPM
    log_banks: tuple[int, ...] = (Alg.SHA1, Alg.SHA256)
    crypto_agile: bool = True  # False: a SHA-1 TCG_PCClientPCREvent log (log_banks must be SHA-1)
    secure_boot: bytes = b"\x01"
    startup_locality: int | None = None  # a StartupLocality event, and PCR 0 starting there
    before_separators: tuple[Measurement, ...] = ()  # more firmware measurements, after SecureBoot
    after_boot: tuple[Measurement, ...] = ()  # measured (and logged) once the OS runs
    # lies of the log: the TPM measured the truth, the log says otherwise
    logged_secure_boot: bytes | None = None  # the SecureBoot value the log shows (digest unchanged)
    logged_separator: bytes | None = None  # PCR 7 separator data the log shows
    flip_digest_of: int | None = None  # flip a bit of this event's digests (event number, header = 0)
    drop_event: int | None = None  # omit this event from the log (event number)
    header_size_of: tuple[int, int] | None = None  # (bank, size) written in the Spec ID event
    log_edit: Callable[[bytes], bytes] | None = None  # raw edit of the serialized log
    # the quote
    quote_banks: tuple[int, ...] = (Alg.SHA256,)
    select: bytes = b"\xff\xff\xff"
    magic: int = TPM_GENERATED_VALUE
    attest_type: int = St.ATTEST_QUOTE
    extra_data: bytes = NONCE
    pcr_digest: bytes | None = None  # None: the true digest
    quote_edit: Callable[[bytes], bytes] | None = None  # raw edit of the signed TPMS_ATTEST
    # the AK and its signature
    ak: str = "rsa"  # "rsa", "p256", "p384"
    scheme: int | None = None  # None: RSASSA for RSA, ECDSA for ECC
    sig_hash: int = Alg.SHA256
    ak_scheme: int | None = None  # the scheme fixed in the AK's TPMT_PUBLIC; None: the signing scheme, Alg.NULL: none
    ak_attributes: int = AK_ATTRIBUTES
    foreign_signer: bool = False  # sign with another key than the AK
    corrupt_sig: bool = False
    signature_bytes: bytes | None = None  # send these instead of the signature
    # the PCR values supplied next to the quote
    supplied: tuple[tuple[int, int, bytes | None], ...] = ()  # (bank, index, value or None to omit)


@dataclass(frozen=True)
class Sample:
    ak_public: TpmtPublic
    quote: bytes
    signature: bytes
    pcrs: dict[int, dict[int, bytes]]
    event_log: bytes
    true_pcrs: dict[int, dict[int, bytes]]  # what the TPM holds

    @property
    def bundle(self) -> QuoteBundle:
        return QuoteBundle(self.quote, self.signature, self.pcrs, self.event_log)

    def att_stmt(self) -> dict:
        return {"quote": self.quote, "quoteSig": self.signature, "pcrs": self.pcrs, "eventLog": self.event_log}


def _h(bank: int, data: bytes) -> bytes:
    return hashlib.new(_HASH[bank].name, data).digest()


def _pcr_bank(knobs: Knobs, bank: int, measurements: list[Measurement]) -> dict[int, bytes]:
    """What the TPM holds after the boot: PCRs 17..22 all ones (not reset since power-on)."""
    size = DIGEST_SIZE[bank]
    values = {pcr: (b"\xff" * size if 17 <= pcr <= 22 else bytes(size)) for pcr in range(24)}
    values[0] = bytes(size - 1) + bytes([knobs.startup_locality or 0])
    for m in measurements:
        values[m.pcr] = _h(bank, values[m.pcr] + _h(bank, m.measured if m.measured is not None else m.data))
    return values


def _logged(knobs: Knobs, measurements: list[Measurement]) -> list[tuple[int, int, dict[int, bytes], bytes]]:
    """(pcr, type, digests, data) of each record the log shows after the header."""
    records = []
    if knobs.startup_locality is not None:
        records.append((0, EventType.NO_ACTION, {b: bytes(DIGEST_SIZE[b]) for b in knobs.log_banks},
                        b"StartupLocality\x00" + bytes([knobs.startup_locality])))
    for m in measurements:
        digests = {b: _h(b, m.measured if m.measured is not None else m.data) for b in knobs.log_banks}
        data = m.data
        if knobs.logged_secure_boot is not None and m == secure_boot_variable(knobs.secure_boot):
            data = uefi_variable(EFI_GLOBAL_VARIABLE, "SecureBoot", knobs.logged_secure_boot)
        if knobs.logged_separator is not None and (m.pcr, m.type) == (7, EventType.SEPARATOR):
            data = knobs.logged_separator
        records.append((m.pcr, m.type, digests, data))
    for number, (pcr, kind, digests, data) in enumerate(records, start=1):
        if number == knobs.flip_digest_of:
            records[number - 1] = (pcr, kind, {b: bytes([d[0] ^ 1]) + d[1:] for b, d in digests.items()}, data)
    if knobs.drop_event is not None:
        del records[knobs.drop_event - 1]
    return records


def spec_id_event(knobs: Knobs) -> bytes:
    sizes = dict((b, DIGEST_SIZE[b]) for b in knobs.log_banks)
    if knobs.header_size_of:
        sizes[knobs.header_size_of[0]] = knobs.header_size_of[1]
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(sizes))
    body += b"".join(struct.pack("<HH", bank, size) for bank, size in sizes.items()) + b"\x00"
    return struct.pack("<II", 0, EventType.NO_ACTION) + bytes(20) + struct.pack("<I", len(body)) + body


def event_log(knobs: Knobs, measurements: list[Measurement]) -> bytes:
    out = spec_id_event(knobs) if knobs.crypto_agile else b""
    for pcr, kind, digests, data in _logged(knobs, measurements):
        if knobs.crypto_agile:
            values = b"".join(struct.pack("<H", bank) + digest for bank, digest in digests.items())
            out += struct.pack("<III", pcr, kind, len(digests)) + values + struct.pack("<I", len(data)) + data
        else:
            out += struct.pack("<II", pcr, kind) + digests[Alg.SHA1] + struct.pack("<I", len(data)) + data
    return knobs.log_edit(out) if knobs.log_edit else out


def ak_public(knobs: Knobs, key) -> TpmtPublic:
    scheme_alg = knobs.scheme or (Alg.RSASSA if knobs.ak == "rsa" else Alg.ECDSA)
    fixed = knobs.ak_scheme if knobs.ak_scheme is not None else scheme_alg
    scheme = Scheme() if fixed == Alg.NULL else Scheme(fixed, knobs.sig_hash)
    if knobs.ak == "rsa":
        parms = RsaParms(SymDefObject(), scheme, 2048, 0)
        return TpmtPublic(Alg.RSA, Alg.SHA256, knobs.ak_attributes, b"", parms, key.public_key().public_numbers().n.to_bytes(256, "big"))
    curve, size = {"p256": (EccCurve.NIST_P256, 32), "p384": (EccCurve.NIST_P384, 48)}[knobs.ak]
    numbers = key.public_key().public_numbers()
    point = EccPoint(numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big"))
    return TpmtPublic(Alg.ECC, Alg.SHA256, knobs.ak_attributes, b"", EccParms(SymDefObject(), scheme, curve, Scheme()), point)


def sign(knobs: Knobs, key, message: bytes) -> bytes:
    """What TPM2_Quote does with the AK: a TPMT_SIGNATURE over the TPMS_ATTEST."""
    scheme = knobs.scheme or (Alg.RSASSA if knobs.ak == "rsa" else Alg.ECDSA)
    hash_alg = _HASH[knobs.sig_hash]()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hash_alg)))
        size = key.curve.key_size // 8
        signature = TpmtSignature(scheme, knobs.sig_hash, ecc=(r.to_bytes(size, "big"), s.to_bytes(size, "big")))
    else:
        pad = padding.PSS(padding.MGF1(hash_alg), padding.PSS.DIGEST_LENGTH) if scheme == Alg.RSAPSS else padding.PKCS1v15()
        signature = TpmtSignature(scheme, knobs.sig_hash, rsa=key.sign(message, pad, hash_alg))
    out = signature.to_bytes()
    return out[:-1] + bytes([out[-1] ^ 1]) if knobs.corrupt_sig else out


def quote(knobs: Knobs, pcrs: dict[int, dict[int, bytes]]) -> bytes:
    selections = tuple(PcrSelection(bank, knobs.select) for bank in knobs.quote_banks)
    values = b"".join(pcrs[s.hash_alg][i] for s in selections for i in s.pcrs)
    digest = knobs.pcr_digest if knobs.pcr_digest is not None else _h(knobs.sig_hash, values)
    signer = b"\x00\x0b" + hashlib.sha256(b"ak name").digest()
    attested = QuoteInfo(selections, digest) if knobs.attest_type == St.ATTEST_QUOTE else CertifyInfo(signer, signer)
    out = TpmsAttest(knobs.magic, knobs.attest_type, signer, knobs.extra_data, ClockInfo(42, 1, 0, True), 0x20190823, attested).to_bytes()
    return knobs.quote_edit(out) if knobs.quote_edit else out


def make(knobs: Knobs = Knobs()) -> Sample:
    measurements = boot(knobs.secure_boot, knobs.before_separators) + list(knobs.after_boot)
    banks = set(knobs.log_banks) | set(knobs.quote_banks)
    true_pcrs = {bank: _pcr_bank(knobs, bank, measurements) for bank in banks}
    key = private_key(knobs.ak, slot=21)
    public = ak_public(knobs, key)
    message = quote(knobs, true_pcrs)
    signature = knobs.signature_bytes or sign(knobs, private_key(knobs.ak, slot=22) if knobs.foreign_signer else key, message)
    supplied = {bank: dict(values) for bank, values in true_pcrs.items()}
    for bank, index, value in knobs.supplied:
        if value is None:
            supplied[bank].pop(index, None)
        else:
            supplied.setdefault(bank, {})[index] = value
    return Sample(public, message, signature, supplied, event_log(knobs, measurements), true_pcrs)


def mutate(**changes: Any) -> Sample:
    return make(replace(Knobs(), **changes))


# --- the real vectors (MANIFEST §3c) ------------------------------------------------------------

WINDOWS_GCP = "tpm-quote/go-attestation-windows-gcp-shielded-vm.json"
GCE_COS = "tpm-quote/go-tpm-tools-gce-cos-85-nonce9009.pb"
GCE_AK_CERT = "tpm-quote/go-tpm-tools-gce-cos-85-nonce9009.ak-cert.der"
GCE_NONCE = b"\x90\x09"


@dataclass(frozen=True)
class RealQuote:
    ak_public: TpmtPublic
    quotes: tuple[tuple[bytes, bytes], ...]  # (TPMS_ATTEST, TPMT_SIGNATURE)
    pcrs: dict[int, dict[int, bytes]]
    event_log: bytes
    nonce: bytes


def windows_gcp() -> RealQuote:
    """go-attestation JSON: base64 TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE, log, PCRs (SHA-1)."""
    doc = json.loads(vectors.read(WINDOWS_GCP))
    go_hash = {3: Alg.SHA1, 5: Alg.SHA256}  # Go crypto.Hash values
    pcrs: dict[int, dict[int, bytes]] = {}
    for pcr in doc["Log"]["PCRs"]:
        pcrs.setdefault(go_hash[pcr["DigestAlg"]], {})[pcr["Index"]] = base64.b64decode(pcr["Digest"])
    quote_pair = (base64.b64decode(doc["Quote"]["Quote"]), base64.b64decode(doc["Quote"]["Signature"]))
    return RealQuote(TpmtPublic.parse(base64.b64decode(doc["AK"]["Public"])), (quote_pair,), pcrs,
                     base64.b64decode(doc["Log"]["Raw"]), base64.b64decode(doc["Quote"]["Nonce"]))


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value, shift, at = value | (byte & 0x7F) << shift, shift + 7, at + 1
        if byte < 0x80:
            return value, at


def protobuf_fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, value) of a protobuf message: varints and length-delimited fields only."""
    out, at = [], 0
    while at < len(data):
        key, at = _varint(data, at)
        if key & 7 == 0:
            value, at = _varint(data, at)
        elif key & 7 == 2:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        else:
            raise ValueError(f"wire type {key & 7} is not used by attest.Attestation")
        out.append((key >> 3, value))
    return out


def gce_cos() -> RealQuote:
    """go-tpm-tools attest.Attestation: 1 ak_pub, 2 quotes{1 quote, 2 raw_sig, 3 pcrs{1 hash, 2 map}}, 3 event_log."""
    top = protobuf_fields(vectors.read(GCE_COS))
    quotes, pcrs = [], {}
    for number, value in top:
        if number != 2:
            continue
        fields = protobuf_fields(value)
        quotes.append((dict(fields)[1], dict(fields)[2]))
        bank_fields = protobuf_fields(dict(fields)[3])
        entries = [dict(protobuf_fields(entry)) for n, entry in bank_fields if n == 2]
        pcrs[dict(bank_fields)[1]] = {entry.get(1, 0): entry[2] for entry in entries}
    return RealQuote(TpmtPublic.parse(dict(top)[1]), tuple(quotes), pcrs, dict(top)[3], GCE_NONCE)
