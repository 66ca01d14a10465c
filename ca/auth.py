"""Authenticating an ACME POST: JWS checks, key lookup, nonce redemption (RFC 8555 §6.2–6.5).

The route table names each endpoint's mode; `authenticate` returns an
`AuthenticatedRequest` or raises the problem the RFC prescribes. Checks run cheapest
first, and the nonce is redeemed only after the signature verified, so forged requests
cost no database write.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import josepy as jose

from ca import jws
from ca.links import Links
from ca.problems import AccountDoesNotExist, BadNonce, Malformed, Unauthorized
from ca.services import Services
from ca.storage import repository as repo
from ca.storage.records import Account


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
    if has_jwk:
        jwk = jws.parse_account_key(header["jwk"])
    else:
        async with services.store.read() as tx:
            account = await _account_for_kid(tx, links, header["kid"])
        jwk = _account_key(account)
    # Verified before the nonce is redeemed, and outside the transaction that redeems it: the
    # write is one statement, so the database's write lock is held for as short as it can be.
    jws.verify_signature(parsed, jwk, alg)
    async with services.store.transaction() as tx:
        if not await repo.redeem_nonce(tx, nonce, expires):
            raise BadNonce("nonce has already been used")
    return AuthenticatedRequest(parsed, url, jwk, account)


_PARSED_KEYS: dict[str, jose.JWK] = {}
_MAX_PARSED_KEYS = 4096


def _account_key(account: Account) -> jose.JWK:
    """The account's parsed key, parsed once: a thumbprint (RFC 7638) names exactly one public
    key, so it is the cache key; a key change stores a new thumbprint."""
    key = _PARSED_KEYS.get(account.key_thumbprint)
    if key is None:
        if len(_PARSED_KEYS) >= _MAX_PARSED_KEYS:
            _PARSED_KEYS.pop(next(iter(_PARSED_KEYS)))  # the oldest entry
        key = _PARSED_KEYS[account.key_thumbprint] = jose.JWK.from_json(account.jwk)
    return key


async def _account_for_kid(tx: repo.Transaction, links: Links, kid: Any) -> Account:
    if not isinstance(kid, str):
        raise Malformed("kid must be a string")
    account_id = links.account_id_from_url(kid)
    if account_id is None:
        raise AccountDoesNotExist(f"kid {kid!r} is not an account URL of this server")
    account = await repo.get(tx, Account, account_id)
    if account is None:
        raise AccountDoesNotExist(f"account {kid} does not exist")
    if account.status != "valid":
        raise Unauthorized(f"account is {account.status}")
    return account
