"""Wire models: ACME resources rendered to JSON (RFC 8555 §7.1), in one place."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

from ca.links import Links
from ca.model import Status
from ca.storage.records import Account, Authorization, Challenge, Order


def rfc3339(moment: datetime) -> str:
    """UTC with a Z. An aware time in another offset is converted first: formatting its wall
    clock with a Z would name a different instant. Naive times are UTC (ca.storage.sql)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def account_json(account: Account, links: Links) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "status": account.status,
        "contact": list(account.contact),
        "orders": links.account_orders(account.id),
    }
    if account.tos_agreed:
        doc["termsOfServiceAgreed"] = True
    return doc


def challenge_json(challenge: Challenge, links: Links) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": challenge.type,
        "url": links.challenge(challenge.id),
        "status": challenge.status,
        "token": challenge.token,
    }
    if challenge.validated is not None:
        doc["validated"] = rfc3339(challenge.validated)
    if challenge.error:
        doc["error"] = challenge.error
    if challenge.record:
        doc["validationRecord"] = challenge.record
    return doc


def authorization_json(authz: Authorization, status: Status, challenges: Sequence[Challenge], links: Links) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "identifier": {"type": authz.identifier_type, "value": authz.identifier_value},
        "status": status.value,
        "expires": rfc3339(authz.expires),
        "challenges": [challenge_json(c, links) for c in challenges],
    }
    if authz.wildcard:
        doc["wildcard"] = True
    return doc


def order_json(order: Order, status: Status, authz_ids: Sequence[str], links: Links) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "status": status.value,
        "expires": rfc3339(order.expires),
        "identifiers": list(order.identifiers),
        "authorizations": [links.authorization(a) for a in authz_ids],
        "finalize": links.finalize(order.id),
    }
    if order.not_before:
        doc["notBefore"] = rfc3339(order.not_before)
    if order.not_after:
        doc["notAfter"] = rfc3339(order.not_after)
    if order.error:
        doc["error"] = order.error
    if status is Status.VALID and order.certificate_id:
        doc["certificate"] = links.certificate(order.certificate_id)
    if order.replaces:
        doc["replaces"] = order.replaces
    return doc
