"""TPM AK enrollment: certify an attestation key after TPM 2.0 credential activation.

The wire contract is docs/tpm-enrollment.md. Two steps, each one transaction:

begin(account, {akPublic, ekCertificate [, ekChain] | ekPublic})
  1. the AK's TPMT_PUBLIC is one acmeda certifies (`attestation.tpm.ak.check_ak_public`);
  2. the EK: its certificate chains to a TPM maker's root (`attestation.tpm.ek`), or, when
     `tpm_allow_pinned_ek` is on, its TPMT_PUBLIC is pinned in the operator's registry;
  3. the machine's identity, decided now and only from what the operator can trust: the
     identifier registered for the EK hash, else the EK hash itself (assigner
     `TPM_EK_HASH`); TPM manufacturer, model and version from the EK certificate's SAN,
     else from the registry; a value the device merely asserts is never used;
  4. MakeCredential of a fresh 32-byte secret to the EK, bound to the AK's Name; the
     activation row keeps a SHA-256 of the secret (never the secret), the AK, the identity
     and an expiry (`tpm_activation_lifetime`), status `pending`.

answer(account, activation id, {secret})
  the activation must be the account's (else 403), `pending` (single use) and unexpired
  (the injected clock). A right secret (compared in constant time) gets the AK certificate
  (`enroll.ak_certificate`), stored with status `valid`; a wrong one makes it `invalid`.
  Consuming is one conditional UPDATE (`… WHERE status = 'pending'`), so of two answers
  racing on two replicas exactly one wins, and a replayed answer is refused.

Refusals are `badAttestationStatement` naming the failed check; malformed payloads are
`malformed`. This module knows nothing of HTTP: `ca/handlers/tpm.py` maps it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


from attestation.assigners import TPM_EK_HASH
from attestation.errors import AttestationError
from attestation.tpm.ak import check_ak_public
from attestation.tpm.credential import MadeCredential, make_credential
from attestation.tpm.ek import EkTrust, EndorsementKey, check_protector_is_ek, pinned_ek, verify_ek_certificate
from attestation.tpm.structs import TpmtPublic
from ca.clock import Clock
from ca.issuance import new_serial
from ca.nonces import b64url, b64url_decode
from ca.pki import AttestationAuthority
from ca.problems import BadAttestationStatement, Malformed
from ca.storage import repository as repo
from ca.storage.repository import Store, new_id
from enroll.ak_certificate import AkCertificateRequest, issue_ak_certificate
from enroll.records import TpmActivation, TpmEndorsementKey

PENDING, VALID, INVALID = "pending", "valid", "invalid"
SECRET_BYTES = 32
BACKDATE = timedelta(minutes=1)
MAX_EK_CHAIN = 6


@dataclass(frozen=True)
class TpmSettings:
    allow_pinned_ek: bool = False
    activation_lifetime: timedelta = timedelta(minutes=5)
    certificate_lifetime: timedelta = timedelta(days=30)


@dataclass(frozen=True)
class BeginRequest:
    """The begin payload, decoded: exactly one of `ek_certificate` and `ek_public`."""

    ak_public: bytes
    ek_certificate: bytes | None
    ek_chain: tuple[bytes, ...]
    ek_public: bytes | None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> BeginRequest:
        ak_public = _binary(payload, "akPublic")
        has_cert, has_public = "ekCertificate" in payload, "ekPublic" in payload
        if has_cert == has_public:
            raise Malformed("the payload must carry exactly one of ekCertificate and ekPublic")
        chain = payload.get("ekChain", [])
        if not isinstance(chain, list) or len(chain) > MAX_EK_CHAIN:
            raise Malformed(f"ekChain must be a list of at most {MAX_EK_CHAIN} base64url certificates")
        if chain and not has_cert:
            raise Malformed("ekChain goes with ekCertificate")
        ek_chain = tuple(_decode(item, "ekChain") for item in chain)
        return cls(ak_public, _binary(payload, "ekCertificate") if has_cert else None, ek_chain,
                   _binary(payload, "ekPublic") if has_public else None)


def _decode(value: Any, name: str) -> bytes:
    try:
        decoded = b64url_decode(value)
    except ValueError:
        raise Malformed(f"{name} is not unpadded base64url") from None
    if not decoded:
        raise Malformed(f"{name} is empty")
    return decoded


def _binary(payload: Mapping[str, Any], name: str) -> bytes:
    if name not in payload:
        raise Malformed(f"the payload lacks {name}")
    return _decode(payload[name], name)


@dataclass(frozen=True)
class Begun:
    activation: TpmActivation
    made: MadeCredential

    def to_json(self) -> dict[str, Any]:
        return {"status": self.activation.status, "expires": _rfc3339(self.activation.expires),
                "credentialBlob": b64url(self.made.credential_blob),
                "encryptedSecret": b64url(self.made.encrypted_secret)}


@dataclass(frozen=True)
class Activated:
    certificate: bytes
    chain: tuple[bytes, ...]
    identifier: str
    assigner: str | None

    def to_json(self) -> dict[str, Any]:
        identifier: dict[str, str] = {"value": self.identifier}
        if self.assigner is not None:
            identifier["assigner"] = self.assigner
        return {"status": VALID, "akCertificate": b64url(self.certificate),
                "chain": [b64url(der) for der in self.chain], "permanentIdentifier": identifier}


def _rfc3339(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _refusal(error: AttestationError) -> BadAttestationStatement:
    return BadAttestationStatement(str(error))


class TpmEnrollment:
    def __init__(self, store: Store, clock: Clock, authority: AttestationAuthority, trust: EkTrust,
                 settings: TpmSettings = TpmSettings(), *, token: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._store = store
        self._clock = clock
        self._authority = authority
        self._trust = trust
        self._settings = settings
        self._token = token

    @property
    def chain(self) -> tuple[bytes, ...]:
        """What goes after an AK certificate in an x5c: the attestation CA."""
        return (self._authority.der,)

    async def begin(self, account_id: str, payload: Mapping[str, Any]) -> Begun:
        request = BeginRequest.from_json(payload)
        try:
            ak = check_ak_public(request.ak_public)
            ek = self._endorsement_key(request)
        except AttestationError as error:
            raise _refusal(error) from error
        async with self._store.read() as tx:
            entry = await repo.get(tx, TpmEndorsementKey, ek.ek_hash)
        if request.ek_public is not None and (entry is None or not entry.pinned):
            raise BadAttestationStatement(f"EK {ek.ek_hash} is not pinned in the fleet registry "
                                          "(acmeda tpm pin-ek), and it came without a certificate")
        secret = self._token(SECRET_BYTES)
        try:
            check_protector_is_ek(ek, ek.protector)
            made = make_credential(ek.protector, ak.name(), secret)
        except AttestationError as error:
            raise _refusal(error) from error
        activation = self._activation(account_id, request.ak_public, ak, ek, entry, secret)
        async with self._store.transaction() as tx:
            await repo.insert(tx, activation)
        return Begun(activation, made)

    def _endorsement_key(self, request: BeginRequest) -> EndorsementKey:
        if request.ek_certificate is not None:
            return verify_ek_certificate(request.ek_certificate, self._trust, self._clock.now(), chain=request.ek_chain)
        if not self._settings.allow_pinned_ek:
            raise BadAttestationStatement("this CA admits only EKs with a certificate from a trusted TPM maker "
                                          "(ekPublic needs tpm_allow_pinned_ek)")
        assert request.ek_public is not None
        return pinned_ek(request.ek_public)

    def _activation(self, account_id: str, ak_public: bytes, ak: TpmtPublic, ek: EndorsementKey,
                    entry: TpmEndorsementKey | None, secret: bytes) -> TpmActivation:
        identifier, assigner = ek.ek_hash, TPM_EK_HASH
        if entry is not None and entry.identifier:
            identifier, assigner = entry.identifier, entry.assigner
        tpm = {label: getattr(ek.san, label) or (getattr(entry, label) if entry else None)
               for label in ("manufacturer", "model", "version")}
        missing = [label for label, value in tpm.items() if not value]
        if missing:
            raise BadAttestationStatement(
                f"the TPM {', '.join(missing)} of EK {ek.ek_hash} is neither in its certificate's SAN nor "
                "registered by the operator (acmeda tpm register-ek --manufacturer --model --version)")
        now = self._clock.now()
        return TpmActivation(
            id=new_id(), account_id=account_id, status=PENDING, ak_public=ak_public, ak_name=ak.name().hex(),
            ek_hash=ek.ek_hash, identifier=identifier, assigner=assigner, secret_sha256=_digest(secret),
            expires=now + self._settings.activation_lifetime, created_at=now, **tpm,
        )

    async def answer(self, account_id: str, activation_id: str, payload: Mapping[str, Any]) -> Activated:
        secret = _binary(payload, "secret")
        async with self._store.read() as tx:
            row = await repo.owned(tx, TpmActivation, activation_id, account_id, "TPM activation")
        now = self._clock.now()
        if row.status != PENDING:
            raise BadAttestationStatement(f"TPM activation {activation_id} was already answered (it is {row.status}); "
                                          "an activation is single use: begin a new one")
        if now >= row.expires:
            await self._consume(row, INVALID, error="expired")
            raise BadAttestationStatement(f"TPM activation {activation_id} expired at {_rfc3339(row.expires)}; "
                                          "begin a new one")
        if not hmac.compare_digest(_digest(secret), row.secret_sha256):
            await self._consume(row, INVALID, error="wrong secret")
            raise BadAttestationStatement(
                "the secret is not the one sealed to the EK for this AK: the AK is not in the TPM that holds "
                "the EK (ActivateCredential recovers it only there); the activation is now invalid")
        certificate = self._certificate(row, now)
        await self._consume(row, VALID, certificate=certificate)
        return Activated(certificate, self.chain, row.identifier, row.assigner)

    async def _consume(self, row: TpmActivation, status: str, **values: Any) -> None:
        """pending → `status`, once across replicas; a lost race is a replayed answer."""
        async with self._store.transaction() as tx:
            won = await repo.transition(tx, TpmActivation, row.id, [PENDING], status=status,
                                        answered_at=self._clock.now(), **values)
        if not won:
            raise BadAttestationStatement(f"TPM activation {row.id} was already answered; "
                                          "an activation is single use: begin a new one")

    def _certificate(self, row: TpmActivation, now) -> bytes:
        public = TpmtPublic.parse(row.ak_public)
        request = AkCertificateRequest(
            public_key=public.public_key(), identifier=row.identifier, assigner=row.assigner,
            manufacturer=row.manufacturer, model=row.model, version=row.version,
            serial=new_serial(), not_before=now - BACKDATE, lifetime=self._settings.certificate_lifetime,
        )
        return issue_ak_certificate(self._authority, request)


def _digest(secret: bytes) -> str:
    # The secret is 32 random bytes, so a plain hash cannot be searched: no salt or slow hash needed.
    return hashlib.sha256(secret).hexdigest()
