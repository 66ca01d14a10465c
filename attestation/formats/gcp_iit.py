"""fmt "gcp-iit": a Google Compute Engine instance identity token (docs/cloud/gcp-iit.md).

The attestation statement is `{"token": tstr}`: the compact JWT the VM's metadata server
returns for
`http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity?audience=AUD&format=full`.

Binding. The VM asks for AUD = `<CA base URL>/device-attest-01/<d>` with
d = base64url-nopad(SHA-256(key authorization)) (`audience_for`). The verifier requires an
https URL without query or fragment whose last path segment is exactly d, compared in
constant time; the host and the rest of the path are not checked (the pure verifier does
not know the CA's URL, and d alone names this challenge and this ACME account key).
`acme_binding` puts d (ASCII) in `Binding.challenge`.

Checks, in order, each with its own `check` name:

1. `token` is a text string of at most MAX_TOKEN octets, three canonical base64url parts,
   header and payload strict JSON objects (`gcp-iit-token`, MalformedStatement).
2. JOSE header: `alg` exactly "RS256" (`gcp-iit-alg`, UnsupportedFormat: "none", HS256 and
   every other value are refused, whatever the key); no `crit` (`gcp-iit-crit`); `typ`, when
   present, "JWT" (`gcp-iit-typ`); `kid` a non-empty string (`gcp-iit-kid`). `jwk`, `jku`,
   `x5u` and `x5c` are never used: only configured keys verify.
3. `kid` names one of the configured Google keys, `TrustStore.keys_for("gcp-iit")`: JWK or
   JWK Set documents as https://www.googleapis.com/oauth2/v3/certs serves them
   (`gcp-iit-key-unknown`, UntrustedChain; no keys at all: `gcp-iit-keys`).
4. The RS256 signature (RSASSA-PKCS1-v1_5, SHA-256) verifies (`gcp-iit-signature`).
5. `iss` is "https://accounts.google.com" or "accounts.google.com" (`gcp-iit-issuer`).
6. `iat` and `exp` are integers (`gcp-iit-claims`); iat <= now + CLOCK_SKEW (`gcp-iit-iat`);
   exp > now (`gcp-iit-expired`); 0 < exp - iat <= 1 hour, the lifetime Google issues
   (`gcp-iit-lifetime`).
7. `aud` is a single string and meets the binding above (`gcp-iit-audience`, ChallengeMismatch).
8. `google.compute_engine` holds project_id, project_number, zone, instance_id,
   instance_name and instance_creation_timestamp of the right types, and license_id when
   present is a list of strings (`gcp-iit-compute-engine`; absent: IdentifierMissing).

Evidence: no key (`public_key` None: the token names no key; the certificate's key is bound
through the ACME account key, which the key authorization in `aud` commits to), TrustLevel
CLOUD, PermanentIdentifier(instance_id, GCE_INSTANCE_ID), posture extra facts
gce_instance_creation, gce_instance_name, gce_license_ids (comma-separated, when present),
gce_project_id, gce_project_number, gce_zone; `attested_at` = iat. Not replayable: `aud`
binds the token to one challenge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import josepy
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from attestation.assigners import GCE_INSTANCE_ID
from attestation.context import Binding, VerificationContext
from attestation.strict import strict_json
from attestation.errors import (
    ChallengeMismatch, IdentifierMissing, InvalidSignature, MalformedStatement, RequirementFailed,
    UnsupportedFormat, UntrustedChain, catch_builtins,
)
from attestation.evidence import Evidence, PermanentIdentifier, Posture, TrustLevel
from attestation.format import Format

FMT = "gcp-iit"
ALG = "RS256"
ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
AUDIENCE_PATH = "device-attest-01"
CLOCK_SKEW = timedelta(minutes=5)  # tolerated between Google's clock and ours for iat
MAX_LIFETIME = timedelta(hours=1)  # Google issues identity tokens valid for one hour
MAX_TOKEN = 8 * 1024  # octets; a format=full token with licenses is about 1.2 KiB
MIN_RSA_BITS = 2048
_LAST_DATE = 253402300799  # 9999-12-31T23:59:59Z, the last second `datetime` can hold
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_DECIMAL = re.compile(r"[0-9]{1,20}")

AudienceCheck = Callable[[Any], None]  # raises ChallengeMismatch when `aud` does not fit


@dataclass(frozen=True)
class Jws:
    """A compact JWS split and decoded; nothing in it is trusted yet."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


