"""A small ACME client (RFC 8555) for the device: account, orders, device-attest-01, finalize,
download, and renewal information (RFC 9773).

Every request but the directory, nonces and renewalInfo is a flattened JWS signed with the
account key (ES256, josepy). A `badNonce` refusal is retried once with the nonce it carries
(§6.5). Problem documents become `AcmeProblem` (type, detail, subproblems), which the command
line prints as they are. Polling honours Retry-After (§7.5.1, §7.4) up to a deadline.

The wire objects (`Order`, `Authorization`, `Challenge`, `RenewalWindow`) are frozen
dataclasses read from JSON in one place each.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable

import josepy as jose
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from client.http import Http, HttpResponse, TransportError

PROBLEM_NS = "urn:ietf:params:acme:error:"
JOSE_JSON = "application/jose+json"
MAX_POLL_WAIT = 10.0  # seconds: a Retry-After beyond this is capped, the deadline still holds


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AcmeError(Exception):
    """The ACME exchange failed in a way the user should read (no traceback)."""


class AcmeProblem(AcmeError):
    """An RFC 7807 problem document from the CA."""

    def __init__(self, doc: dict[str, Any], status: int) -> None:
        self.type = str(doc.get("type") or "about:blank")
        self.detail = str(doc.get("detail") or "")
        self.status = status
        self.subproblems = tuple(doc.get("subproblems") or ())
        super().__init__(self.describe())

    @property
    def code(self) -> str:
        return self.type[len(PROBLEM_NS):] if self.type.startswith(PROBLEM_NS) else self.type

    def describe(self) -> str:
        lines = [f"{self.type}: {self.detail}" if self.detail else self.type]
        for sub in self.subproblems:
            identifier = sub.get("identifier") or {}
            lines.append(f"  {identifier.get('type', '?')} {identifier.get('value', '?')}: {sub.get('type')}: {sub.get('detail', '')}")
        return "\n".join(lines)


# --- wire objects --------------------------------------------------------------------------


def _wire(what: str):
    """Turn a missing or mistyped member of a CA answer into a readable AcmeError."""
    def decorate(read):
        def wrapper(*args, **kwargs):
            try:
                return read(*args, **kwargs)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise AcmeError(f"the CA's {what} object is malformed ({type(exc).__name__}: {exc})") from None
        return wrapper
    return decorate


@dataclass(frozen=True)
class Challenge:
    type: str
    url: str
    status: str
    token: str | None
    error: dict[str, Any] | None

    @classmethod
    @_wire("challenge")
    def from_json(cls, doc: dict[str, Any]) -> Challenge:
        return cls(doc["type"], doc["url"], doc["status"], doc.get("token"), doc.get("error"))


@dataclass(frozen=True)
class Authorization:
    url: str
    status: str
    identifier: dict[str, str]
    challenges: tuple[Challenge, ...]

    @classmethod
    @_wire("authorization")
    def from_json(cls, url: str, doc: dict[str, Any]) -> Authorization:
        return cls(url, doc["status"], doc["identifier"], tuple(Challenge.from_json(c) for c in doc.get("challenges", ())))

    def challenge(self, kind: str) -> Challenge:
        for challenge in self.challenges:
            if challenge.type == kind:
                return challenge
        offered = ", ".join(c.type for c in self.challenges) or "none"
        raise AcmeError(f"the CA offers no {kind} challenge for {self.identifier.get('value')} (offered: {offered})")


@dataclass(frozen=True)
class Order:
    url: str
    status: str
    authorizations: tuple[str, ...]
    finalize: str
    certificate: str | None
    error: dict[str, Any] | None

    @classmethod
    @_wire("order")
    def from_json(cls, url: str, doc: dict[str, Any]) -> Order:
        return cls(url, doc["status"], tuple(doc.get("authorizations", ())), doc["finalize"],
                   doc.get("certificate"), doc.get("error"))


@dataclass(frozen=True)
class RenewalWindow:
    """RFC 9773 §4.2: the suggested renewal window, and when to ask again."""

    start: datetime
    end: datetime
    retry_after: timedelta | None
    explanation_url: str | None

    @classmethod
    @_wire("renewal information")
    def from_json(cls, doc: dict[str, Any], retry_after: timedelta | None) -> RenewalWindow:
        window = doc["suggestedWindow"]
        start, end = _rfc3339(window["start"]), _rfc3339(window["end"])
        if end < start:
            raise AcmeError("the CA's suggested renewal window ends before it starts")
        return cls(start, end, retry_after, doc.get("explanationURL"))


def _rfc3339(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def retry_after(response: HttpResponse, default: float) -> float:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    value = response.headers.get("Retry-After")
    if not value:
        return default
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return default


def cert_id(certificate: x509.Certificate) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial DER content octets)."""
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    if not aki:
        raise AcmeError("the certificate has no authority key identifier: ARI cannot name it")
    serial = certificate.serial_number
    return f"{b64url(aki)}.{b64url(serial.to_bytes(serial.bit_length() // 8 + 1, 'big'))}"


