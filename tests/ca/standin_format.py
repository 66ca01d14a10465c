"""A TEST-ONLY stand-in attestation format, used only to test the dispatch plumbing of
`attestation.verify_attestation` and `ca.challenges.device_attest`. It is not a real format,
is never registered in `attestation.registry`, and proves nothing about any device.

Its statement is `{"alg": -8, "pub": <32-octet Ed25519 key>, "sig": <signature>, "serial": <text>}`:
it checks `sig` over `att_to_be_signed` with `pub`, and reports `pub` as the attested key and
`serial` as a permanent identifier (with `assigner` when given) or, when `hwType` is given,
as a hardware module. It checks no chain and no trust store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import cbor2
from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from attestation.context import VerificationContext
from attestation.errors import InvalidSignature, MalformedStatement, RequirementFailed
from attestation.evidence import Evidence, HardwareModule, PermanentIdentifier, TrustLevel
from attestation.format import Format, key_authorization_binding

NAME = "standin"
COSE_EDDSA = -8


def _field(stmt: Mapping[str, Any], name: str, kind: type) -> Any:
    value = stmt.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedStatement(f"standin: attStmt.{name} is missing or not a {kind.__name__}")
    return value


def verify(stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
    if _field(stmt, "alg", int) != COSE_EDDSA:
        raise RequirementFailed("standin: attStmt.alg is not EdDSA (-8)")
    pub, sig, serial = _field(stmt, "pub", bytes), _field(stmt, "sig", bytes), _field(stmt, "serial", str)
    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(pub)
    except ValueError as exc:
        raise MalformedStatement(f"standin: attStmt.pub is not an Ed25519 key: {exc}") from exc
    try:
        key.verify(sig, ctx.binding.att_to_be_signed)
    except _BadSignature:
        raise InvalidSignature("standin: sig does not verify over attToBeSigned with attStmt.pub") from None
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    hw_type = stmt.get("hwType")
    if hw_type is not None:
        return Evidence(fmt=NAME, public_key=spki, trust_level=TrustLevel.SOFTWARE,
                        hardware_modules=(HardwareModule(str(hw_type), serial.encode()),))
    perm = () if serial == "" else (PermanentIdentifier(serial, stmt.get("assigner")),)
    return Evidence(fmt=NAME, public_key=spki, trust_level=TrustLevel.SOFTWARE, permanent_identifiers=perm,
                    attested_at=ctx.now)


FORMAT = Format(name=NAME, verify=verify, acme_binding=key_authorization_binding)


@dataclass
class Device:
    """The device side of the stand-in: a key and a serial number."""

    serial: str = "SN-0001"
    key: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)

    @property
    def spki(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    def statement(self, att_to_be_signed: bytes, **extra: Any) -> dict[str, Any]:
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"alg": COSE_EDDSA, "pub": raw, "sig": self.key.sign(att_to_be_signed), "serial": self.serial, **extra}

    def att_obj(self, att_to_be_signed: bytes, fmt: str = NAME, **extra: Any) -> bytes:
        return cbor2.dumps({"fmt": fmt, "attStmt": self.statement(att_to_be_signed, **extra)})
