"""The device enrollment and renewal flows: AK enrollment, device-attest-01 with the `tpm`
format, finalize, storage; renewal by ARI with `replaces`.

1. AK enrollment (docs/device-client.md, the contract in notes): POST newTpmAk with the AK's
   TPMT_PUBLIC and the EK certificate; the CA answers a credential bound to the AK's Name and
   encrypted to the EK; TPM2_ActivateCredential recovers the secret, which only a TPM holding
   both keys can do; POSTing it back returns the AK certificate and the permanent identifier.
2. device-attest-01: a new certificate key in the TPM, TPM2_Certify(key, AK) with
   qualifyingData = SHA-256(key authorization), sent as a `tpm` attestation statement; with
   an event log, also a TPM2_Quote of the PCRs with the same qualifyingData and the log, from
   which the CA proves the boot posture (client/quote.py, docs/tpm-boot-posture.md).
3. finalize with a CSR the TPM signs, download the chain, store it with the key's blobs.

Renewal asks the CA's renewalInfo (RFC 9773) whether the stored certificate is due, then
orders with `replaces`, reusing the AK while its certificate is valid, with a fresh key.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import cbor2
from cryptography import x509

from client.acme import AcmeClient, AcmeError, AcmeProblem, b64url, b64url_decode, cert_id, load_or_create_account_key
from client.csr import PermanentIdentifier
from client.device_order import obtain_device_certificate
from client.http import Http, tls_context
from client.quote import EventLog, boot_evidence, load_event_log
from client.state import AkRecord, DeviceRecord, StateDir
from client.tpm import COSE_ALG, DEFAULT_TCTI, KeyBlob, Tpm, TpmError

AK_RENEW_MARGIN = timedelta(minutes=5)  # an AK certificate this close to expiry is enrolled again


@dataclass(frozen=True)
class Options:
    """What `acmeda device enroll|renew` was asked to do."""

    directory: str
    state_dir: Path
    tcti: str = DEFAULT_TCTI
    ca_bundle: Path | None = None
    insecure: bool = False
    eab: tuple[str, str] | None = None
    ak_type: str = "ecc"
    ek_chain: tuple[bytes, ...] = ()  # DER EK CA certificates to send with the EK certificate
    timeout: float = 60.0
    quote: bool = True  # add a PCR quote and the event log to the statement, when there is a log
    event_log: bytes | None = None  # the TCG event log; None: the kernel's, for a `device` TCTI
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))


@dataclass(frozen=True)
class Outcome:
    """What a run did, for the command line to report."""

    renewed: bool
    certificate: x509.Certificate | None
    message: str


# --- the ACME account ----------------------------------------------------------------------


def open_account(options: Options, state: StateDir, http: Http) -> AcmeClient:
    """The ACME client for the stored account, registering it on first use."""
    state.ensure()
    key = load_or_create_account_key(state.account_key_path)
    client = AcmeClient(http, options.directory, key, kid=state.account_url(options.directory))
    if client.kid is None:
        state.save_account(options.directory, client.register(eab=options.eab))
    return client


# --- 1. AK enrollment ----------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """A begun AK enrollment: where to answer, and the credential to activate."""

    url: str
    credential_blob: bytes
    encrypted_secret: bytes


def begin_ak_enrollment(acme: AcmeClient, ak_public_area: bytes, ek_certificate: bytes | None,
                        ek_public_area: bytes, ek_chain: tuple[bytes, ...] = ()) -> Activation:
    payload: dict = {"akPublic": b64url(ak_public_area)}
    if ek_certificate is not None:
        payload["ekCertificate"] = b64url(ek_certificate)
        if ek_chain:
            payload["ekChain"] = [b64url(c) for c in ek_chain]
    else:  # only accepted when the operator pinned this EK
        payload["ekPublic"] = b64url(ek_public_area)
    response = acme.post(acme.resource("newTpmAk"), payload)
    location = response.headers.get("Location")
    if not location:
        raise AcmeError("the CA's AK enrollment answer has no Location")
    doc = response.json()
    try:
        return Activation(location, b64url_decode(doc["credentialBlob"]), b64url_decode(doc["encryptedSecret"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise AcmeError(f"the CA's AK enrollment answer is malformed ({type(exc).__name__}: {exc})") from None


def answer_ak_enrollment(acme: AcmeClient, activation: Activation, secret: bytes) -> tuple[bytes, tuple[bytes, ...], PermanentIdentifier]:
    """POST the activated secret; the AK certificate (DER), its chain and the permanent identifier."""
    doc = acme.post(activation.url, {"secret": b64url(secret)}).json()
    try:
        if doc["status"] != "valid":
            raise AcmeError(f"the CA left the AK enrollment {doc['status']}")
        identifier = doc["permanentIdentifier"]
        return (b64url_decode(doc["akCertificate"]), tuple(b64url_decode(c) for c in doc.get("chain", ())),
                PermanentIdentifier(identifier["value"], identifier.get("assigner")))
    except (KeyError, TypeError, ValueError) as exc:
        raise AcmeError(f"the CA's AK certificate answer is malformed ({type(exc).__name__}: {exc})") from None


def enroll_ak(acme: AcmeClient, tpm: Tpm, options: Options, ak: KeyBlob | None = None) -> AkRecord:
    """Certify an AK (a new one unless `ak` is given) through credential activation."""
    ak = ak or tpm.create_ak(options.ak_type)
    chain = options.ek_chain + tuple(tpm.ek_chain())
    activation = begin_ak_enrollment(acme, ak.public_area, tpm.ek_certificate(), tpm.ek_public_area(), chain)
    secret = tpm.activate_credential(ak, activation.credential_blob, activation.encrypted_secret)
    certificate, ak_chain, identifier = answer_ak_enrollment(acme, activation, secret)
    return AkRecord(options.directory, ak, certificate, ak_chain, identifier)


# --- 2. device-attest-01 and 3. the certificate --------------------------------------------


def attestation_object(tpm: Tpm, key: KeyBlob, ak: AkRecord, key_authorization: str,
                       event_log: EventLog | None = None) -> bytes:
    """The CBOR attestation object of fmt "tpm" (attestation/formats/tpm.py) binding `key`
    to this challenge: extraData = SHA-256(key authorization); with an event log, a quote of the
    PCRs bound the same way, and the log."""
    extra_data = hashlib.sha256(key_authorization.encode()).digest()
    cert_info, signature = tpm.certify(key, ak.blob, extra_data)
    statement = {"ver": "2.0", "alg": COSE_ALG[ak.blob.key_type], "x5c": [ak.certificate, *ak.chain],
                 "sig": signature, "certInfo": cert_info, "pubArea": key.public_area}
    if event_log is not None:
        statement |= boot_evidence(tpm, ak.blob, extra_data, event_log.data).statement_members()
    return cbor2.dumps({"fmt": "tpm", "attStmt": statement})


def boot_posture_log(options: Options) -> tuple[EventLog | None, str]:
    """The event log to quote with (None: no quote), and a note for the report when there is none."""
    if not options.quote:
        return None, ""
    return load_event_log(options.event_log, options.tcti)


def obtain_certificate(acme: AcmeClient, tpm: Tpm, key: KeyBlob, ak: AkRecord, deadline: float,
                       replaces: str | None = None, event_log: EventLog | None = None) -> bytes:
    """Order, validate, finalize and download: the PEM chain for the TPM key `key`."""
    try:
        return obtain_device_certificate(
            acme, ak.identifier, key.spki_der(), lambda digest: tpm.sign_digest(key, digest),
            lambda key_authorization: attestation_object(tpm, key, ak, key_authorization, event_log),
            deadline, replaces=replaces)
    except AcmeProblem as problem:
        if problem.status != 413 or event_log is None:
            raise
        raise AcmeError(f"{problem} (the statement carries a {len(event_log.data)}-byte event log: enroll with "
                        "--no-quote, or raise the CA's request size limit)") from None


# --- the commands --------------------------------------------------------------------------


def _session(options: Options) -> tuple[StateDir, Http]:
    return StateDir(options.state_dir), Http(tls_context(options.ca_bundle, options.insecure))


def enroll(options: Options) -> Outcome:
    """`acmeda device enroll`: a new AK, its enrollment, a new certificate key and certificate."""
    deadline = time.monotonic() + options.timeout
    state, http = _session(options)
    event_log, note = boot_posture_log(options)
    try:
        acme = open_account(options, state, http)
        with Tpm(options.tcti) as tpm:
            ak = enroll_ak(acme, tpm, options)
            state.save_ak(ak)
            key = tpm.create_certificate_key()
            chain = obtain_certificate(acme, tpm, key, ak, deadline, event_log=event_log)
    finally:
        http.close()
    record = DeviceRecord(options.directory, key, chain)
    state.save_device(record)
    return Outcome(True, record.certificate, _with_note(f"enrolled {ak.identifier.order_value}", event_log, note))


def _with_note(message: str, event_log: EventLog | None, note: str) -> str:
    if event_log is not None:
        return f"{message} with boot posture (PCR quote and the event log from {event_log.source})"
    return f"{message} ({note})" if note else message


def _current_ak(acme: AcmeClient, tpm: Tpm, state: StateDir, options: Options) -> AkRecord:
    """The stored AK while the TPM still loads it and its certificate from this CA stays valid;
    otherwise enrolled again: the same AK if the TPM loads it, a new one if not (TPM cleared)."""
    stored = state.ak()
    loads = stored is not None and _loads(tpm, stored.blob)
    if loads and stored.directory == options.directory and stored.valid_at(options.now() + AK_RENEW_MARGIN):
        return stored
    record = enroll_ak(acme, tpm, options, stored.blob if loads else None)
    state.save_ak(record)
    return record


def _loads(tpm: Tpm, blob: KeyBlob) -> bool:
    try:
        tpm.load(blob)
    except TpmError:
        return False
    return True


def renew(options: Options, force: bool = False) -> Outcome:
    """`acmeda device renew`: renew the stored certificate when the CA's ARI window is open."""
    deadline = time.monotonic() + options.timeout
    state, http = _session(options)
    device = state.device()
    if device is None:
        raise AcmeError(f"no certificate in {options.state_dir}: run `acmeda device enroll` first")
    try:
        acme = open_account(options, state, http)
        current = device.certificate
        due, reason = _renewal_due(acme, current, options.now(), force)
        if not due:
            return Outcome(False, current, reason)
        event_log, note = boot_posture_log(options)
        with Tpm(options.tcti) as tpm:
            ak = _current_ak(acme, tpm, state, options)
            key = tpm.create_certificate_key()
            chain = _renewed_chain(acme, tpm, key, ak, deadline, cert_id(current), event_log)
    finally:
        http.close()
    record = DeviceRecord(options.directory, key, chain)
    state.save_device(record)
    return Outcome(True, record.certificate, _with_note(f"renewed ({reason})", event_log, note))


