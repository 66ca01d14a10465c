"""device-attest-01 (draft-ietf-acme-device-attest-09 §5): attestation first, policy second.

The client POSTs `{"attObj": base64url(CBOR attestation object)}` to the challenge URL;
unknown members of that object are ignored (§5). The checks run in this order, and the
first that fails decides the problem (see docs/device-attest.md):

1. the payload has `attObj`, a non-empty unpadded base64url string → else `malformed`;
2. the attestation object decodes strictly and names an enabled format → else
   `badAttestationStatement` (the detail lists the enabled formats);
3. the format verifies the statement against the binding it chooses (the key authorization,
   or the token for formats whose external authority signs before the account key is
   known, §5), the trust store and the time now → else `badAttestationStatement` whose
   detail is the verifier's `AttestationError` text, naming the failed check;
4. the device policy admits the evidence (trust level, OS, patch level, boot state) → else
   `badAttestationStatement` naming the rule;
5. the evidence proves at least one device identifier, and the order's identifier is one of
   them octet for octet (§3.2, §4.2) → else `badAttestationStatement` (with a
   `rejectedIdentifier` subproblem for a mismatch);
6. the attested identifier has an owning account (trust on first use, `enroll.first_use`):
   the first account to validate it, with any evidence, owns it, and a later validation
   with bound evidence by another account takes it over; replayable evidence (no challenge
   binding: EC2 identity documents) is admitted only for the owner → else
   `badAttestationStatement`.

The attested key is checked against the CSR at finalize with `csr_key_matches_evidence`
(§8: the attestation authority, the CSR key and the order identifier bind three ways).
Evidence that attests no key (cloud identity tokens) binds the device to the ACME account
key through the key authorization; its certificate carries `keyAttested` FALSE.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from attestation import decode_attestation_object, select_format, verify_statement
from attestation.context import RevocationCheck, TrustStore, VerificationContext
from attestation.errors import AttestationError
from attestation.evidence import Evidence, HardwareModule, PermanentIdentifier
from ca.challenges import ChallengeType, ValidationRequest, ValidationResult
from ca.clock import Clock
from ca.identifiers import Identifier, IdentifierType
from ca.device_policy import DevicePolicy
from ca.problems import BadAttestationStatement, BadCSR, Malformed, RejectedIdentifier, Subproblem, UnsupportedIdentifier

if TYPE_CHECKING:  # the registry imports every format module; only the type is needed here
    from attestation.format import Format

CHALLENGE_TYPE = ChallengeType.DEVICE_ATTEST_01
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def att_obj_from_payload(payload: Any) -> bytes:
    """The attestation object bytes of a device-attest-01 response, or `malformed` naming `attObj`.

    Usable by the front end to refuse a bad response at POST time, before validation starts.
    """
    if not isinstance(payload, Mapping):
        raise Malformed("the device-attest-01 response must be a JSON object with the field \"attObj\"")
    value = payload.get("attObj")
    if value is None:
        raise Malformed("the device-attest-01 response lacks the field \"attObj\"")
    if not isinstance(value, str) or not value:
        raise Malformed("the field \"attObj\" must be a non-empty base64url string")
    if not _BASE64URL.fullmatch(value) or len(value) % 4 == 1:
        raise Malformed("the field \"attObj\" is not base64url without padding (RFC 8555 §6.1)")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):  # unreachable after the checks above; kept for safety
        raise Malformed("the field \"attObj\" is not base64url without padding (RFC 8555 §6.1)") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != value:
        raise Malformed("the field \"attObj\" is not canonical base64url (its last character has stray bits)")
    return raw


def _permanent_identifier_text(p: PermanentIdentifier) -> str | None:
    """The draft §3.1 text form `device-identifier-value ["/" assigner-value]`, or None when the
    value is empty or holds "/" (the ABNF excludes it: "ABC/2.25.1" would read as value ABC
    with an assigner the evidence never stated, so no order identifier can name it)."""
    if not p.value or "/" in p.value:
        return None
    return p.value if p.assigner is None else f"{p.value}/{p.assigner}"


def _hardware_module_text(h: HardwareModule) -> str | None:
    """The draft §4.1 text form `hw-serial-num-value "/" hw-type-value`, or None when the serial
    is not UTF-8 text without "/" (§4: then no order identifier can name it)."""
    try:
        serial = h.serial.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not serial or "/" in serial:
        return None
    return f"{serial}/{h.hw_type}"


def attested_identifiers(evidence: Evidence) -> tuple[Identifier, ...]:
    """The device identifiers the evidence proves, as ACME identifiers in the draft's text form."""
    found = []
    for permanent in evidence.permanent_identifiers:
        text = _permanent_identifier_text(permanent)
        if text is not None:
            found.append(Identifier(IdentifierType.PERMANENT_IDENTIFIER, text))
    for module in evidence.hardware_modules:
        text = _hardware_module_text(module)
        if text is not None:
            found.append(Identifier(IdentifierType.HARDWARE_MODULE, text))
    return tuple(found)