@dataclass(frozen=True)
class ComputeEngine:
    """The `google.compute_engine` claim of a format=full token."""

    project_id: str
    project_number: int
    zone: str
    instance_id: str
    instance_name: str
    instance_creation: datetime
    license_ids: tuple[str, ...] = ()


# --- binding ---------------------------------------------------------------------------------


def audience_digest(key_authorization: bytes) -> str:
    """base64url-nopad(SHA-256(key authorization)): the last path segment of the token's aud."""
    return base64.urlsafe_b64encode(hashlib.sha256(key_authorization).digest()).rstrip(b"=").decode("ascii")


def audience_for(ca_base_url: str, key_authorization: bytes) -> str:
    """The AUD a VM requests its token for: `<CA base URL>/device-attest-01/<digest>`."""
    return f"{ca_base_url.rstrip('/')}/{AUDIENCE_PATH}/{audience_digest(key_authorization)}"


def acme_binding(token: str, key_authorization: bytes) -> Binding:
    return Binding(att_to_be_signed=key_authorization, challenge=audience_digest(key_authorization).encode("ascii"))


def audience_ending_with(digest: bytes) -> AudienceCheck:
    """The ACME rule: aud is an https URL, no query or fragment, whose last path segment is `digest`."""

    def check(aud: Any) -> None:
        if not isinstance(aud, str):
            raise ChallengeMismatch("token aud is not a single string", check="gcp-iit-audience")
        try:
            parts = urlsplit(aud)
        except ValueError as exc:
            raise ChallengeMismatch(f"token aud {aud!r} is not a URL: {exc}", check="gcp-iit-audience") from None
        if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment or not parts.path.startswith("/"):
            raise ChallengeMismatch(f"token aud {aud!r} is not an https URL with a path and no query or fragment",
                                    check="gcp-iit-audience")
        if not hmac.compare_digest(parts.path.rpartition("/")[2].encode("utf-8"), digest):
            raise ChallengeMismatch(f"token aud {aud!r} does not end with /<base64url SHA-256 of the key authorization>",
                                    check="gcp-iit-audience")

    return check


def audience_equal_to(expected: str) -> AudienceCheck:
    """A non-ACME rule: aud is exactly `expected` (recorded tokens, relying parties with a fixed aud)."""

    def check(aud: Any) -> None:
        if not isinstance(aud, str) or not hmac.compare_digest(aud.encode("utf-8"), expected.encode("utf-8")):
            raise ChallengeMismatch(f"token aud {aud!r} is not {expected!r}", check="gcp-iit-audience")

    return check


# --- trusted keys ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def default_keys() -> tuple[bytes, ...]:
    """The bundled (historical) Google signing keys: every `*.json` of attestation/roots/gcp-iit/."""
    base = resources.files("attestation.roots").joinpath(FMT)
    return tuple(e.read_bytes() for e in sorted(base.iterdir(), key=lambda e: e.name) if e.name.endswith(".json"))


@lru_cache(maxsize=64)
def _keys_of_document(document: bytes) -> tuple[tuple[str, rsa.RSAPublicKey], ...]:
    """(kid, key) of every RS256 signing key in one JWK or JWK Set document."""
    try:
        parsed = json.loads(document)
        entries = parsed["keys"] if isinstance(parsed, dict) and "keys" in parsed else [parsed]
        found = []
        for entry in entries:
            if entry.get("kty") != "RSA" or entry.get("alg", ALG) != ALG or entry.get("use", "sig") != "sig":
                continue  # cannot verify RS256: not a key for these tokens
            key = josepy.JWKRSA.from_json(entry).key.public_numbers().public_key()
            if not isinstance(entry.get("kid"), str) or key.key_size < MIN_RSA_BITS:
                raise ValueError(f"key {entry.get('kid')!r} has no kid or fewer than {MIN_RSA_BITS} bits")
            found.append((entry["kid"], key))
    except Exception as exc:  # json, josepy and cryptography each raise their own
        raise UntrustedChain(f"a configured Google key document does not parse as JWK or JWK Set: {exc}",
                             check="gcp-iit-keys") from None
    return tuple(found)