def renewal_time(window_start: datetime, window_end: datetime, certificate: x509.Certificate) -> datetime:
    """RFC 9773 §4.2: a uniformly distributed point of the suggested window. It is drawn from
    the certificate's serial number (random, RFC 8555 §7.4 servers make it so), so every run
    of a periodic `renew` picks the same point and a fleet's renewals spread over the window."""
    fraction = int.from_bytes(hashlib.sha256(str(certificate.serial_number).encode()).digest()[:8], "big") / 2**64
    return window_start + (window_end - window_start) * fraction


def _renewal_due(acme: AcmeClient, certificate: x509.Certificate, now: datetime, force: bool) -> tuple[bool, str]:
    if force:
        return True, "forced"
    if "renewalInfo" in acme.directory:
        window = acme.renewal_info(certificate)
        when = renewal_time(window.start, window.end, certificate)
        span = f"the CA's renewal window {window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M} UTC"
        if now >= when:
            return True, f"inside {span}"
        return False, f"not due: renewing at {when:%Y-%m-%d %H:%M:%S} UTC, inside {span}"
    # No ARI: renew after two thirds of the lifetime, as ARI servers commonly suggest.
    start = certificate.not_valid_before_utc + (certificate.not_valid_after_utc - certificate.not_valid_before_utc) * 2 / 3
    if now >= start:
        return True, "two thirds of the lifetime have passed (the CA offers no renewal information)"
    return False, f"not due before {start:%Y-%m-%d %H:%M:%S} UTC (the CA offers no renewal information)"


def _renewed_chain(acme: AcmeClient, tpm: Tpm, key: KeyBlob, ak: AkRecord, deadline: float, replaces: str,
                   event_log: EventLog | None) -> bytes:
    try:
        return obtain_certificate(acme, tpm, key, ak, deadline, replaces=replaces, event_log=event_log)
    except AcmeProblem as problem:
        if problem.code != "alreadyReplaced":
            raise
    # An earlier renewal's order claimed the certificate and did not finish: order without `replaces`.
    return obtain_certificate(acme, tpm, key, ak, deadline, event_log=event_log)
