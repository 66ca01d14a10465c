"""Finalization and issuance, certificate download, revocation and renewal info (RFC 8555 §7.4–7.6, RFC 9773).

Issuance is two transactions around one signature: `ready → processing` records the CSR,
the serial and the issuance time; `processing → valid` stores the certificate. Everything
the signature depends on is stored first, so a replica that stops in between leaves an
order that `resume_stale` re-signs with the same serial and validity: the same certificate,
never a second one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import ssl
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import josepy as jose
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.auth import AuthenticatedRequest, account_key
from ca.challenges.device_attest import csr_key_matches_evidence
from ca.csr import check_csr
from ca.evidence_json import evidence_from_json
from ca.identifiers import Identifier, IdentifierType, parse_identifier
from ca.issuance import ExtraExtension, IssuanceRequest, new_serial
from ca.messages import rfc3339
from ca.model import ALLOWED_REVOCATION_REASONS, Status
from ca.nonces import b64url_decode
from ca.orders import OrderView, load_order
from ca.posture import CRITICAL as POSTURE_CRITICAL, FACT_FIELDS, issued_evidence, posture_extension, stated_posture
from ca.problems import (
    AlreadyRevoked, BadCSR, BadRevocationReason, Malformed, OrderNotReady, RejectedIdentifier, ServerInternal,
    Subproblem, Unauthorized, not_found,
)
from ca.renewal import RenewalWindow, issuer_key_id, parse_own_cert_id, serial_hex, suggested_window
from ca.services import Services
from ca.storage import repository as repo
from ca.storage.records import Account, Certificate, Order

log = logging.getLogger(__name__)
BACKDATE = timedelta(minutes=1)  # tolerate clients whose clocks run a little behind
STALE_ISSUANCE = timedelta(seconds=30)


def spki_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def account_public_key(account: Account):
    return account_public_key_from_jwk(account_key(account))


async def finalize(services: Services, order_id: str, account: Account, payload: dict[str, Any]) -> OrderView:
    view = await load_order(services, order_id, account)
    if view.status is not Status.READY:
        raise OrderNotReady(f"the order is {view.status.value}; it can be finalized only when ready")
    now = services.clock.now()
    _check_not_after(view.order, now)
    csr_b64 = payload.get("csr")
    if not isinstance(csr_b64, str):
        raise Malformed("finalize payload must carry the CSR in csr (base64url DER)")
    try:
        csr_der = b64url_decode(csr_b64)
    except ValueError:
        raise BadCSR("csr is not unpadded base64url") from None
    identifiers = [parse_identifier(i) for i in view.order.identifiers]
    csr = check_csr(csr_der, identifiers=identifiers, account_public_key=account_public_key(account),
                    key_policy=services.key_policy)
    _check_one_posture(view.authorizations)
    evidences = _evidences(view.authorizations)
    for evidence in evidences:
        csr_key_matches_evidence(spki_der(csr.public_key()), evidence)
    order = view.order
    order.status, order.csr = Status.PROCESSING.value, csr_der
    order.serial, order.issuance_started = serial_hex(new_serial()), now
    # From a stored `pending` too: the order is ready by its authorizations (checked above), and
    # two replicas that validated its last two at once may each have seen the other's pending.
    # A deactivation since stored `invalid`, which this refuses.
    async with services.store.statement() as tx:
        started = await repo.transition(tx, Order, order_id, [Status.READY.value, Status.PENDING.value],
                                        status=order.status, csr=order.csr, serial=order.serial,
                                        issuance_started=order.issuance_started)
    if not started:
        raise OrderNotReady("the order was finalized concurrently")
    if await issue(services, order, evidences):
        order.status, order.certificate_id = Status.VALID.value, order.serial
        return replace(view, order=order, status=Status.VALID)
    return await load_order(services, order_id, account)


def _check_not_after(order: Order, now: datetime) -> None:
    """A requested notAfter that has passed cannot be signed. Refused before anything is stored, so
    the order stays as it was; RFC 8555 has no closer problem type than malformed. A notAfter
    still ahead is also after the notBefore issuance picks: a requested one was checked at order
    creation, and `_backdated` never goes later than `now`'s backdate or `notAfter - lifetime`."""
    if order.not_after is not None and order.not_after <= now:
        raise Malformed(f"the order's notAfter {rfc3339(order.not_after)} has passed; "
                        "a certificate cannot end before it is issued: create a new order")


