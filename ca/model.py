"""ACME resource states and the pure rules that move between them (RFC 8555 §7.1.6)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Iterable


class Status(str, Enum):
    PENDING = "pending"
    READY = "ready"
    PROCESSING = "processing"
    VALID = "valid"
    INVALID = "invalid"
    DEACTIVATED = "deactivated"
    EXPIRED = "expired"
    REVOKED = "revoked"


# RFC 5280 §5.3.1 reasons a subscriber may give; caCompromise (2) is the CA's to say,
# certificateHold (6) and removeFromCRL (8) have no meaning for short-lived certificates.
ALLOWED_REVOCATION_REASONS = frozenset({0, 1, 3, 4, 5, 9})


def authorization_status(stored: Status, expires: datetime, now: datetime) -> Status:
    """An authorization past its expiry reads as expired, whatever was stored (§7.1.6)."""
    if stored in (Status.PENDING, Status.VALID) and now >= expires:
        return Status.EXPIRED
    return stored


def order_status(stored: Status, expires: datetime, authz_statuses: Iterable[Status], now: datetime) -> Status:
    """The order's status as RFC 8555 §7.1.6 derives it from its authorizations.

    `processing`, `valid` and a stored `invalid` are terminal facts of the order itself;
    before finalization the status follows the authorizations.
    """
    if stored in (Status.PROCESSING, Status.VALID, Status.INVALID):
        return stored
    if now >= expires:
        return Status.INVALID
    statuses = list(authz_statuses)
    if any(s in (Status.INVALID, Status.DEACTIVATED, Status.EXPIRED, Status.REVOKED) for s in statuses):
        return Status.INVALID
    if statuses and all(s is Status.VALID for s in statuses):
        return Status.READY
    return Status.PENDING