def trusted_keys(documents: tuple[bytes, ...]) -> dict[str, tuple[rsa.RSAPublicKey, ...]]:
    """Configured keys by kid; UntrustedChain (`gcp-iit-keys`) when there are none."""
    keys: dict[str, tuple[rsa.RSAPublicKey, ...]] = {}
    for document in documents:
        for kid, key in _keys_of_document(bytes(document)):
            keys[kid] = keys.get(kid, ()) + (key,)
    if not keys:
        raise UntrustedChain("no Google signing keys (JWK) are configured for gcp-iit", check="gcp-iit-keys")
    return keys


# --- the token -------------------------------------------------------------------------------


def _malformed(detail: str) -> MalformedStatement:
    return MalformedStatement(f"gcp-iit token: {detail}", check="gcp-iit-token")


def _b64decode(part: str, what: str) -> bytes:
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise _malformed(f"the {what} is not unpadded base64url")
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != part:
        raise _malformed(f"the {what} is not canonical base64url")
    return raw


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = strict_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _malformed(f"the {what} is not strict UTF-8 JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _malformed(f"the {what} is not a JSON object")
    return value


@catch_builtins
def parse_token(token: Any) -> Jws:
    """Split and decode a compact JWS (RFC 7515 §7.1) strictly; nothing is verified here."""
    if not isinstance(token, str) or not token:
        raise _malformed("attStmt.token is missing or not a non-empty text string")
    if len(token) > MAX_TOKEN or not token.isascii():
        raise _malformed(f"longer than {MAX_TOKEN} octets or not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        raise _malformed(f"has {len(parts)} dot-separated parts, not 3 (a compact JWS)")
    header = _json_object(_b64decode(parts[0], "header"), "header")
    claims = _json_object(_b64decode(parts[1], "payload"), "payload")
    signature = _b64decode(parts[2], "signature")
    return Jws(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def _check_header(header: Mapping[str, Any]) -> str:
    """The header's kid, once alg, crit and typ are what Google sends."""
    if header.get("alg") != ALG:
        raise UnsupportedFormat(f"token alg is {header.get('alg')!r}; only {ALG!r} is accepted", check="gcp-iit-alg")
    if "crit" in header:
        raise UnsupportedFormat("token header has crit: no extension is understood here", check="gcp-iit-crit")
    if "typ" in header and (not isinstance(header["typ"], str) or header["typ"].upper() != "JWT"):
        raise MalformedStatement(f"token typ is {header['typ']!r}, not \"JWT\"", check="gcp-iit-typ")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise MalformedStatement("token header has no kid naming the Google key", check="gcp-iit-kid")
    return kid


def _check_signature(jws: Jws, kid: str, documents: tuple[bytes, ...]) -> None:
    candidates = trusted_keys(documents).get(kid)
    if not candidates:
        raise UntrustedChain(f"token kid {kid!r} is not among the configured Google keys (rotated, or not Google's)",
                             check="gcp-iit-key-unknown")
    for key in candidates:
        try:
            key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(), hashes.SHA256())
            return
        except _CryptoInvalidSignature:
            continue
    raise InvalidSignature(f"token signature does not verify with Google key {kid!r} (RS256)", check="gcp-iit-signature")


def _numeric_date(claims: Mapping[str, Any], name: str) -> datetime:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _LAST_DATE:
        raise MalformedStatement(f"token {name} is missing or not an integer NumericDate", check="gcp-iit-claims")
    return datetime.fromtimestamp(value, tz=timezone.utc)


def _check_time(claims: Mapping[str, Any], now: datetime) -> datetime:
    """iat, once iat and exp bracket now and the lifetime is Google's."""
    issued, expires = _numeric_date(claims, "iat"), _numeric_date(claims, "exp")
    if issued > now + CLOCK_SKEW:
        raise RequirementFailed(f"token iat {issued:%Y-%m-%dT%H:%M:%SZ} is in the future", check="gcp-iit-iat")
    if expires <= now:
        raise RequirementFailed(f"token expired at {expires:%Y-%m-%dT%H:%M:%SZ} (exp)", check="gcp-iit-expired")
    if not timedelta(0) < expires - issued <= MAX_LIFETIME:
        raise RequirementFailed(f"token lifetime exp - iat = {expires - issued} is not within (0, {MAX_LIFETIME}]",
                                check="gcp-iit-lifetime")
    return issued


def _compute_engine(claims: Mapping[str, Any]) -> ComputeEngine:
    google = claims.get("google")
    engine = google.get("compute_engine") if isinstance(google, dict) else None
    if engine is None:
        raise IdentifierMissing("token has no google.compute_engine claim: request it with format=full",
                                check="gcp-iit-compute-engine")

    def fail(detail: str) -> MalformedStatement:
        return MalformedStatement(f"token google.compute_engine: {detail}", check="gcp-iit-compute-engine")

    if not isinstance(engine, dict):
        raise fail("is not an object")
    texts = {name: engine.get(name) for name in ("project_id", "zone", "instance_id", "instance_name")}
    for name, value in texts.items():
        if not isinstance(value, str) or not value:
            raise fail(f"{name} is missing or not a non-empty string")
    if not _DECIMAL.fullmatch(texts["instance_id"]):
        raise fail(f"instance_id {texts['instance_id']!r} is not a decimal number")
    numbers = {name: engine.get(name) for name in ("project_number", "instance_creation_timestamp")}
    for (name, value), limit in zip(numbers.items(), (2**64 - 1, _LAST_DATE)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            raise fail(f"{name} is missing or not an integer in range")
    licenses = engine.get("license_id", [])
    if not isinstance(licenses, list) or not all(isinstance(x, str) and _DECIMAL.fullmatch(x) for x in licenses):
        raise fail("license_id is not a list of decimal strings")
    created = datetime.fromtimestamp(numbers["instance_creation_timestamp"], tz=timezone.utc)
    return ComputeEngine(texts["project_id"], numbers["project_number"], texts["zone"], texts["instance_id"],
                         texts["instance_name"], created, tuple(licenses))


def _evidence(engine: ComputeEngine, issued: datetime) -> Evidence:
    extra = {"gce_project_id": engine.project_id, "gce_project_number": str(engine.project_number),
             "gce_zone": engine.zone, "gce_instance_name": engine.instance_name,
             "gce_instance_creation": f"{engine.instance_creation:%Y-%m-%dT%H:%M:%SZ}"}
    if engine.license_ids:
        extra["gce_license_ids"] = ",".join(engine.license_ids)
    return Evidence(
        fmt=FMT,
        public_key=None,
        trust_level=TrustLevel.CLOUD,
        permanent_identifiers=(PermanentIdentifier(engine.instance_id, GCE_INSTANCE_ID),),
        posture=Posture(extra=tuple(sorted(extra.items()))),
        attested_at=issued,
    )


@catch_builtins
def verify_token(token: Any, key_documents: tuple[bytes, ...], now: datetime, audience: AudienceCheck) -> Evidence:
    """Verify an identity token against the configured Google keys at `now`, with `audience` as the aud rule."""
    jws = parse_token(token)
    kid = _check_header(jws.header)
    _check_signature(jws, kid, tuple(key_documents))
    issuer = jws.claims.get("iss")
    if not isinstance(issuer, str) or issuer not in ISSUERS:
        raise RequirementFailed(f"token iss {issuer!r} is not Google's", check="gcp-iit-issuer")
    issued = _check_time(jws.claims, now)
    audience(jws.claims.get("aud"))
    return _evidence(_compute_engine(jws.claims), issued)


@catch_builtins
def verify(att_stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
    """Verify a "gcp-iit" statement for an ACME challenge; return what it proves or raise the failed check."""
    if not isinstance(att_stmt, Mapping):
        raise _malformed("attStmt is not a map")
    return verify_token(att_stmt.get("token"), ctx.trust.keys_for(FMT), ctx.now, audience_ending_with(ctx.binding.challenge))


FORMAT = Format(name=FMT, verify=verify, acme_binding=acme_binding)