def _check_one_posture(authorizations) -> None:
    """One certificate states one posture. Each identifier of a device order is proven by its own
    evidence; when those would not write the same posture extension (attestedAt aside), no one
    extension is true of every identifier: a hardware, key-attested posture would also cover an
    identifier proven only by replayable keyless evidence. Refused before anything is stored,
    so the order stays ready. The usual multi-identifier order (one device attestation naming
    serial and UDID, answered per authorization) states the same facts and passes."""
    stated: dict[tuple, list[Identifier]] = {}
    for authz in authorizations:
        if authz.evidence:
            identifier = Identifier(IdentifierType(authz.identifier_type), authz.identifier_value)
            stated.setdefault(stated_posture(evidence_from_json(authz.evidence)), []).append(identifier)
    if len(stated) <= 1:
        return
    groups = sorted(((sorted(ids), statement) for statement, ids in stated.items()), key=lambda group: group[0])
    differing = _differing_fields([statement for _ids, statement in groups])
    described = [(ids, _describe_statement(statement, differing)) for ids, statement in groups]
    raise RejectedIdentifier(
        "the order's identifiers were proven by evidence that states different facts ("
        + "; ".join(f"{', '.join(map(str, ids))}: {text}" for ids, text in described)
        + "): one certificate states one posture; order them separately",
        subproblems=tuple(Subproblem(RejectedIdentifier(f"proven by evidence stating {text}"), identifier)
                          for ids, text in described for identifier in ids),
    )


def _statement_fields(statement: tuple) -> dict[str, Any]:
    """A stated posture by its DevicePosture field names; absent facts are None."""
    fmt, trust_level, posture = statement
    fields: dict[str, Any] = {"format": fmt, "trustLevel": trust_level.value}
    fields.update({name: getattr(posture, attr) for attr, name in FACT_FIELDS.items()})
    fields["extra"] = posture.extra or None
    return fields


def _differing_fields(statements: list[tuple]) -> list[str]:
    views = [_statement_fields(s) for s in statements]
    return [name for name in views[0] if len({repr(v[name]) for v in views}) > 1]


def _describe_statement(statement: tuple, names: list[str]) -> str:
    fields = _statement_fields(statement)

    def text(value: Any) -> str:
        if value is None:
            return "absent"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, tuple):
            return ", ".join(f"{k}={v}" for k, v in value)
        return str(value)

    return ", ".join(f"{name} {text(fields[name])}" for name in names)


def _evidences(authorizations) -> list:
    return [evidence_from_json(a.evidence) for a in authorizations if a.evidence]


async def _evidence_of(services: Services, order_id: str) -> list:
    async with services.store.read() as tx:
        return _evidences(await repo.authorizations_of_order(tx, order_id))


async def issue(services: Services, order: Order, evidences: list) -> bool:
    """Sign the certificate of an order in `processing` and store it; True if this call stored it."""
    try:
        request = _issuance_request(services, order, evidences)
        issued = services.issuer.issue(request)
    except Exception:
        log.exception("issuance failed for order %s", order.id)
        await _fail_order(services, order.id, ServerInternal("issuance failed; the error is logged on the server"))
        return False
    cert = Certificate(
        serial=order.serial, account_id=order.account_id, order_id=order.id, der=issued.der,
        key_spki_sha256=hashlib.sha256(spki_der(request.public_key)).hexdigest(),
        identifiers=list(order.identifiers), not_before=issued.not_before, not_after=issued.not_after,
    )
    return await repo.record_certificate(services.store, cert)


def _issuance_request(services: Services, order: Order, evidences: list) -> IssuanceRequest:
    csr = x509.load_der_x509_csr(order.csr)
    profile = services.profiles[order.profile]
    not_before = order.not_before or _backdated(order.issuance_started, order.not_after, profile.lifetime)
    if order.not_after:
        profile = replace(profile, lifetime=order.not_after - not_before)
    extensions = tuple(_posture_extensions(evidences, order.issuance_started))
    identifiers = tuple(parse_identifier(i) for i in order.identifiers)
    return IssuanceRequest(
        public_key=csr.public_key(), identifiers=identifiers, profile=profile, serial=int(order.serial, 16),
        not_before=not_before, extra_extensions=extensions, device_pseudonym=_pseudonym(services, identifiers),
    )


def _backdated(issued_at: datetime, not_after: datetime | None, lifetime: timedelta) -> datetime:
    """notBefore of an order that names none: BACKDATE early, but never more than `lifetime` before
    a requested notAfter. Order creation lets notAfter reach now + lifetime; clamping the backdate
    (rather than shortening the certificate) honours that notAfter exactly and still keeps
    notAfter - notBefore within the profile's lifetime."""
    backdated = issued_at - BACKDATE
    return backdated if not_after is None else max(backdated, not_after - lifetime)


def _pseudonym(services: Services, identifiers) -> str | None:
    """In privacy mode a device is named by a keyed hash of its identifier: stable across renewals,
    so relying parties can tell devices apart, but not reversible to the serial number."""
    if not services.config.device_privacy or not all(i.type.is_device for i in identifiers):
        return None
    digest = hmac.new(services.pseudonym_key, "\n".join(sorted(str(i) for i in identifiers)).encode(), hashlib.sha256)
    return "device-" + base64.b32encode(digest.digest()[:20]).decode().lower()


def _posture_extensions(evidences: list, issued_at: datetime) -> list:
    """The one posture every evidence of the order states (`_check_one_posture` refused the
    rest at finalize; an order stored before that check fails here rather than overstate).
    attestedAt is the earliest verification among them, so a gate bounding the age of the
    evidence bounds the oldest. `attested_at` of stored evidence is the verification time
    (`ca.validation._record_outcome`); issuance time stands in only for evidence stored without
    one."""
    if not evidences:
        return []
    if len({stated_posture(e) for e in evidences}) > 1:
        raise ValueError("the order's evidences state different postures; one certificate states one")
    attested_at = min(e.attested_at or issued_at for e in evidences)
    evidence = issued_evidence(evidences[0])
    return [ExtraExtension(posture_extension(evidence, attested_at), critical=POSTURE_CRITICAL)]


