"""RFC 8555 §7.3: accounts, contacts, external account binding, update, deactivation, key change."""

from __future__ import annotations

import base64
import json

import josepy as jose
import pytest

from ca.accounts import create_eab_key
from tests.acme_client import AcmeSession, b64, new_key, sign
from tests.ca.test_acme_jws import problem


async def test_new_account_created_then_returned(acme):
    created = await acme.new_account({"termsOfServiceAgreed": True, "contact": ["mailto:ops@example.com"]})
    assert created.status == 201
    body = await created.json()
    assert body["status"] == "valid" and body["contact"] == ["mailto:ops@example.com"]
    assert body["orders"] == created.headers["Location"] + "/orders"
    again = await acme.post(acme.directory["newAccount"], {}, use_kid=False)
    assert again.status == 200 and again.headers["Location"] == created.headers["Location"]


async def test_only_return_existing_for_unknown_key(acme):
    response = await acme.post(acme.directory["newAccount"], {"onlyReturnExisting": True}, use_kid=False)
    await problem(response, "accountDoesNotExist", 400)


@pytest.mark.parametrize("contact, kind", [
    (["tel:+1555"], "unsupportedContact"),
    (["mailto:"], "invalidContact"),
    (["mailto:a@example.com?subject=x"], "invalidContact"),
    (["mailto:a@example.com,b@example.com"], "invalidContact"),
    (["mailto:a@example.com\n"], "invalidContact"),
    ("mailto:a@example.com", "malformed"),
    ([f"mailto:a{i}@example.com" for i in range(11)], "invalidContact"),
])
async def test_contact_rejections(acme, contact, kind):
    await problem(await acme.new_account({"contact": contact}), kind, 400)


async def test_terms_of_service_must_be_agreed_when_configured(start_app):
    client, _ = await start_app(terms_of_service="https://example.com/tos")
    acme = AcmeSession(client)
    await acme.load_directory()
    assert acme.directory["meta"]["termsOfService"] == "https://example.com/tos"
    doc = await problem(await acme.new_account({}), "malformed", 400)
    assert "terms of service" in doc["detail"]
    assert (await acme.new_account({"termsOfServiceAgreed": True})).status == 201


async def test_account_update_and_deactivation(acme):
    await acme.new_account()
    updated = await acme.post(acme.kid, {"contact": ["mailto:new@example.com"]})
    assert (await updated.json())["contact"] == ["mailto:new@example.com"]
    fetched = await acme.get(acme.kid)
    assert (await fetched.json())["contact"] == ["mailto:new@example.com"]
    await problem(await acme.post(acme.kid, {"status": "valid"}), "malformed", 400)
    gone = await acme.post(acme.kid, {"status": "deactivated"})
    assert (await gone.json())["status"] == "deactivated"
    doc = await problem(await acme.new_order([{"type": "ip", "value": "127.0.0.1"}]), "unauthorized", 401)
    assert "deactivated" in doc["detail"]
    doc = await problem(await acme.get(acme.kid), "unauthorized", 401)  # POST-as-GET too (RFC 8555 §7.3.6)
    assert "deactivated" in doc["detail"]


@pytest.mark.parametrize("payload", [{}, {"onlyReturnExisting": True}, {"termsOfServiceAgreed": True}])
async def test_new_account_with_a_deactivated_accounts_key_is_unauthorized(acme, payload):
    await acme.new_account()
    assert (await acme.post(acme.kid, {"status": "deactivated"})).status == 200
    doc = await problem(await acme.post(acme.directory["newAccount"], payload, use_kid=False), "unauthorized", 401)
    assert "the account for this key is deactivated" in doc["detail"]


async def test_another_accounts_url_is_unauthorized(acme):
    await acme.new_account()
    other = AcmeSession(acme.http, directory=acme.directory)
    await other.new_account()
    await problem(await acme.post(other.kid, None), "unauthorized", 403)


def _eab(acme: AcmeSession, key_id: str, hmac_key: bytes, *, url: str | None = None, payload=None,
         extra_header: dict | None = None, raw_protected: bytes | None = None, raw_payload: bytes | None = None) -> dict:
    header = {"alg": "HS256", "kid": key_id, "url": url or acme.directory["newAccount"], **(extra_header or {})}
    protected = b64(raw_protected or json.dumps(header).encode())
    body = b64(raw_payload or json.dumps(payload or acme.key.public_key().to_partial_json()).encode())
    mac = jose.HS256.sign(hmac_key, f"{protected}.{body}".encode())
    return {"protected": protected, "payload": body, "signature": b64(mac)}


