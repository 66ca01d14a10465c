"""Account flows (RFC 8555 §7.3): new account, external account binding, update, key change."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import josepy as jose

from ca import jws
from ca.auth import AuthenticatedRequest
from ca.links import Links
from ca.nonces import b64url
from ca.problems import (
    AccountDoesNotExist,
    ExternalAccountRequired,
    InvalidContact,
    Malformed,
    Unauthorized,
    UnsupportedContact,
)
from ca.services import Services
from ca.storage import repository as repo
from ca.storage.records import Account, EabKey

MAX_CONTACTS = 10
_EMAIL = re.compile(r"[^@\s,;<>()\[\]\\\"]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")  # fullmatch: `$` allows a final newline


@dataclass(frozen=True)
class AccountResult:
    account: Account
    created: bool


def parse_contacts(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise Malformed("contact must be an array of URL strings")
    if len(value) > MAX_CONTACTS:
        raise InvalidContact(f"at most {MAX_CONTACTS} contacts are allowed")
    for contact in value:
        scheme, _, address = contact.partition(":")
        if scheme.lower() != "mailto":
            raise UnsupportedContact(f"contact {contact!r}: only mailto: URLs are supported")
        if "?" in address or not _EMAIL.fullmatch(address):
            raise InvalidContact(f"contact {contact!r} is not a single plain e-mail address")
    return list(value)


async def new_account(services: Services, links: Links, request: AuthenticatedRequest) -> AccountResult:
    payload = request.payload()
    thumb = jws.thumbprint(request.jwk)
    async with services.store.read() as tx:
        existing = await repo.account_by_thumbprint(tx, thumb)
    if existing is not None:
        return AccountResult(_usable(existing), created=False)
    if payload.get("onlyReturnExisting") is True:
        raise AccountDoesNotExist("no account exists for this key")
    contacts = parse_contacts(payload.get("contact", []))
    agreed = payload.get("termsOfServiceAgreed") is True
    if services.config.terms_of_service and not agreed:
        raise Malformed(f"you must agree to the terms of service at {services.config.terms_of_service}")
    eab = payload.get("externalAccountBinding")
    if eab is None and services.config.require_eab:
        raise ExternalAccountRequired("this server requires external account binding (externalAccountBinding)")
    eab_key_id = _verify_eab(eab, request, links) if eab is not None else None
    account = Account(
        id=repo.new_id(), key_thumbprint=thumb, jwk=request.jwk.to_partial_json(), status="valid",
        contact=contacts, tos_agreed=agreed, eab_key_id=eab_key_id[0] if eab_key_id else None,
        created_at=services.clock.now(),
    )
    try:
        async with services.store.transaction() as tx:
            if eab_key_id is not None:
                await _bind_eab_key(tx, eab_key_id, account.id, services)
            await repo.insert(tx, account)
    except repo.Conflict:  # the same key registered concurrently: return that account
        async with services.store.read() as tx:
            existing = await repo.account_by_thumbprint(tx, thumb)
        if existing is None:
            raise
        return AccountResult(_usable(existing), created=False)
    return AccountResult(account, created=True)


def _usable(existing: Account) -> Account:
    """The key's account, unless it may no longer act: as for its other requests (RFC 8555
    §7.3.6), a deactivated account's key gets 401, not the account (as Boulder and Pebble do)."""
    if existing.status != "valid":
        raise Unauthorized(f"the account for this key is {existing.status}", status=401)
    return existing


def _verify_eab(eab: Any, request: AuthenticatedRequest, links: Links) -> tuple[str, jws.ParsedJWS]:
    """Check the binding's form (§7.3.4); the MAC is checked against the stored key in `_bind_eab_key`."""
    if not isinstance(eab, dict):
        raise Malformed("externalAccountBinding must be a JWS object")
    inner = jws.parse_flattened(eab, what="externalAccountBinding")
    header = inner.header
    if not isinstance(header.get("alg"), str) or header["alg"] not in jws.MAC_ALGORITHMS:
        raise Malformed(f"externalAccountBinding alg must be one of {', '.join(sorted(jws.MAC_ALGORITHMS))}")
    if "nonce" in header:
        raise Malformed("externalAccountBinding must not have a nonce")
    if header.get("url") != request.url:
        raise Malformed("externalAccountBinding url must equal the newAccount URL")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Malformed("externalAccountBinding must name its key in kid")
    bound_jwk = jws.load_json(inner.payload, "externalAccountBinding payload")
    if not isinstance(bound_jwk, dict) or jws.thumbprint_of_json(bound_jwk) != jws.thumbprint(request.jwk):
        raise Malformed("externalAccountBinding payload must be the account's public key (the outer jwk)")
    return kid, inner


