"""Which challenges each identifier is offered, and the validator lookup."""

from __future__ import annotations

import pytest

from ca.challenges import ChallengeType, ValidationRequest, ValidationResult
from ca.challenges.registry import CHALLENGES_FOR, Validators, challenge_types_for
from ca.identifiers import Identifier, IdentifierType
from ca.problems import Malformed

H, D, T, A = ChallengeType.HTTP_01, ChallengeType.DNS_01, ChallengeType.TLS_ALPN_01, ChallengeType.DEVICE_ATTEST_01


class Stub:
    async def validate(self, request: ValidationRequest) -> ValidationResult:
        return ValidationResult({})


@pytest.mark.parametrize("identifier, expected", [
    (Identifier(IdentifierType.DNS, "example.test"), (H, D, T)),
    (Identifier(IdentifierType.DNS, "*.example.test"), (D,)),
    (Identifier(IdentifierType.IP, "127.0.0.1"), (H, T)),
    (Identifier(IdentifierType.IP, "::1"), (H, T)),
    (Identifier(IdentifierType.PERMANENT_IDENTIFIER, "serial"), (A,)),
    (Identifier(IdentifierType.HARDWARE_MODULE, "hwm"), (A,)),
])
def test_challenge_types_for(identifier, expected):
    assert challenge_types_for(identifier) == expected


def test_every_identifier_type_has_challenges():
    assert set(CHALLENGES_FOR) == set(IdentifierType)


def test_challenge_type_values():
    assert [t.value for t in ChallengeType] == ["http-01", "dns-01", "tls-alpn-01", "device-attest-01"]


def test_validator_for_accepts_enum_and_wire_name():
    http = Stub()
    validators = Validators({H: http})
    assert validators.validator_for(H) is http
    assert validators.validator_for("http-01") is http
    assert validators.enabled("http-01") and not validators.enabled(D) and not validators.enabled("nope")


@pytest.mark.parametrize("kind, detail", [
    ("dns-01", "challenge type dns-01 is disabled on this server"),
    (D, "challenge type dns-01 is disabled on this server"),
    ("http-02", "unknown challenge type 'http-02'"),
])
def test_validator_for_rejections(kind, detail):
    with pytest.raises(Malformed) as caught:
        Validators({H: Stub()}).validator_for(kind)
    assert detail in caught.value.detail


def test_offered_for_leaves_out_disabled_types():
    validators = Validators({D: Stub(), T: Stub()})
    assert validators.offered_for(Identifier(IdentifierType.DNS, "example.test")) == (D, T)
    assert validators.offered_for(Identifier(IdentifierType.IP, "127.0.0.1")) == (T,)
    assert validators.offered_for(Identifier(IdentifierType.HARDWARE_MODULE, "hwm")) == ()


def test_no_validators_disables_everything():
    assert Validators().offered_for(Identifier(IdentifierType.DNS, "example.test")) == ()