async def test_external_account_binding(start_app):
    client, services = await start_app(require_eab=True)
    acme = AcmeSession(client)
    await acme.load_directory()
    assert acme.directory["meta"]["externalAccountRequired"] is True
    await problem(await acme.new_account({}), "externalAccountRequired", 400)
    key_id, key_b64 = await create_eab_key(services, "test")
    hmac_key = base64.urlsafe_b64decode(key_b64 + "=" * (-len(key_b64) % 4))
    bad = _eab(acme, key_id, b"wrong-key" * 4)
    await problem(await acme.new_account({"externalAccountBinding": bad}), "unauthorized", 403)
    wrong_url = _eab(acme, key_id, hmac_key, url=acme.url("/acme/new-order"))
    await problem(await acme.new_account({"externalAccountBinding": wrong_url}), "malformed", 400)
    other_key = _eab(acme, key_id, hmac_key, payload=new_key().public_key().to_partial_json())
    await problem(await acme.new_account({"externalAccountBinding": other_key}), "malformed", 400)
    assert (await acme.new_account({"externalAccountBinding": _eab(acme, key_id, hmac_key)})).status == 201
    second = AcmeSession(client, directory=acme.directory)
    doc = await problem(await second.new_account({"externalAccountBinding": _eab(second, key_id, hmac_key)}), "unauthorized", 403)
    assert "already bound" in doc["detail"]


_DEEP = b"[" * 10_000


@pytest.mark.parametrize("fault, detail", [
    (dict(raw_payload=_DEEP), "externalAccountBinding payload is not valid JSON: nested too deeply"),
    (dict(raw_protected=_DEEP), "externalAccountBinding protected header is not valid JSON: nested too deeply"),
    (dict(extra_header={"crit": ["exp"], "exp": 1}), "RFC 7515 §4.1.11"),
    (dict(extra_header={"b64": False, "crit": ["b64"]}), "RFC 7515 §4.1.11"),
    (dict(extra_header={"b64": True}), "RFC 8555 §6.2"),
])
async def test_external_account_binding_faults_are_malformed(start_app, fault, detail):
    client, services = await start_app(require_eab=True)
    acme = AcmeSession(client)
    await acme.load_directory()
    key_id, key_b64 = await create_eab_key(services, "test")
    hmac_key = base64.urlsafe_b64decode(key_b64 + "=" * (-len(key_b64) % 4))
    doc = await problem(await acme.new_account({"externalAccountBinding": _eab(acme, key_id, hmac_key, **fault)}), "malformed", 400)
    assert detail in doc["detail"]


async def test_key_change(acme):
    await acme.new_account()
    new = new_key()
    url = acme.directory["keyChange"]
    inner = sign({"account": acme.kid, "oldKey": acme.key.public_key().to_partial_json()}, key=new, url=url, nonce=None)
    response = await acme.post(url, inner)
    assert response.status == 200, await response.text()
    old_key = acme.key
    acme.key = new
    assert (await acme.get(acme.kid)).status == 200
    acme.key = old_key
    await problem(await acme.get(acme.kid), "malformed", 400)  # old key no longer verifies


async def test_right_after_a_key_change_the_old_key_is_refused_and_consumes_no_nonce(acme):
    """The server remembers the key it last verified an account's requests with; a request signed
    with that key after a key change must still be refused, and must not use up its nonce."""
    await acme.new_account()
    assert (await acme.get(acme.kid)).status == 200  # the server has now seen the old key at work
    old_key, new = acme.key, new_key()
    url = acme.directory["keyChange"]
    inner = sign({"account": acme.kid, "oldKey": old_key.public_key().to_partial_json()}, key=new, url=url, nonce=None)
    assert (await acme.post(url, inner)).status == 200
    nonce = await acme.nonce()
    doc = await problem(await acme.post(acme.kid, None, nonce=nonce), "malformed", 400)
    assert "signature does not verify" in doc["detail"]
    acme.key = new
    assert (await acme.post(acme.kid, None, nonce=nonce)).status == 200, "the refused request used up the nonce"


@pytest.mark.parametrize("mutation, kind", [
    ("wrong-account", "unauthorized"),
    ("wrong-old-key", "unauthorized"),
    ("inner-nonce", "malformed"),
    ("inner-url", "malformed"),
    ("inner-kid", "malformed"),
])
async def test_key_change_rejections(acme, mutation, kind):
    await acme.new_account()
    new = new_key()
    url = acme.directory["keyChange"]
    payload = {"account": acme.kid, "oldKey": acme.key.public_key().to_partial_json()}
    inner_url, nonce = url, None
    if mutation == "wrong-account":
        payload["account"] = acme.kid + "x"
    if mutation == "wrong-old-key":
        payload["oldKey"] = new_key().public_key().to_partial_json()
    if mutation == "inner-nonce":
        nonce = await acme.nonce()
    if mutation == "inner-url":
        inner_url = acme.directory["newOrder"]
    inner = sign(payload, key=new, url=inner_url, nonce=nonce, kid=acme.kid if mutation == "inner-kid" else None)
    await problem(await acme.post(url, inner), kind)


