"""Authenticating an ACME POST: JWS checks, key lookup, nonce redemption (RFC 8555 §6.2–6.5).

The route table names each endpoint's mode; `authenticate` returns an
`AuthenticatedRequest` or raises the problem the RFC prescribes. Checks run cheapest
first, and the nonce is redeemed only after the signature verified, so forged requests
cost no database write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from enum import Enum
from typing import Any

import josepy as jose

from ca import jws
from ca.links import Links
from ca.problems import AccountDoesNotExist, BadNonce, Malformed, Unauthorized
from ca.services import Services
from ca.storage import repository as repo
from ca.storage.tables import Account


class AuthMode(str, Enum):
    JWK = "jwk"  # newAccount (and key-change's inner JWS)
    KID = "kid"  # every request of an existing account
    JWK_OR_KID = "jwk-or-kid"  # revokeCert: the account, or the certificate's own key


@dataclass(frozen=True)
class AuthenticatedRequest:
    jws: jws.ParsedJWS
    url: str
    jwk: jose.JWK  # the key that signed: the account's key in KID mode
    account: Account | None  # None in JWK mode

    @property
    def is_post_as_get(self) -> bool:
        return self.jws.payload_b64 == ""

    def payload(self) -> dict[str, Any]:
        if self.is_post_as_get:
            raise Malformed("this resource needs a JSON payload, not POST-as-GET")
        return jws.payload_json(self.jws)


async def authenticate(services: Services, links: Links, url: str, body: bytes, mode: AuthMode) -> AuthenticatedRequest:
    parsed = jws.parse_jws(body)
    header = parsed.header
    alg = jws.signature_algorithm(header)
    nonce = header.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise BadNonce("JWS protected header has no nonce")
    expires = services.nonces.check(nonce)
    if header.get("url") != url:
        raise Unauthorized(f"JWS url {header.get('url')!r} does not match the request URL {url!r}")
    has_jwk, has_kid = "jwk" in header, "kid" in header
    if has_jwk == has_kid:
        raise Malformed("JWS protected header must have exactly one of jwk and kid")
    if has_jwk and mode is AuthMode.KID:
        raise Malformed("this request must be signed by an account (kid), not an embedded jwk")
    if has_kid and mode is AuthMode.JWK:
        raise Malformed("this request must carry the public key (jwk), not a kid")
    account: Account | None = None
    # One transaction: look up the signer, verify (CPU only), redeem the nonce.
    async with services.store.transaction() as session:
        if has_jwk:
            jwk = jws.parse_account_key(header["jwk"])
        else:
            account = await _account_for_kid(session, links, header["kid"])
            jwk = _account_key(account)
        jws.verify_signature(parsed, jwk, alg)
        if not await repo.redeem_nonce(session, nonce, expires):
            raise BadNonce("nonce has already been used")
    return AuthenticatedRequest(parsed, url, jwk, account)


@lru_cache(maxsize=4096)
def _parsed_key(thumbprint: str, jwk_json: str) -> jose.JWK:
    return jose.JWK.from_json(json.loads(jwk_json))


def _account_key(account: Account) -> jose.JWK:
    """The account's parsed key; a thumbprint names exactly one key, so parses are shared."""
    return _parsed_key(account.key_thumbprint, json.dumps(account.jwk, sort_keys=True))


async def _account_for_kid(session, links: Links, kid: Any) -> Account:
    if not isinstance(kid, str):
        raise Malformed("kid must be a string")
    account_id = links.account_id_from_url(kid)
    if account_id is None:
        raise AccountDoesNotExist(f"kid {kid!r} is not an account URL of this server")
    account = await session.get(Account, account_id)
    if account is None:
        raise AccountDoesNotExist(f"account {kid} does not exist")
    if account.status != "valid":
        raise Unauthorized(f"account is {account.status}")
    return account
