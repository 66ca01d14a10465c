"""Order flows (RFC 8555 §7.4, RFC 9773 `replaces`): new order, views, authorization deactivation."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from ca.challenges import ChallengeType
from ca.identifiers import Identifier, parse_identifier
from ca.issuance import Profile, profile_for
from ca.model import Status, authorization_status, order_status
from ca.problems import (
    AcmeProblem, AlreadyReplaced, Compound, Malformed, RateLimited, RejectedIdentifier, Subproblem,
)
from ca.renewal import issuer_key_id, parse_own_cert_id
from ca.services import Services
from ca.storage import repository as repo
from ca.storage.records import Account, Authorization, Certificate, Challenge, Order

MAX_IDENTIFIERS = 100


@dataclass(frozen=True)
class OrderView:
    order: Order
    status: Status
    authz_ids: tuple[str, ...]
    authorizations: tuple[Authorization, ...] = ()  # when loaded with the order


@dataclass(frozen=True)
class AuthzView:
    authz: Authorization
    status: Status
    challenges: tuple[Challenge, ...]


def parse_order_identifiers(value: Any) -> list[Identifier]:
    if not isinstance(value, list) or not value:
        raise Malformed("identifiers must be a non-empty array")
    if len(value) > MAX_IDENTIFIERS:
        raise Malformed(f"an order may name at most {MAX_IDENTIFIERS} identifiers")
    identifiers, problems = [], []
    for item in value:
        try:
            identifiers.append(parse_identifier(item))
        except AcmeProblem as problem:
            problems.append((problem, item))
    if problems:
        _raise_identifier_problems(problems)
    if len(set(identifiers)) != len(identifiers):
        raise Malformed("identifiers must not repeat")
    return identifiers


def _raise_identifier_problems(problems: list[tuple[AcmeProblem, Any]]) -> None:
    """One bad identifier: its problem. Several: a compound problem listing each (RFC 8555 §6.7.1)."""
    subproblems = tuple(Subproblem(problem, _RawIdentifier(item)) for problem, item in problems)
    if len(problems) == 1:
        problem = problems[0][0]
        raise type(problem)(problem.detail, subproblems=subproblems)
    raise Compound(f"{len(problems)} identifiers are unacceptable; see subproblems", subproblems=subproblems)


@dataclass(frozen=True)
class _RawIdentifier:
    """An identifier as the client sent it (it did not parse, so it is echoed, not canonicalised)."""

    raw: Any

    def to_json(self) -> Any:
        return self.raw


def _parse_time(payload: dict[str, Any], name: str) -> datetime | None:
    value = payload.get(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"{name} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise Malformed(f"{name} must carry a time zone")
    # The same instant in UTC: orders are stored and rendered in UTC (with a Z).
    return moment.astimezone(timezone.utc)


def _validity_window(payload: dict[str, Any], profile: Profile, now: datetime) -> tuple[datetime | None, datetime | None]:
    not_before, not_after = _parse_time(payload, "notBefore"), _parse_time(payload, "notAfter")
    start = not_before or now
    if not_before is not None and not (now - timedelta(hours=1) <= not_before <= now + timedelta(days=7)):
        raise Malformed("notBefore must lie between one hour ago and seven days from now")
    if not_after is not None and not (start < not_after <= start + profile.lifetime):
        raise Malformed(f"notAfter must be after notBefore and at most {profile.lifetime} after it (profile {profile.name})")
    return not_before, not_after


async def new_order(services: Services, account: Account, payload: dict[str, Any]) -> OrderView:
    now = services.clock.now()
    identifiers = parse_order_identifiers(payload.get("identifiers"))
    profile = profile_for(identifiers, services.profiles)
    not_before, not_after = _validity_window(payload, profile, now)
    order = Order(
        id=repo.new_id(), account_id=account.id, status=Status.PENDING.value,
        identifiers=[i.to_json() for i in identifiers], profile=profile.name,
        expires=now + services.config.order_lifetime, not_before=not_before, not_after=not_after,
        created_at=now,
    )
    async with services.store.transaction() as tx:
        await _check_rate_limit(tx, services, account, now)
        if "replaces" in payload:
            order.replaces = await _claim_replacement(tx, services, account, payload["replaces"], order, identifiers)
        await repo.insert(tx, order)
        authz_ids = [await _add_authorization(tx, order, identifier, services.validators.offered_for(identifier))
                     for identifier in identifiers]
    return OrderView(order, Status.PENDING, tuple(authz_ids))


async def _check_rate_limit(tx: repo.Transaction, services: Services, account: Account, now: datetime) -> None:
    limit = services.config.orders_per_account_per_hour
    if limit <= 0:
        return
    since = now - timedelta(hours=1)
    if await repo.orders_created_since(tx, account.id, since) >= limit:
        raise RateLimited(f"too many new orders: at most {limit} per account per hour", headers={"Retry-After": "60"})


async def _claim_replacement(tx: repo.Transaction, services: Services, account: Account, cert_id: Any,
                             order: Order, identifiers: Sequence[Identifier]) -> str:
    """RFC 9773 §5: mark the named certificate replaced by this order, once."""
    if not isinstance(cert_id, str):
        raise Malformed("replaces must be an ARI certificate identifier string")
    # Both halves of the certID, as renewalInfo checks them: a serial alone may be another CA's.
    serial = parse_own_cert_id(cert_id, issuer_key_id(services.authority.intermediate))
    cert = await repo.get(tx, Certificate, serial)
    if cert is None or cert.account_id != account.id:
        raise Malformed(f"replaces names certificate {cert_id!r}, which this account was not issued", status=404 if cert is None else 400)
    if not {(i["type"], i["value"]) for i in cert.identifiers} & {(i.type.value, i.value) for i in identifiers}:
        raise Malformed("the replacement order shares no identifier with the certificate it replaces")
    if cert.replaced_by is not None and not await _replacement_failed(tx, cert.replaced_by, order.created_at):
        raise AlreadyReplaced(f"certificate {cert_id} has already been replaced")
    # Compare-and-set on the replaced_by just read: of two concurrent claims only one succeeds.
    if cert.replaced_by is None:
        claimed = await tx.run('UPDATE "certificate" SET replaced_by = ? WHERE serial = ? AND replaced_by IS NULL',
                               order.id, serial)
    else:
        claimed = await tx.run('UPDATE "certificate" SET replaced_by = ? WHERE serial = ? AND replaced_by = ?',
                               order.id, serial, cert.replaced_by)
    if claimed != 1:
        raise AlreadyReplaced(f"certificate {cert_id} has already been replaced")
    return cert_id


async def _replacement_failed(tx: repo.Transaction, order_id: str, now: datetime) -> bool:
    """Whether an earlier replacing order is invalid as clients see it. Expiry and failed
    authorizations are derived on read (`order_status`), never stored, so the stored status
    alone would keep an abandoned replacement blocking the certificate forever."""
    found = await repo.order_with_authorizations(tx, order_id)
    if found is None:  # orders are never deleted; should one be, keep its claim (fail closed)
        return False
    return derived_status(*found, now) is Status.INVALID


def derived_status(order: Order, authzs: Sequence[Authorization], now: datetime) -> Status:
    """The order's status as clients see it: expiry and its authorizations' outcomes applied."""
    statuses = [authorization_status(Status(a.status), a.expires, now) for a in authzs]
    return order_status(Status(order.status), order.expires, statuses, now)


async def _add_authorization(tx: repo.Transaction, order: Order, identifier: Identifier,
                             offered: Sequence[ChallengeType]) -> str:
    wildcard = identifier.is_wildcard
    value = identifier.value[2:] if wildcard else identifier.value
    authz = Authorization(
        id=repo.new_id(), order_id=order.id, account_id=order.account_id, identifier_type=identifier.type.value,
        identifier_value=value, wildcard=wildcard, status=Status.PENDING.value, expires=order.expires,
    )
    if not offered:
        raise RejectedIdentifier(f"no challenge type able to validate {identifier} is enabled on this server")
    await repo.insert(tx, authz)
    await repo.insert_all(tx, [Challenge(id=repo.new_id(), authz_id=authz.id, type=kind.value,
                                         token=secrets.token_urlsafe(32), status=Status.PENDING.value)
                               for kind in offered])
    return authz.id


async def load_order(services: Services, order_id: str, account: Account) -> OrderView:
    now = services.clock.now()
    async with services.store.read() as tx:
        found = await repo.order_with_authorizations(tx, order_id)
    order, authzs = found or (None, [])
    order = repo.check_owned(order, account.id, "order")
    return OrderView(order, derived_status(order, authzs, now), tuple(a.id for a in authzs), tuple(authzs))


async def load_authorization(services: Services, authz_id: str, account: Account) -> AuthzView:
    async with services.store.read() as tx:
        found = await repo.authorization_with_challenges(tx, authz_id)
    authz, challenges = found or (None, [])
    authz = repo.check_owned(authz, account.id, "authorization")
    status = authorization_status(Status(authz.status), authz.expires, services.clock.now())
    return AuthzView(authz, status, tuple(challenges))


async def deactivate_authorization(services: Services, authz_id: str, account: Account) -> AuthzView:
    """§7.5.2: a pending or valid authorization may be deactivated; its order becomes invalid."""
    view = await load_authorization(services, authz_id, account)
    if view.status not in (Status.PENDING, Status.VALID):
        raise Malformed(f"an authorization that is {view.status.value} cannot be deactivated")
    async with services.store.transaction() as tx:
        done = await repo.transition(tx, Authorization, authz_id,
                                     [Status.PENDING.value, Status.VALID.value], status=Status.DEACTIVATED.value)
        if not done:
            raise Malformed("the authorization changed state concurrently; fetch it again")
        await repo.transition(tx, Order, view.authz.order_id,
                              [Status.PENDING.value, Status.READY.value], status=Status.INVALID.value)
    return await load_authorization(services, authz_id, account)
