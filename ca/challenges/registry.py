"""Which challenges an identifier is offered, and which validator runs each one.

`CHALLENGES_FOR` is the one table of identifier type → challenge types (RFC 8555 §8,
RFC 8738 §7, RFC 8737, draft-ietf-acme-device-attest). `Validators` is built by the app
factory with one validator per enabled challenge type; a type without a validator is
disabled and is neither offered nor validated.
"""

from __future__ import annotations

from typing import Mapping

from ca.challenges import ChallengeType, Validator
from ca.identifiers import Identifier, IdentifierType
from ca.problems import Malformed

CHALLENGES_FOR: dict[IdentifierType, tuple[ChallengeType, ...]] = {
    IdentifierType.DNS: (ChallengeType.HTTP_01, ChallengeType.DNS_01, ChallengeType.TLS_ALPN_01),
    IdentifierType.IP: (ChallengeType.HTTP_01, ChallengeType.TLS_ALPN_01),
    IdentifierType.PERMANENT_IDENTIFIER: (ChallengeType.DEVICE_ATTEST_01,),
    IdentifierType.HARDWARE_MODULE: (ChallengeType.DEVICE_ATTEST_01,),
}


def challenge_types_for(identifier: Identifier) -> tuple[ChallengeType, ...]:
    """The challenge types an identifier may be validated by, in the order offered."""
    if identifier.is_wildcard:
        # A web server or TLS endpoint proves one host, not a zone (CA/Browser Forum ballot
        # SC45 for the HTTP methods): wildcards need a DNS change, as Let's Encrypt requires.
        return (ChallengeType.DNS_01,)
    return CHALLENGES_FOR[identifier.type]


class Validators:
    """One validator per enabled challenge type."""

    def __init__(self, validators: Mapping[ChallengeType, Validator] | None = None) -> None:
        self._by_type: dict[ChallengeType, Validator] = dict(validators or {})

    def enabled(self, kind: ChallengeType | str) -> bool:
        try:
            return ChallengeType(kind) in self._by_type
        except ValueError:
            return False

    def offered_for(self, identifier: Identifier) -> tuple[ChallengeType, ...]:
        """`challenge_types_for(identifier)` without the disabled types."""
        return tuple(t for t in challenge_types_for(identifier) if t in self._by_type)

    async def close(self) -> None:
        """Release what the validators hold open (HTTP clients)."""
        for validator in self._by_type.values():
            close = getattr(validator, "close", None)
            if close is not None:
                await close()

    def validator_for(self, kind: ChallengeType | str) -> Validator:
        """The validator of a challenge type; `Malformed` if the type is unknown or disabled."""
        try:
            challenge_type = ChallengeType(kind)
        except ValueError:
            raise Malformed(f"unknown challenge type {kind!r}") from None
        try:
            return self._by_type[challenge_type]
        except KeyError:
            raise Malformed(f"challenge type {challenge_type.value} is disabled on this server") from None
