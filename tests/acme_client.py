"""A deliberately small ACME signer for protocol tests: it can also build the malformed
requests no real client would send. Real clients (certbot, lego, uacme, the `acme`
library) are exercised in tests/interop.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import josepy as jose
from yarl import URL
from cryptography.hazmat.primitives.asymmetric import ec


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def relative(url: str) -> str:
    """The test client takes paths; JWS `url` headers carry the absolute URL."""
    return URL(url).path_qs if URL(url).absolute else url


def new_key() -> jose.JWKEC:
    return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def sign(payload: Any, *, key: jose.JWK, url: str, nonce: str | None, kid: str | None = None,
         alg: jose.JWASignature = jose.ES256, extra_header: dict | None = None) -> dict[str, str]:
    """A flattened JWS. `payload=None` is POST-as-GET (empty payload)."""
    header: dict[str, Any] = {"alg": alg.name, "url": url}
    if nonce is not None:
        header["nonce"] = nonce
    if kid is not None:
        header["kid"] = kid
    else:
        header["jwk"] = key.public_key().to_partial_json()
    header.update(extra_header or {})
    protected = b64(json.dumps(header).encode())
    body = "" if payload is None else b64(json.dumps(payload).encode())
    signature = alg.sign(key.key, f"{protected}.{body}".encode())
    return {"protected": protected, "payload": body, "signature": b64(signature)}


@dataclass
class AcmeSession:
    """Drives an aiohttp test client through ACME with one account key."""

    http: Any  # aiohttp TestClient
    key: jose.JWK = field(default_factory=new_key)
    kid: str | None = None
    directory: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return str(self.http.make_url(path))

    async def load_directory(self) -> dict[str, Any]:
        response = await self.http.get("/directory")
        self.directory = await response.json()
        return self.directory

    async def nonce(self) -> str:
        response = await self.http.head("/acme/new-nonce")
        return response.headers["Replay-Nonce"]

    async def post(self, url: str, payload: Any = None, *, use_kid: bool = True, key: jose.JWK | None = None,
                   nonce: str | None = "fresh", **kw: Any):
        if nonce == "fresh":
            nonce = await self.nonce()
        body = sign(payload, key=key or self.key, url=url, nonce=nonce, kid=self.kid if use_kid else None, **kw)
        return await self.http.post(relative(url), data=json.dumps(body), headers={"Content-Type": "application/jose+json"})

    async def new_account(self, payload: dict[str, Any] | None = None):
        if not self.directory:
            await self.load_directory()
        response = await self.post(self.directory["newAccount"], payload if payload is not None else {"termsOfServiceAgreed": True}, use_kid=False)
        if response.status in (200, 201):
            self.kid = response.headers["Location"]
        return response

    async def new_order(self, identifiers: list[dict[str, str]], **extra: Any):
        return await self.post(self.directory["newOrder"], {"identifiers": identifiers, **extra})

    async def get(self, url: str):
        return await self.post(url, None)

    def thumbprint(self) -> str:
        return b64(self.key.public_key().thumbprint())

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.thumbprint()}"