# --- the account key -----------------------------------------------------------------------


def load_or_create_account_key(path: Path) -> jose.JWKEC:
    """The ES256 account key in `path` (PEM, mode 0600), created on first use."""
    try:
        return jose.JWKEC(key=serialization.load_pem_private_key(path.read_bytes(), password=None))
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise AcmeError(f"the account key {path} cannot be read: {exc}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return jose.JWKEC(key=key)


def external_account_binding(kid: str, hmac_key_b64url: str, account_jwk: dict[str, Any], url: str) -> dict[str, str]:
    """RFC 8555 §7.3.4: the account's public JWK, MACed with the operator's key (HS256)."""
    try:
        hmac_key = b64url_decode(hmac_key_b64url.strip())
    except ValueError:
        raise AcmeError("the EAB HMAC key is not base64url") from None
    protected = b64url(json.dumps({"alg": "HS256", "kid": kid, "url": url}).encode())
    payload = b64url(json.dumps(account_jwk).encode())
    signature = jose.HS256.sign(hmac_key, f"{protected}.{payload}".encode())
    return {"protected": protected, "payload": payload, "signature": b64url(signature)}


# --- the client ----------------------------------------------------------------------------


class AcmeClient:
    """One account at one CA. `kid` is None until `register` (or a stored account URL)."""

    def __init__(self, http: Http, directory_url: str, key: jose.JWKEC, kid: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.http = http
        self.directory_url = directory_url
        self.key = key
        self.kid = kid
        self._sleep = sleep
        self._directory: dict[str, Any] | None = None
        self._nonce: str | None = None

    @property
    def directory(self) -> dict[str, Any]:
        if self._directory is None:
            response = self.http.request("GET", self.directory_url)
            if response.status != 200:
                raise AcmeError(f"{self.directory_url} answered HTTP {response.status}: is it the ACME directory URL?")
            self._directory = response.json()
            self._remember_nonce(response)
        return self._directory

    def resource(self, name: str) -> str:
        url = self.directory.get(name)
        if not isinstance(url, str):
            raise AcmeError(f"the CA's directory has no {name!r}: it does not support this operation")
        return url

    def thumbprint(self) -> str:
        return b64url(self.key.public_key().thumbprint())

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.thumbprint()}"

    # -- requests --

    def post(self, url: str, payload: Any = None, *, use_jwk: bool = False) -> HttpResponse:
        """A JWS POST (`payload` None is POST-as-GET); problems raise `AcmeProblem`."""
        for attempt in (1, 2):
            body = self._sign(url, payload, use_jwk)
            response = self.http.request("POST", url, body, {"Content-Type": JOSE_JSON})
            self._remember_nonce(response)
            if response.status < 400:
                return response
            problem = self._problem(response)
            if problem.code != "badNonce" or attempt == 2:
                raise problem
        raise AssertionError("unreachable")

    def _sign(self, url: str, payload: Any, use_jwk: bool) -> bytes:
        header: dict[str, Any] = {"alg": "ES256", "nonce": self._take_nonce(), "url": url}
        if use_jwk or self.kid is None:
            header["jwk"] = self.key.public_key().to_partial_json()
        else:
            header["kid"] = self.kid
        protected = b64url(json.dumps(header).encode())
        encoded = "" if payload is None else b64url(json.dumps(payload).encode())
        signature = jose.ES256.sign(self.key.key, f"{protected}.{encoded}".encode())
        return json.dumps({"protected": protected, "payload": encoded, "signature": b64url(signature)}).encode()

    def _take_nonce(self) -> str:
        if self._nonce is None:
            response = self.http.request("HEAD", self.resource("newNonce"))
            self._remember_nonce(response)
            if self._nonce is None:
                raise AcmeError("the CA's newNonce answered without a Replay-Nonce header")
        nonce, self._nonce = self._nonce, None
        return nonce  # type: ignore[return-value]

    def _remember_nonce(self, response: HttpResponse) -> None:
        nonce = response.headers.get("Replay-Nonce")
        if nonce:
            self._nonce = nonce

    @staticmethod
    def _problem(response: HttpResponse) -> AcmeProblem:
        if response.content_type == "application/problem+json":
            doc = response.json()
            if isinstance(doc, dict):
                return AcmeProblem(doc, response.status)
        text = response.body[:200].decode("utf-8", "replace")
        return AcmeProblem({"type": "about:blank", "detail": f"HTTP {response.status}: {text}"}, response.status)

    # -- RFC 8555 resources --

    def register(self, eab: tuple[str, str] | None = None, contact: tuple[str, ...] = ()) -> str:
        """newAccount (§7.3): the account URL; an existing account for this key is returned as is."""
        url = self.resource("newAccount")
        payload: dict[str, Any] = {"termsOfServiceAgreed": True}
        if contact:
            payload["contact"] = list(contact)
        if eab is not None:
            payload["externalAccountBinding"] = external_account_binding(eab[0], eab[1], self.key.public_key().to_partial_json(), url)
        response = self.post(url, payload, use_jwk=True)
        location = response.headers.get("Location")
        if not location:
            raise AcmeError("the CA's newAccount answer has no Location (account URL)")
        self.kid = location
        return location

    def new_order(self, identifiers: list[dict[str, str]], replaces: str | None = None) -> Order:
        payload: dict[str, Any] = {"identifiers": identifiers}
        if replaces:
            payload["replaces"] = replaces
        response = self.post(self.resource("newOrder"), payload)
        location = response.headers.get("Location")
        if not location:
            raise AcmeError("the CA's newOrder answer has no Location (order URL)")
        return Order.from_json(location, response.json())

    def order(self, url: str) -> tuple[Order, HttpResponse]:
        response = self.post(url)
        return Order.from_json(url, response.json()), response

    def authorization(self, url: str) -> tuple[Authorization, HttpResponse]:
        response = self.post(url)
        return Authorization.from_json(url, response.json()), response

    def respond(self, challenge: Challenge, payload: dict[str, Any]) -> tuple[Challenge, HttpResponse]:
        response = self.post(challenge.url, payload)
        return Challenge.from_json(response.json()), response

    def wait_authorization(self, url: str, answered: Challenge, first: HttpResponse, deadline: float) -> Authorization:
        """Poll the authorization until it leaves `pending` (§7.5.1), honouring Retry-After.

        A challenge the CA settled while answering the POST (acmeda does for device-attest-01)
        needs no wait: the authorization is read at once."""
        response, settled = first, answered.status in ("valid", "invalid")
        while True:
            if not settled:
                self._wait(response, deadline, f"authorization {url}")
            settled = False
            authz, response = self.authorization(url)
            if authz.status != "pending":
                return authz

    def finalize(self, order: Order, csr_der: bytes, deadline: float) -> Order:
        """Finalize (§7.4) and poll while the CA is `processing`."""
        response = self.post(order.finalize, {"csr": b64url(csr_der)})
        current = Order.from_json(order.url, response.json())
        while current.status == "processing":
            self._wait(response, deadline, f"order {order.url}")
            current, response = self.order(order.url)
        return current

    def download(self, url: str) -> bytes:
        response = self.post(url)
        if response.content_type != "application/pem-certificate-chain":
            raise AcmeError(f"the certificate download answered {response.content_type or 'no content type'}, "
                            "not application/pem-certificate-chain")
        return response.body

    def renewal_info(self, certificate: x509.Certificate) -> RenewalWindow:
        """RFC 9773 §4.1: GET <renewalInfo>/<certID> (not signed: anyone may ask)."""
        url = f"{self.resource('renewalInfo').rstrip('/')}/{cert_id(certificate)}"
        response = self.http.request("GET", url)
        if response.status >= 400:
            raise self._problem(response)
        seconds = response.headers.get("Retry-After")
        wait = timedelta(seconds=retry_after(response, 0.0)) if seconds else None
        return RenewalWindow.from_json(response.json(), wait)

    def _wait(self, response: HttpResponse, deadline: float, what: str) -> None:
        delay = min(retry_after(response, 1.0), MAX_POLL_WAIT)
        if time.monotonic() + delay > deadline:
            raise AcmeError(f"gave up waiting for {what}: the CA did not finish in time")
        self._sleep(delay)


__all__ = ["AcmeClient", "AcmeError", "AcmeProblem", "Authorization", "Challenge", "Order", "RenewalWindow",
           "TransportError", "cert_id", "load_or_create_account_key", "b64url", "b64url_decode"]
