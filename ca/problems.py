"""ACME problem documents (RFC 8555 §6.7, RFC 7807): every error type is defined here, once.

Each `AcmeProblem` subclass is one `urn:ietf:params:acme:error:<code>` with its HTTP status.
Handlers and services raise them; one middleware (`ca.middleware`) turns them into
`application/problem+json`. Nothing else builds a problem document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

ACME_ERROR_NS = "urn:ietf:params:acme:error:"


@dataclass(frozen=True)
class Subproblem:
    """A problem about one identifier of a request (RFC 8555 §6.7.1)."""

    problem: "AcmeProblem"
    identifier: Any  # ca.identifiers.Identifier; typed loosely to avoid an import cycle

    def to_json(self) -> dict[str, Any]:
        doc = self.problem.to_json()
        doc.pop("subproblems", None)
        doc.pop("status", None)
        doc["identifier"] = self.identifier.to_json()
        return doc


class AcmeProblem(Exception):
    """Base of all ACME errors. `code` names the URN suffix; `status` is the HTTP status."""

    code: ClassVar[str] = "serverInternal"
    status: ClassVar[int] = 500

    def __init__(
        self,
        detail: str,
        *,
        subproblems: tuple[Subproblem, ...] = (),
        status: int | None = None,
        headers: dict[str, str] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.subproblems = subproblems
        self.headers = headers or {}
        self.fields = fields or {}  # extra members the RFC asks for, e.g. `algorithms` (§6.2)
        if status is not None:
            self.status = status  # instance override, e.g. 404 for an unknown resource

    @property
    def type(self) -> str:
        return ACME_ERROR_NS + self.code

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type, "detail": self.detail, "status": self.status, **self.fields}
        if self.subproblems:
            doc["subproblems"] = [s.to_json() for s in self.subproblems]
        return doc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"


def _problem(name: str, code: str, status: int, doc: str) -> type[AcmeProblem]:
    return type(name, (AcmeProblem,), {"code": code, "status": status, "__doc__": doc})


AccountDoesNotExist = _problem("AccountDoesNotExist", "accountDoesNotExist", 400, "The request specified an account that does not exist.")
AlreadyReplaced = _problem("AlreadyReplaced", "alreadyReplaced", 409, "The certificate named in `replaces` was already replaced (RFC 9773).")
AlreadyRevoked = _problem("AlreadyRevoked", "alreadyRevoked", 400, "The certificate is already revoked.")
BadAttestationStatement = _problem("BadAttestationStatement", "badAttestationStatement", 400, "The attestation statement failed verification (draft-ietf-acme-device-attest).")
BadCSR = _problem("BadCSR", "badCSR", 400, "The CSR is unacceptable.")
BadNonce = _problem("BadNonce", "badNonce", 400, "The client sent an unacceptable anti-replay nonce.")
BadPublicKey = _problem("BadPublicKey", "badPublicKey", 400, "The JWS was signed by a public key the server does not support.")
BadRevocationReason = _problem("BadRevocationReason", "badRevocationReason", 400, "The revocation reason is not allowed.")
BadSignatureAlgorithm = _problem("BadSignatureAlgorithm", "badSignatureAlgorithm", 400, "The JWS was signed with an algorithm the server does not support.")
CAA = _problem("CAA", "caa", 403, "CAA records forbid the CA from issuing.")
Compound = _problem("Compound", "compound", 400, "Specific problems are listed in subproblems.")
Connection = _problem("Connection", "connection", 400, "The server could not connect to the validation target.")
DNS = _problem("DNS", "dns", 400, "There was a problem with a DNS query during validation.")
ExternalAccountRequired = _problem("ExternalAccountRequired", "externalAccountRequired", 400, "The server requires external account binding.")
IncorrectResponse = _problem("IncorrectResponse", "incorrectResponse", 400, "The response received did not match the challenge's requirements.")
InvalidContact = _problem("InvalidContact", "invalidContact", 400, "A contact URL for an account was invalid.")
Malformed = _problem("Malformed", "malformed", 400, "The request message was malformed.")
OrderNotReady = _problem("OrderNotReady", "orderNotReady", 403, "The order is not in a state that allows this request.")
RateLimited = _problem("RateLimited", "rateLimited", 429, "The request exceeds a rate limit.")
RejectedIdentifier = _problem("RejectedIdentifier", "rejectedIdentifier", 400, "The server will not issue for the identifier.")
ServerInternal = _problem("ServerInternal", "serverInternal", 500, "The server experienced an internal error.")
TLS = _problem("TLS", "tls", 400, "The server received a TLS error during validation.")
Unauthorized = _problem("Unauthorized", "unauthorized", 403, "The client lacks sufficient authorization.")
UnsupportedContact = _problem("UnsupportedContact", "unsupportedContact", 400, "A contact URL used an unsupported protocol scheme.")
UnsupportedIdentifier = _problem("UnsupportedIdentifier", "unsupportedIdentifier", 400, "An identifier is of an unsupported type.")
UserActionRequired = _problem("UserActionRequired", "userActionRequired", 403, "Visit the `instance` URL and take the actions specified there.")


def not_found(what: str) -> AcmeProblem:
    """RFC 8555 defines no type for an unknown resource; like Pebble and Boulder, use malformed with 404."""
    return Malformed(f"{what} does not exist", status=404)