def _raw_jws(protected: bytes, payload: bytes, key: jose.JWK) -> dict[str, str]:
    protected_b64, payload_b64 = b64(protected), b64(payload)
    signature = jose.ES256.sign(key.key, f"{protected_b64}.{payload_b64}".encode())
    return {"protected": protected_b64, "payload": payload_b64, "signature": b64(signature)}


@pytest.mark.parametrize("fault, kind, detail", [
    ("jwk-x-number", "badPublicKey", "'x'"),
    ("jwk-n-list", "badPublicKey", "'n'"),
    ("crit", "malformed", "RFC 7515 §4.1.11"),
    ("b64", "malformed", "RFC 8555 §6.2"),
    ("deep-protected", "malformed", "key-change inner JWS protected header is not valid JSON: nested too deeply"),
    ("deep-payload", "malformed", "key-change inner payload is not valid JSON: nested too deeply"),
    ("deep-inner", "malformed", "key-change inner JWS is not valid JSON: nested too deeply"),
])
async def test_key_change_inner_jws_faults(acme, fault, kind, detail):
    """The inner JWS is parsed like the outer one: the same problems, never a 500."""
    await acme.new_account()
    new, url = new_key(), acme.directory["keyChange"]
    header = {"alg": "ES256", "url": url, "jwk": new.public_key().to_partial_json()}
    payload = json.dumps({"account": acme.kid, "oldKey": acme.key.public_key().to_partial_json()}).encode()
    protected = None
    if fault == "jwk-x-number":
        header["jwk"] = {**header["jwk"], "x": 5}
    if fault == "jwk-n-list":
        header["jwk"] = {"kty": "RSA", "n": [], "e": "AQAB"}
    if fault == "crit":
        header.update(crit=["exp"], exp=1)
    if fault == "b64":
        header["b64"] = False
    if fault == "deep-protected":
        protected = _DEEP
    if fault == "deep-payload":
        payload = _DEEP
    inner = _raw_jws(protected or json.dumps(header).encode(), payload, new)
    if fault == "deep-inner":
        # the outer payload, which should be the inner JWS, is itself the nesting
        body = sign(None, key=acme.key, url=url, nonce=await acme.nonce(), kid=acme.kid)
        body["payload"] = b64(_DEEP)
        body["signature"] = b64(jose.ES256.sign(acme.key.key, f"{body['protected']}.{body['payload']}".encode()))
        response = await acme.http.post("/acme/key-change", data=json.dumps(body), headers={"Content-Type": "application/jose+json"})
    else:
        response = await acme.post(url, inner)
    doc = await problem(response, kind, 400)
    assert detail in doc["detail"]


async def test_key_change_to_a_key_in_use_is_conflict(acme):
    await acme.new_account()
    other = AcmeSession(acme.http, directory=acme.directory)
    await other.new_account()
    url = acme.directory["keyChange"]
    inner = sign({"account": acme.kid, "oldKey": acme.key.public_key().to_partial_json()}, key=other.key, url=url, nonce=None)
    response = await acme.post(url, inner)
    await problem(response, "malformed", 409)
    assert response.headers["Location"] == other.kid


async def test_two_accounts_changing_to_one_new_key_at_once_get_409_not_500(acme, monkeypatch):
    """Each key change checks that no account holds the new key, then updates; two at once (on
    PostgreSQL's READ COMMITTED) can both pass the check, and the second update then hits the
    unique key. The check is made to miss here, standing in for that timing, which cannot be
    arranged over HTTP."""
    from ca.storage import repository as repo

    await acme.new_account()
    other = AcmeSession(acme.http, directory=acme.directory)
    await other.new_account()
    url = acme.directory["keyChange"]
    shared = new_key()
    first = sign({"account": other.kid, "oldKey": other.key.public_key().to_partial_json()}, key=shared, url=url, nonce=None)
    assert (await other.post(url, first)).status == 200
    found, checks = repo.account_by_thumbprint, []

    async def missed(tx, thumbprint):
        holder = await found(tx, thumbprint)
        checks.append(thumbprint)
        return None if len(checks) == 1 else holder  # the first check runs before the other change commits

    monkeypatch.setattr(repo, "account_by_thumbprint", missed)
    second = sign({"account": acme.kid, "oldKey": acme.key.public_key().to_partial_json()}, key=shared, url=url, nonce=None)
    response = await acme.post(url, second)
    doc = await problem(response, "malformed", 409)
    assert "already in use" in doc["detail"]
    assert response.headers["Location"] == other.kid
    assert len(checks) == 2, "the key's holder is looked up again after the update was refused"
