"""Challenge responses and their validation (RFC 8555 §7.5.1, §8).

A client's POST moves a pending challenge to `processing` (once: a token validates
once) and starts validation in the background; the result moves the challenge, its
authorization and, when all its authorizations are valid, its order in one transaction.
A replica that dies mid-validation leaves `processing` rows that `resume_stale` picks up.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from ca.challenges import ChallengeType, ValidationRequest, ValidationResult, key_authorization
from ca.challenges.device_attest import att_obj_from_payload
from ca.evidence_json import evidence_to_json
from ca.identifiers import Identifier, IdentifierType
from ca.model import Status, authorization_status
from ca.problems import AcmeProblem, Connection, Malformed, ServerInternal, Unauthorized, not_found
from ca.services import Services
from ca.storage import repository as repo
from ca.storage.records import Account, Authorization, Challenge, Order

log = logging.getLogger(__name__)


async def respond(services: Services, challenge_id: str, account: Account, payload: dict[str, Any] | None) -> tuple[Challenge, str]:
    """Handle a POST to a challenge URL; return the challenge and its authorization id."""
    async with services.store.transaction() as tx:
        found = await repo.challenge_with_authorization(tx, challenge_id)
        if found is None:
            raise not_found("challenge")
        challenge, authz, _ = found
        if authz.account_id != account.id:
            raise Unauthorized("the challenge belongs to a different account")
        if payload is None or challenge.status != Status.PENDING.value:
            return challenge, authz.id  # POST-as-GET, or a repeated response: report the state
        _check_payload(challenge.type, payload)
        status = authorization_status(Status(authz.status), authz.expires, services.clock.now())
        if status is not Status.PENDING:
            raise Malformed(f"the authorization is {status.value}; its challenges can no longer be answered")
        now = services.clock.now()
        claimed = await repo.transition(tx, Challenge, challenge.id, [Status.PENDING.value],
                                        status=Status.PROCESSING.value, processing_since=now, payload=payload)
    if claimed:
        challenge.status, challenge.processing_since = Status.PROCESSING.value, now
        if challenge.type != ChallengeType.DEVICE_ATTEST_01.value:
            schedule(services, challenge.id)
            return challenge, authz.id
        # device-attest-01 needs no network: verifying is a millisecond of CPU, so answer with the
        # outcome rather than make the device poll. It still runs as its own task, shielded: a
        # client that hangs up does not cancel it (and in bench/device.py awaiting it in place was
        # a third slower at concurrency 8). The claim above is committed first, so a crash here
        # leaves a `processing` challenge that `resume_stale` finishes.
        await asyncio.shield(schedule(services, challenge.id))
    async with services.store.read() as tx:  # the outcome, or the state another request left
        fresh = await repo.get(tx, Challenge, challenge_id)
    assert fresh is not None
    return fresh, authz.id


def _check_payload(kind: str, payload: dict[str, Any]) -> None:
    """Refuse a malformed response while the challenge is still pending, so the client can fix it."""
    if kind == ChallengeType.DEVICE_ATTEST_01.value:
        att_obj_from_payload(payload)


_tasks: set[asyncio.Task] = set()


def schedule(services: Services, challenge_id: str) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(validate(services, challenge_id))
    _tasks.add(task)  # keep a reference so the task is not collected mid-flight
    task.add_done_callback(_tasks.discard)
    return task


async def validate(services: Services, challenge_id: str) -> None:
    async with services.store.read() as tx:
        found = await repo.challenge_with_authorization(tx, challenge_id)
    if found is None or found[0].status != Status.PROCESSING.value:
        return
    challenge, authz, thumb = found  # thumb: the account key's RFC 7638 thumbprint, kept since it registered
    identifier = Identifier(IdentifierType(authz.identifier_type), authz.identifier_value)
    request = ValidationRequest(identifier, challenge.token, key_authorization(challenge.token, thumb),
                                challenge.payload or {}, thumb)
    result, problem = await _run_validator(services, challenge.type, request)
    await _record_outcome(services, challenge, authz, result, problem)


async def _run_validator(services: Services, kind: str, request: ValidationRequest) -> tuple[ValidationResult | None, AcmeProblem | None]:
    timeout = services.config.validation_timeout.total_seconds()
    try:
        validator = services.validators.validator_for(kind)
        return await asyncio.wait_for(validator.validate(request), timeout), None
    except AcmeProblem as problem:
        return None, problem
    except asyncio.TimeoutError:
        return None, Connection(f"validation did not finish within {timeout:g} seconds")
    except Exception:
        log.exception("validator %s failed unexpectedly for %s", kind, request.identifier)
        return None, ServerInternal("the validator failed unexpectedly; the error is logged on the server")


async def _record_outcome(services: Services, challenge: Challenge, authz: Authorization,
                          result: ValidationResult | None, problem: AcmeProblem | None) -> None:
    now = services.clock.now()
    valid = problem is None
    outcome = Status.VALID if valid else Status.INVALID
    async with services.store.transaction() as tx:
        moved = await repo.transition(
            tx, Challenge, challenge.id, [Status.PROCESSING.value], status=outcome.value,
            validated=now if valid else None, error=None if valid else _error_doc(problem, authz),
            record=[dict(r) for r in result.records] if result and result.record else None,
            payload=None,  # draft-ietf-acme-device-attest §7.2: keep no attestation payload once validated
        )
        if not moved:
            return  # another replica recorded the outcome first
        evidence = _stored_evidence(result, now)
        decided = await repo.transition(tx, Authorization, authz.id, [Status.PENDING.value],
                                        status=outcome.value, evidence=evidence)
        if decided:  # not when another of its challenges decided the authorization first (§7.1.6)
            await _advance_order(tx, authz.order_id, valid)


def _stored_evidence(result: ValidationResult | None, verified_at: datetime) -> dict[str, Any] | None:
    """The evidence kept on the authorization until finalize, its `attested_at` set to when the CA
    verified it: the certificate's attestedAt (docs/certificate-profile.md). A format's own time
    (an Apple leaf's notBefore, Azure createdOn, the EC2 launch time) is not that, and nothing
    after this point reads it: identifier, trust and first-use policy ran on the evidence as
    verified, and the challenge's validation record keeps the format's time."""
    if result is None or result.evidence is None:
        return None
    return evidence_to_json(replace(result.evidence, attested_at=verified_at))


def _error_doc(problem: AcmeProblem | None, authz: Authorization) -> dict[str, Any]:
    assert problem is not None
    doc = problem.to_json()
    doc.pop("status", None)
    return doc


async def _advance_order(tx: repo.Transaction, order_id: str, authz_valid: bool) -> None:
    if not authz_valid:
        await repo.transition(tx, Order, order_id, [Status.PENDING.value], status=Status.INVALID.value)
        return
    await repo.mark_order_ready_if_authorized(tx, order_id)


async def resume_stale(services: Services) -> int:
    """Re-run validations left `processing` by a replica that stopped; returns how many."""
    older_than = services.clock.now() - 2 * services.config.validation_timeout
    claimed = []
    async with services.store.transaction() as tx:
        for challenge in await repo.stale_processing_challenges(tx, older_than):
            # Claim it by moving its timestamp on, only from the value read: under PostgreSQL's
            # READ COMMITTED another replica may have read the same row, and only one claim moves it.
            if await repo.claim_stale_challenge(tx, challenge.id, challenge.processing_since, services.clock.now()):
                claimed.append(challenge.id)
    for challenge_id in claimed:
        schedule(services, challenge_id)
    return len(claimed)