def _describe_attested(evidence: Evidence) -> str:
    names = [str(i) for i in attested_identifiers(evidence)]
    names += [f"permanent-identifier with value {p.value!r} (empty or holding \"/\")"
              for p in evidence.permanent_identifiers if _permanent_identifier_text(p) is None]
    names += [f"hardware-module with serial 0x{h.serial.hex()} and type {h.hw_type} (not UTF-8 text without \"/\")"
              for h in evidence.hardware_modules if _hardware_module_text(h) is None]
    return ", ".join(names)


def check_identifier(identifier: Identifier, evidence: Evidence) -> None:
    """The order's identifier must be one the evidence proves, octet for octet (§3.2, §4.2, §5 step 3)."""
    if not evidence.permanent_identifiers and not evidence.hardware_modules:
        raise BadAttestationStatement("attestation proves no device identifier")
    if identifier in attested_identifiers(evidence):
        return
    rejected = RejectedIdentifier(f"{identifier} is not an identifier the attestation proves")
    raise BadAttestationStatement(
        f"the order's identifier {identifier} does not match the attested identifiers: {_describe_attested(evidence)}",
        subproblems=(Subproblem(rejected, identifier),),
    )


def _validation_record(identifier: Identifier, evidence: Evidence) -> dict[str, Any]:
    record: dict[str, Any] = {
        "fmt": evidence.fmt,
        "trustLevel": evidence.trust_level.value,
        "identifier": identifier.to_json(),
        "attestedIdentifiers": [i.to_json() for i in attested_identifiers(evidence)],
    }
    if evidence.attested_at is not None:
        record["attestedAt"] = evidence.attested_at.isoformat()
    return record


# The attested identifier an ordered alias stands for (consuming a single-use alias), or None.
AliasLookup = Callable[[Identifier, Evidence], Awaitable[Identifier | None]]
# Records the account as the identifier's owner when it has none (bound evidence: takes it
# over); True when the account owns the identifier afterwards.
FirstUse = Callable[[Identifier, Evidence, str], Awaitable[bool]]


