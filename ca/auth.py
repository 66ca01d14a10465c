"""Authenticating an ACME POST: JWS checks, key lookup, nonce redemption (RFC 8555 §6.2–6.5).

The route table names each endpoint's mode; `authenticate` returns an
`AuthenticatedRequest` or raises the problem the RFC prescribes. Checks run cheapest
first, and the nonce is redeemed only after the signature verified, so forged requests
cost no database write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import josepy as jose

from ca import jws
from ca.links import Links
from ca.problems import AccountDoesNotExist, AcmeProblem, BadNonce, Malformed, Unauthorized
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
    if has_jwk:
        jwk = jws.parse_account_key(header["jwk"])
        jws.verify_signature(parsed, jwk, alg)
        async with services.store.statement() as tx:
            await _redeem(tx, nonce, expires)
        return AuthenticatedRequest(parsed, url, jwk, None)
    account = await _authenticate_kid(services, _account_id(links, header["kid"]), parsed, alg, nonce, expires)
    return AuthenticatedRequest(parsed, url, account_key(account), account)


async def _authenticate_kid(services: Services, account_id: str, parsed: jws.ParsedJWS, alg: jose.JWASignature,
                            nonce: str, expires: datetime) -> Account:
    """Verify with the account's key, then redeem the nonce atomically with finding the account
    valid and still holding that key (`repo.redeem_nonce_as`).

    The signature is checked before, outside the database's transaction, so SQLite's write lock
    is held only for the statements. The key comes from what this process last saw of the
    account; if that key is not the account's any more (a key change, here or on another
    replica), the account is read afresh and the signature checked again with its current key.
    """
    thumbprint = _LAST_THUMBPRINT.get(account_id)
    if thumbprint is None or not _signed_by(parsed, _PARSED_KEYS.get(thumbprint), alg):
        thumbprint = await _read_key(services, account_id)
        jws.verify_signature(parsed, _PARSED_KEYS[thumbprint], alg)
    account = await _redeem_as(services, account_id, thumbprint, nonce, expires)
    if account.key_thumbprint == thumbprint:
        return account
    # The key changed since it was read: the request must verify with the account's key as it is now.
    thumbprint = _remember(account)
    jws.verify_signature(parsed, _PARSED_KEYS[thumbprint], alg)
    account = await _redeem_as(services, account_id, thumbprint, nonce, expires)
    if account.key_thumbprint != thumbprint:
        raise Unauthorized("the account key changed while the request was checked; sign it again with the current key")
    return account


async def _read_key(services: Services, account_id: str) -> str:
    async with services.store.read() as tx:
        account = await repo.get(tx, Account, account_id)
    return _remember(_valid(account, account_id))


async def _redeem_as(services: Services, account_id: str, thumbprint: str, nonce: str, expires: datetime) -> Account:
    """The account, valid; the nonce redeemed if the account still has the key `thumbprint`."""
    account, redeemed = await repo.redeem_nonce_as(services.store, account_id, thumbprint, nonce, expires)
    account = _valid(account, account_id)
    if account.key_thumbprint == thumbprint and not redeemed:
        raise BadNonce("nonce has already been used")
    return account


def _signed_by(parsed: jws.ParsedJWS, jwk: jose.JWK | None, alg: jose.JWASignature) -> bool:
    if jwk is None:
        return False
    try:
        jws.verify_signature(parsed, jwk, alg)
    except AcmeProblem:
        return False
    return True


async def _redeem(tx: repo.Transaction, nonce: str, expires: datetime) -> None:
    if not await repo.redeem_nonce(tx, nonce, expires):
        raise BadNonce("nonce has already been used")


_PARSED_KEYS: dict[str, jose.JWK] = {}  # thumbprint -> parsed key
_LAST_THUMBPRINT: dict[str, str] = {}  # account id -> thumbprint of the key last read for it
_CACHE_ENTRIES = 4096  # the most entries each of the two keeps


def account_key(account: Account) -> jose.JWK:
    """The account's parsed key, parsed once: a thumbprint (RFC 7638) names exactly one public
    key, so it is the cache key; a key change stores a new thumbprint."""
    return _PARSED_KEYS[_remember(account)]


def _remember(account: Account) -> str:
    """Keep the account's parsed key and which key the account had; returns its thumbprint."""
    thumbprint = account.key_thumbprint
    if thumbprint not in _PARSED_KEYS:
        _bounded(_PARSED_KEYS)[thumbprint] = jose.JWK.from_json(account.jwk)
    if _LAST_THUMBPRINT.get(account.id) != thumbprint:
        _bounded(_LAST_THUMBPRINT)[account.id] = thumbprint
    return thumbprint


def _bounded(cache: dict) -> dict:
    if len(cache) >= _CACHE_ENTRIES:
        cache.pop(next(iter(cache)))  # the oldest entry
    return cache


def _account_id(links: Links, kid: Any) -> str:
    if not isinstance(kid, str):
        raise Malformed("kid must be a string")
    account_id = links.account_id_from_url(kid)
    if account_id is None:
        raise AccountDoesNotExist(f"kid {kid!r} is not an account URL of this server")
    return account_id


def _valid(account: Account | None, account_id: str) -> Account:
    if account is None:
        raise AccountDoesNotExist(f"account {account_id} does not exist")
    if account.status != "valid":
        # RFC 8555 §7.3.6: 401, although `unauthorized` is 403 everywhere else
        raise Unauthorized(f"the account is {account.status}", status=401)
    return account