async def _bind_eab_key(tx: repo.Transaction, eab: tuple[str, jws.ParsedJWS], account_id: str, services: Services) -> None:
    kid, inner = eab
    row = await repo.get(tx, EabKey, kid)
    alg = jws.MAC_ALGORITHMS[inner.header["alg"]]
    if row is None or not alg.verify(jose.JWKOct(key=row.hmac_key).key, inner.signing_input, inner.signature):
        raise Unauthorized("externalAccountBinding does not verify with a known key")
    bound = await tx.run('UPDATE "eab_key" SET account_id = ?, bound_at = ? WHERE key_id = ? AND account_id IS NULL',
                         account_id, services.clock.now(), kid)
    if bound != 1:
        raise Unauthorized(f"external account key {kid!r} is already bound to an account")


async def update_account(services: Services, request: AuthenticatedRequest, account_id: str) -> Account:
    account = _own_account(request, account_id)
    if request.is_post_as_get:
        return account
    payload = request.payload()
    changes: dict[str, Any] = {}
    if "contact" in payload:
        changes["contact"] = parse_contacts(payload["contact"])
    if payload.get("termsOfServiceAgreed") is True:
        changes["tos_agreed"] = True
    if "status" in payload:
        if payload["status"] != "deactivated":
            raise Malformed("an account's status can only be changed to deactivated")
        changes["status"] = "deactivated"
    async with services.store.transaction() as tx:
        if changes:
            await repo.update(tx, Account, account.id, **changes)
        row = await repo.get(tx, Account, account.id)
    assert row is not None
    return row


def _own_account(request: AuthenticatedRequest, account_id: str) -> Account:
    assert request.account is not None
    if request.account.id != account_id:
        raise Unauthorized("the request is signed by a different account")
    return request.account


async def change_key(services: Services, links: Links, request: AuthenticatedRequest) -> Account:
    """RFC 8555 §7.3.5: the inner JWS, signed by the new key, names the account and its old key."""
    account = request.account
    assert account is not None
    inner = jws.parse_jws(request.jws.payload, what="key-change inner JWS")
    header = inner.header
    alg = jws.signature_algorithm(header)
    if "jwk" not in header or "kid" in header:
        raise Malformed("key-change inner JWS must carry the new key in jwk (and no kid)")
    if "nonce" in header:
        raise Malformed("key-change inner JWS must not have a nonce")
    if header.get("url") != request.url:
        raise Malformed("key-change inner JWS url must equal the outer url")
    new_jwk = jws.parse_account_key(header["jwk"])
    jws.verify_signature(inner, new_jwk, alg, what="key-change inner JWS")
    payload = jws.payload_json(inner, what="key-change inner payload")
    if payload.get("account") != links.account(account.id):
        raise Unauthorized("key-change inner payload names a different account than the outer kid")
    old = payload.get("oldKey")
    if not isinstance(old, dict) or jws.thumbprint_of_json(old) != account.key_thumbprint:
        raise Unauthorized("key-change oldKey is not the account's current key")
    new_thumb = jws.thumbprint(new_jwk)
    try:
        async with services.store.transaction() as tx:
            holder = await repo.account_by_thumbprint(tx, new_thumb)
            if holder is not None:
                raise _key_in_use(links, holder)
            changed = await tx.run('UPDATE "account" SET jwk = ?, key_thumbprint = ? WHERE id = ? AND key_thumbprint = ?',
                                   new_jwk.to_partial_json(), new_thumb, account.id, account.key_thumbprint)
            if changed != 1:
                raise Unauthorized("the account key changed concurrently; retry with the current key")
            row = await repo.get(tx, Account, account.id)
    except repo.Conflict:  # another account took the key between the check and the update (PostgreSQL)
        async with services.store.read() as tx:
            holder = await repo.account_by_thumbprint(tx, new_thumb)
        if holder is None:  # and gave it up again since: the client may simply retry
            raise Malformed("the new key was taken by another account concurrently; retry", status=409) from None
        raise _key_in_use(links, holder) from None
    assert row is not None
    return row


def _key_in_use(links: Links, holder: Account) -> Malformed:
    return Malformed("the new key is already in use by an account", status=409,
                     headers={"Location": links.account(holder.id)})


async def create_eab_key(services: Services, label: str = "") -> tuple[str, str]:
    """Operator action: a new external account key; returns (key id, base64url HMAC key)."""
    key_id, key = secrets.token_urlsafe(12), secrets.token_bytes(32)
    async with services.store.transaction() as tx:
        await repo.insert(tx, EabKey(key_id=key_id, hmac_key=key, label=label, created_at=services.clock.now()))
    return key_id, b64url(key)