class DeviceAttestValidator:
    """The `Validator` of device-attest-01 over the enabled attestation formats."""

    challenge_type = CHALLENGE_TYPE

    def __init__(
        self,
        formats: Mapping[str, Format],
        trust: TrustStore,
        clock: Clock,
        revocation: Mapping[str, RevocationCheck] | None = None,
        policy: DevicePolicy = DevicePolicy(),
        aliases: AliasLookup | None = None,
        first_use: FirstUse | None = None,
    ) -> None:
        self._policy = policy
        self._aliases = aliases
        self._first_use = first_use
        self._formats = dict(formats)
        self._trust = trust
        self._clock = clock
        self._revocation = dict(revocation or {})

    @property
    def enabled_formats(self) -> tuple[str, ...]:
        return tuple(sorted(self._formats))

    async def validate(self, request: ValidationRequest) -> ValidationResult:
        if not request.identifier.type.is_device:
            raise UnsupportedIdentifier(
                f"device-attest-01 validates permanent-identifier and hardware-module identifiers, "
                f"not {request.identifier.type.value}")
        att_obj = att_obj_from_payload(request.payload)
        # Verification is pure CPU work of about a millisecond: no worker thread.
        evidence = self.verify(att_obj, request.token, request.key_authorization)
        self._policy.check(evidence)
        device = await self._check_identifier(request.identifier, evidence)
        await self._check_owner(device, evidence, request.account_thumbprint)
        return ValidationResult(record=_validation_record(request.identifier, evidence), evidence=evidence)

    async def _check_owner(self, device: Identifier, evidence: Evidence, account_thumbprint: str) -> None:
        """Trust on first use, as SPIRE does for EC2 identity documents: evidence without a
        challenge binding could be replayed by anyone who saw it, so it is admitted only for the
        account that owns the identifier. Every successful validation records its account as
        the owner when the identifier has none, whatever the evidence: otherwise an instance
        enrolled through aws-nitro (bound) would be free for a stranger to claim with its
        replayed aws-iid document.

        Bound evidence is admitted regardless of ownership, since it proves possession freshly
        and for this account. It also takes ownership over from another account (in
        `FirstUseRegistry.admit`): such an account controls the device now, which is a stronger
        claim than having been the first to present a document that may have leaked, so the
        legitimate owner evicts a squatter by enrolling once with bound evidence, and an account
        key rollover needs no operator when bound evidence is at hand. The cost: two accounts
        on one instance, one with bound and one with replayable evidence, leave the replayable
        one refused (TOFU admits one account per identifier either way)."""
        if self._first_use is None:
            if evidence.replayable:
                raise BadAttestationStatement(
                    f"the {evidence.fmt} attestation is replayable and this CA keeps no first-use registry")
            return
        owner = await self._first_use(device, evidence, account_thumbprint)
        if evidence.replayable and not owner:
            raise BadAttestationStatement(
                f"{device} was first enrolled by another account, which owns it; replayable {evidence.fmt} "
                "evidence is trusted on first use, for the owning account only")

    async def _check_identifier(self, identifier: Identifier, evidence: Evidence) -> Identifier:
        """The attested identifier the order names: itself, or the one its alias stands for."""
        try:
            check_identifier(identifier, evidence)
            return identifier
        except BadAttestationStatement:
            # An operator-registered alias (an MDM ClientIdentifier that is an enrollment token)
            # may stand for an attested identifier; checked last, as it consumes the alias.
            device = None if self._aliases is None else await self._aliases(identifier, evidence)
            if not device:
                raise
            return device

    def verify(self, att_obj: bytes, token: str, key_authorization: str) -> Evidence:
        """Decode, dispatch and verify; every `AttestationError` becomes `badAttestationStatement`."""
        try:
            obj = decode_attestation_object(att_obj)
            fmt = select_format(obj.fmt, self._formats)
            binding = fmt.acme_binding(token, key_authorization.encode())
            ctx = VerificationContext(binding=binding, now=self._clock.now(), trust=self._trust,
                                      revocation=self._revocation)
            return verify_statement(fmt, obj.att_stmt, ctx)
        except AttestationError as error:
            raise BadAttestationStatement(str(error)) from error


def _canonical_spki(der: bytes) -> bytes:
    """Re-encode a SubjectPublicKeyInfo so that equal keys compare equal (EC point
    compression, RSA parameter NULL); keys `cryptography` cannot load compare as given."""
    try:
        key = serialization.load_der_public_key(der)
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return bytes(der)


def csr_key_matches_evidence(csr_public_key_spki_der: bytes, evidence: Evidence) -> None:
    """At finalize: the CSR's key must be the attested key (draft-09 §8); else `badCSR`.

    Evidence that names no key (a cloud identity token) binds the device to the ACME account
    key through the key authorization instead; the CSR key is then the account's choice, and
    the certificate says so (`keyAttested` FALSE in the posture extension)."""
    if evidence.public_key is None:
        return
    if _canonical_spki(csr_public_key_spki_der) != _canonical_spki(evidence.public_key):
        raise BadCSR("CSR public key is not the attested key")