async def _fail_order(services: Services, order_id: str, problem) -> None:
    doc = problem.to_json()
    async with services.store.statement() as tx:
        await repo.transition(tx, Order, order_id, [Status.PROCESSING.value],
                              status=Status.INVALID.value, error=doc)


async def resume_stale(services: Services) -> int:
    older_than = services.clock.now() - STALE_ISSUANCE
    async with services.store.read() as tx:
        stale = await repo.stale_processing_orders(tx, older_than)
    for order in stale:
        await issue(services, order, await _evidence_of(services, order.id))
    return len(stale)


async def certificate_chain(services: Services, serial: str, account: Account) -> bytes:
    async with services.store.read() as tx:
        cert = await repo.owned(tx, Certificate, serial, account.id, "certificate")
    return ssl.DER_cert_to_PEM_cert(cert.der).encode("ascii") + services.authority.intermediate_pem


async def revoke(services: Services, request: AuthenticatedRequest) -> None:
    """§7.6: by the issuing account (or one holding valid authorizations for every identifier) or by the certificate's key."""
    payload = request.payload()
    cert_b64, reason = payload.get("certificate"), payload.get("reason", 0)
    if not isinstance(cert_b64, str):
        raise Malformed("revocation payload must carry the certificate (base64url DER)")
    if not isinstance(reason, int) or isinstance(reason, bool) or reason not in ALLOWED_REVOCATION_REASONS:
        raise BadRevocationReason(f"reason {reason!r} is not allowed; allowed: {sorted(ALLOWED_REVOCATION_REASONS)}")
    try:
        presented = x509.load_der_x509_certificate(b64url_decode(cert_b64))
    except ValueError:
        raise Malformed("certificate is not base64url DER of an X.509 certificate") from None
    except x509.InvalidVersion as exc:  # not a ValueError: it must be caught by name
        raise Malformed(f"certificate version field is {exc.parsed_version}, not 0, 1 or 2 (X.509 v1 to v3)") from None
    async with services.store.transaction() as tx:
        cert = await repo.get(tx, Certificate, serial_hex(presented.serial_number))
        if cert is None or cert.der != presented.public_bytes(serialization.Encoding.DER):
            raise not_found("a certificate issued by this CA with that serial")
        await _authorize_revocation(tx, request, cert, presented, services.clock.now())
        if cert.revoked_at is not None:
            raise AlreadyRevoked(f"certificate {cert.serial} was revoked at {cert.revoked_at:%Y-%m-%dT%H:%M:%SZ}")
        revoked = await tx.run('UPDATE "certificate" SET revoked_at = ?, revocation_reason = ? '
                               'WHERE serial = ? AND revoked_at IS NULL', services.clock.now(), reason, cert.serial)
        if revoked != 1:
            raise AlreadyRevoked(f"certificate {cert.serial} was revoked by a concurrent request")


async def _authorize_revocation(tx: repo.Transaction, request: AuthenticatedRequest, cert: Certificate,
                                presented: x509.Certificate, now: datetime) -> None:
    if request.account is None:  # signed with a jwk: must be the certificate's own key
        if spki_der(account_public_key_from_jwk(request.jwk)) != spki_der(presented.public_key()):
            raise Unauthorized("the JWS key is not the certificate's key")
        return
    if request.account.id == cert.account_id:
        return
    if not await _holds_authorizations(tx, request.account.id, cert.identifiers, now):
        raise Unauthorized("the account neither owns the certificate nor holds valid, unexpired authorizations for all its identifiers")


def account_public_key_from_jwk(jwk: jose.JWK):
    return getattr(jwk.key, "_wrapped", jwk.key)


async def _holds_authorizations(tx: repo.Transaction, account_id: str, identifiers: list[dict], now: datetime) -> bool:
    """Whether the account holds a valid, unexpired authorization for every identifier: an
    expired one proved control once, not now."""
    for ident in identifiers:
        value = ident["value"][2:] if ident["value"].startswith("*.") else ident["value"]
        found = await tx.one(
            'SELECT id FROM "authorization" WHERE account_id = ? AND status = ? AND identifier_type = ? '
            'AND identifier_value = ? AND expires > ? LIMIT 1', account_id, Status.VALID.value, ident["type"], value, now)
        if found is None:
            return False
    return True


async def renewal_info(services: Services, cert_id_text: str) -> RenewalWindow:
    serial = parse_own_cert_id(cert_id_text, issuer_key_id(services.authority.intermediate))
    async with services.store.read() as tx:
        cert = await repo.get(tx, Certificate, serial)
    if cert is None:
        raise not_found("certificate")
    return suggested_window(cert.not_before, cert.not_after, cert.revoked_at is not None, services.clock.now())
