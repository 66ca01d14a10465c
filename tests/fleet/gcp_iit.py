"""Fleet for fmt "gcp-iit": GCE instance identity tokens signed by a stand-in Google key.

A generated RSA-2048 key, published as a test JWK (`jwk_document()`, kid `KID`), stands for
Google's OAuth2 signing key; `attest(Knobs(...), binding)` returns a `GcpAttestation` whose
attStmt is what a VM sends (`{"token": <compact JWT>}`) with the claims of a format=full
token. Knobs for every checked header member and claim:

- `header`: JOSE header members replaced (a None value removes the member), e.g.
  `{"alg": "none"}`, `{"kid": "other"}`, `{"crit": ["exp"]}`.
- `claims`: top-level claims replaced the same way (`iss`, `aud`, `iat`, `exp`, `google`);
  `engine`: `google.compute_engine` members replaced the same way.
- `signer`: "google" (the published key), "rogue" (another key under the same kid),
  "hs256" (an HMAC over the token with the JWK's modulus as secret: alg confusion);
  `corrupt_signature` flips a bit of the signature.
- `token`: the raw token text, overriding everything (for parser tests).
- `keys`: the key documents the CA trusts (default: the test JWK alone).

`now` is tests/conftest.py START: iat is one minute before it, exp 59 minutes after.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Mapping

import cbor2
import josepy
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from attestation.context import Binding, TrustStore, VerificationContext
from attestation.formats import gcp_iit
from tests.fleet import with_changes

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)  # = tests/conftest.py START
KID = "f1ee7000c0ffee000000000000000000000000001"
CA_URL = "https://ca.example.test/acme"
INSTANCE_ID = "4520917745119201234"
ENGINE = {
    "instance_creation_timestamp": int((NOW - timedelta(days=3)).timestamp()),
    "instance_id": INSTANCE_ID,
    "instance_name": "fleet-vm-1",
    "project_id": "acmeda-fleet",
    "project_number": 123456789012,
    "zone": "europe-west1-b",
}


@lru_cache(maxsize=None)
def signing_key(name: str = "google") -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(name: str = "google", kid: str = KID) -> dict[str, Any]:
    """The public JWK of a fleet key, as Google publishes its keys (kid, alg RS256, use sig)."""
    body = josepy.JWKRSA(key=signing_key(name).public_key()).to_partial_json()
    return {**body, "kid": kid, "alg": "RS256", "use": "sig"}


def jwk_document(*keys: dict[str, Any], as_set: bool = False) -> bytes:
    """One JWK document (or a JWK Set, like https://www.googleapis.com/oauth2/v3/certs)."""
    keys = keys or (jwk(),)
    return json.dumps({"keys": list(keys)} if as_set or len(keys) > 1 else keys[0]).encode()


def trust(*documents: bytes) -> TrustStore:
    return TrustStore(keys={gcp_iit.FMT: documents or (jwk_document(),)})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Knobs:
    header: Mapping[str, Any] = field(default_factory=dict)
    claims: Mapping[str, Any] = field(default_factory=dict)
    engine: Mapping[str, Any] = field(default_factory=dict)
    signer: str = "google"
    corrupt_signature: bool = False
    token: str | None = None
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class GcpAttestation:
    att_stmt: dict[str, Any]
    ctx: VerificationContext

    @property
    def token(self) -> str:
        return self.att_stmt["token"]

    def att_obj(self) -> bytes:
        return cbor2.dumps({"fmt": gcp_iit.FMT, "attStmt": self.att_stmt})


def _claims(knobs: Knobs, binding: Binding) -> dict[str, Any]:
    iat = int((NOW - timedelta(minutes=1)).timestamp())
    base = {
        "aud": f"{CA_URL}/{gcp_iit.AUDIENCE_PATH}/{binding.challenge.decode('ascii')}",
        "azp": "117000000000000000001", "email": "fleet@acmeda-fleet.iam.gserviceaccount.com",
        "email_verified": True, "exp": iat + 3600, "iat": iat, "iss": "https://accounts.google.com",
        "sub": "117000000000000000001",
        "google": {"compute_engine": with_changes(ENGINE, knobs.engine)},
    }
    return with_changes(base, knobs.claims)


def _sign(knobs: Knobs, signing_input: bytes) -> bytes:
    if knobs.signer == "hs256":
        secret = signing_key().public_key().public_numbers().n.to_bytes(256, "big")
        signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    else:
        signature = signing_key(knobs.signer).sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if knobs.corrupt_signature:
        signature = signature[:-1] + bytes([signature[-1] ^ 1])
    return signature


def make_token(knobs: Knobs, binding: Binding) -> str:
    header = with_changes({"alg": "RS256", "kid": KID, "typ": "JWT"}, knobs.header)
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(_claims(knobs, binding)).encode())}"
    return f"{signing_input}.{b64(_sign(knobs, signing_input.encode('ascii')))}"


def attest(knobs: Knobs = Knobs(), binding: Binding | None = None, now: datetime = NOW) -> GcpAttestation:
    """A "gcp-iit" statement for `binding` (default: an ACME key authorization)."""
    binding = binding or gcp_iit.acme_binding("token", b"token.thumbprint")
    token = knobs.token if knobs.token is not None else make_token(knobs, binding)
    return GcpAttestation({"token": token}, VerificationContext(binding, now, trust(*knobs.keys)))


def for_acme(token: str, key_authorization: bytes, **knobs: Any) -> GcpAttestation:
    """What a VM sends for this challenge: a token requested with aud = audience_for(CA URL, key authorization)."""
    return attest(Knobs(**knobs), gcp_iit.acme_binding(token, key_authorization))
