"""RFC 8555 §6: every JWS and nonce rejection gets the right problem type (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import josepy as jose
import pytest

from ca.app import machine_boot_time
from ca.clock import FrozenClock
from ca.nonces import NonceService, b64url_decode

from tests.acme_client import b64, new_key, relative, sign

ACME_ERR = "urn:ietf:params:acme:error:"


async def problem(response, type_: str, status: int | None = None) -> dict:
    assert response.content_type == "application/problem+json", await response.text()
    doc = await response.json()
    assert doc["type"] == ACME_ERR + type_, doc
    if status is not None:
        assert response.status == status, doc
    assert doc["detail"]
    assert response.headers.get("Replay-Nonce"), "error responses must carry a fresh nonce"
    return doc


async def raw_post(acme, url: str, body) -> object:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return await acme.http.post(relative(url), data=data, headers={"Content-Type": "application/jose+json"})


async def test_directory_and_nonce_headers(acme):
    directory = acme.directory
    for name in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange", "renewalInfo"):
        assert directory[name].startswith("http://127.0.0.1:")
    assert directory["meta"]["externalAccountRequired"] is False
    head = await acme.http.head("/acme/new-nonce")
    get = await acme.http.get("/acme/new-nonce")
    assert (head.status, get.status) == (200, 204)
    assert head.headers["Replay-Nonce"] != get.headers["Replay-Nonce"]
    assert head.headers["Cache-Control"] == "no-store"
    assert 'rel="index"' in head.headers["Link"]


async def test_made_up_nonce_is_bad_nonce(acme):
    response = await acme.post(acme.directory["newAccount"], {}, use_kid=False, nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    doc = await problem(response, "badNonce", 400)
    assert "not issued by this server" in doc["detail"]


async def test_missing_nonce_is_bad_nonce(acme):
    await problem(await acme.post(acme.directory["newAccount"], {}, use_kid=False, nonce=None), "badNonce", 400)


async def test_replayed_nonce_is_refused_and_a_fresh_one_offered(acme):
    nonce = await acme.nonce()
    first = await acme.post(acme.directory["newAccount"], {"termsOfServiceAgreed": True}, use_kid=False, nonce=nonce)
    assert first.status == 201
    second = await acme.post(acme.directory["newAccount"], {"termsOfServiceAgreed": True}, use_kid=False, nonce=nonce)
    doc = await problem(second, "badNonce", 400)
    assert "already been used" in doc["detail"]
    retry = await acme.post(acme.directory["newAccount"], {}, use_kid=False, nonce=second.headers["Replay-Nonce"])
    assert retry.status == 200


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


async def test_a_second_spelling_of_a_used_nonce_is_bad_nonce(acme):
    """A nonce's last character carries 4 bits that base64url decoding ignores; another
    spelling of the same bytes must not count as another nonce."""
    nonce = await acme.nonce()
    assert (await acme.post(acme.directory["newAccount"], {"termsOfServiceAgreed": True}, use_kid=False, nonce=nonce)).status == 201
    respelled = nonce[:-1] + _B64URL[_B64URL.index(nonce[-1]) | 1]
    assert respelled != nonce and b64url_decode(respelled) == b64url_decode(nonce)
    doc = await problem(await acme.post(acme.directory["newAccount"], {}, use_kid=False, nonce=respelled), "badNonce", 400)
    assert "canonical" in doc["detail"]


async def test_wrong_url_is_unauthorized(acme):
    body = sign({}, key=acme.key, url=acme.url("/acme/new-order"), nonce=await acme.nonce())
    doc = await problem(await raw_post(acme, acme.directory["newAccount"], body), "unauthorized", 403)
    assert "does not match the request URL" in doc["detail"]


@pytest.mark.parametrize("alg", ["none", "HS256", "RS1", ""])
async def test_disallowed_algorithms(acme, alg):
    body = sign({}, key=acme.key, url=acme.directory["newAccount"], nonce=await acme.nonce(), extra_header={"alg": alg})
    doc = await problem(await raw_post(acme, acme.directory["newAccount"], body), "badSignatureAlgorithm", 400)
    assert "ES256" in doc["algorithms"] and "none" not in doc["algorithms"]


async def test_alg_that_does_not_fit_the_key(acme):
    body = sign({}, key=acme.key, url=acme.directory["newAccount"], nonce=await acme.nonce(), extra_header={"alg": "ES384"})
    await problem(await raw_post(acme, acme.directory["newAccount"], body), "badSignatureAlgorithm", 400)


async def test_bad_signature_is_malformed(acme):
    body = sign({}, key=acme.key, url=acme.directory["newAccount"], nonce=await acme.nonce())
    body["signature"] = b64(b"\x01" * 64)
    doc = await problem(await raw_post(acme, acme.directory["newAccount"], body), "malformed", 400)
    assert "signature does not verify" in doc["detail"]


async def test_jwk_and_kid_together_is_malformed(acme):
    body = sign({}, key=acme.key, url=acme.directory["newAccount"], nonce=await acme.nonce(),
                extra_header={"kid": acme.url("/acme/acct/x")})
    doc = await problem(await raw_post(acme, acme.directory["newAccount"], body), "malformed", 400)
    assert "exactly one of jwk and kid" in doc["detail"]


async def test_new_account_with_kid_is_malformed(acme):
    await acme.new_account()
    response = await acme.post(acme.directory["newAccount"], {})
    await problem(response, "malformed", 400)


async def test_unknown_kid_is_account_does_not_exist(acme):
    acme.kid = acme.url("/acme/acct/doesnotexist")
    await problem(await acme.post(acme.directory["newOrder"], {"identifiers": []}), "accountDoesNotExist", 400)


async def test_foreign_kid_url_is_account_does_not_exist(acme):
    acme.kid = "https://elsewhere.example/acme/acct/1"
    await problem(await acme.post(acme.directory["newOrder"], {}), "accountDoesNotExist", 400)


@pytest.mark.parametrize("body, detail", [
    (b"not json", "not valid JSON"),
    ([], "JSON object"),
    ({"protected": "e30", "payload": "", "signature": "", "header": {}}, "unprotected header"),
    ({"protected": "e30", "payload": ""}, "'signature' is missing"),
    ({"protected": "e30=", "payload": "", "signature": ""}, "base64url"),
    ({"protected": "bm90IGpzb24", "payload": "", "signature": ""}, "protected header is not valid JSON"),
    ({"signatures": [], "payload": ""}, "flattened"),
])
async def test_malformed_jws_structures(acme, body, detail):
    doc = await problem(await raw_post(acme, acme.directory["newAccount"], body), "malformed", 400)
    assert detail in doc["detail"]


@pytest.mark.parametrize("extra, detail", [
    ({"crit": ["exp"], "exp": 1}, "RFC 7515 §4.1.11"),
    ({"b64": False, "crit": ["b64"]}, "RFC 7515 §4.1.11"),
    ({"b64": True}, "RFC 8555 §6.2"),
    ({"b64": False}, "RFC 8555 §6.2"),
])
async def test_header_extensions_are_malformed(acme, extra, detail):
    body = sign({}, key=acme.key, url=acme.directory["newAccount"], nonce=await acme.nonce(), extra_header=extra)
    doc = await problem(await raw_post(acme, acme.directory["newAccount"], body), "malformed", 400)
    assert detail in doc["detail"]


_DEEP = b"[" * 100_000


@pytest.mark.parametrize("where", ["body", "protected", "payload"])
async def test_deeply_nested_json_is_malformed_not_a_crash(acme, where):
    body = sign({}, key=acme.key, url=acme.directory["newAccount"], nonce=await acme.nonce())
    if where == "protected":
        body["protected"] = b64(_DEEP)
    if where == "payload":
        body = sign(None, key=acme.key, url=acme.directory["newAccount"], nonce=await acme.nonce())
        body["payload"] = b64(_DEEP)
        body["signature"] = b64(jose.ES256.sign(acme.key.key, f"{body['protected']}.{body['payload']}".encode()))
    doc = await problem(await raw_post(acme, acme.directory["newAccount"], _DEEP if where == "body" else body), "malformed", 400)
    assert "nested too deeply" in doc["detail"]
    assert {"body": "JWS is", "protected": "protected header", "payload": "payload"}[where] in doc["detail"]


_EC_X = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"


@pytest.mark.parametrize("jwk, member", [
    ({"kty": "EC", "crv": "P-256", "x": 5, "y": None}, "'x'"),
    ({"kty": "EC", "crv": "P-256", "x": _EC_X, "y": None}, "'y'"),
    ({"kty": "EC", "crv": 256, "x": _EC_X, "y": _EC_X}, "'crv'"),
    ({"kty": "RSA", "n": [], "e": "AQAB"}, "'n'"),
    ({"kty": "RSA", "n": "AQAB", "e": 65537}, "'e'"),
    ({"kty": ["EC"]}, "'kty'"),
])
async def test_jwk_members_that_are_not_strings_are_bad_public_key(acme, jwk, member):
    body = sign({}, key=acme.key, url=acme.directory["newAccount"], nonce=await acme.nonce(), extra_header={"jwk": jwk})
    doc = await problem(await raw_post(acme, acme.directory["newAccount"], body), "badPublicKey", 400)
    assert member in doc["detail"]


async def test_wrong_content_type(acme):
    body = sign({}, key=acme.key, url=acme.directory["newAccount"], nonce=await acme.nonce())
    response = await acme.http.post(relative(acme.directory["newAccount"]), data=json.dumps(body), headers={"Content-Type": "application/json"})
    await problem(response, "malformed", 415)


async def test_rsa_key_too_small_is_bad_public_key(acme):
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = jose.JWKRSA(key=rsa.generate_private_key(65537, 1024))
    response = await acme.post(acme.directory["newAccount"], {}, use_kid=False, key=small, alg=jose.RS256)
    await problem(response, "badPublicKey", 400)


async def test_unknown_path_and_method(acme):
    await problem(await acme.http.get("/acme/nothing-here"), "malformed", 404)
    await problem(await acme.http.get("/acme/new-account"), "malformed", 405)


async def test_post_as_get_to_resource_needing_payload(acme):
    await acme.new_account()
    doc = await problem(await acme.post(acme.directory["newOrder"], None), "malformed", 400)
    assert "POST-as-GET" in doc["detail"]


async def test_signed_by_another_accounts_key_is_malformed(acme):
    await acme.new_account()
    other = new_key()
    response = await acme.post(acme.directory["newOrder"], {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]}, key=other)
    doc = await problem(response, "malformed", 400)
    assert "signature" in doc["detail"]


async def test_on_sqlite_a_nonce_minted_before_the_machine_started_is_bad_nonce(acme):
    """On SQLite a nonce's redemption is not waited on to reach the disk (ca.storage.sql), so a
    power cut may forget it; refusing every nonce minted before the boot closes that replay."""
    nonces = acme.services.nonces
    if not acme.services.store.is_sqlite:
        assert nonces.not_before is None, "PostgreSQL commits every redemption durably: nothing to refuse"
        return
    assert nonces.not_before is not None and nonces.not_before <= acme.services.clock.now()
    before_boot = NonceService(nonces._key, FrozenClock(nonces.not_before - timedelta(seconds=1))).issue()
    response = await acme.post(acme.directory["newAccount"], {}, use_kid=False, nonce=before_boot)
    doc = await problem(response, "badNonce", 400)
    assert "minted before the machine last started" in doc["detail"]
    at_boot = NonceService(nonces._key, FrozenClock(nonces.not_before)).issue()
    assert nonces.check(at_boot) == nonces.not_before + nonces.lifetime


def test_the_boot_time_comes_from_proc_stat_and_is_never_after_now(tmp_path):
    now = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nbtime 1764756000\nprocesses 9\n")
    assert machine_boot_time(FrozenClock(now), stat) == datetime.fromtimestamp(1764756000, timezone.utc)
    assert machine_boot_time(FrozenClock(datetime(2025, 1, 1, tzinfo=timezone.utc)), stat) == \
        datetime(2025, 1, 1, tzinfo=timezone.utc), "a clock in the past must still redeem its own nonces"
    assert machine_boot_time(FrozenClock(now), tmp_path / "missing") == now, "unknown: this server's start"


def test_without_proc_stat_a_nonce_minted_at_start_is_accepted(tmp_path):
    """Nonces carry whole seconds: a bound with microseconds would refuse those of its own second."""
    clock = FrozenClock(datetime(2026, 12, 3, 12, 0, 0, 750_000, tzinfo=timezone.utc))
    not_before = machine_boot_time(clock, tmp_path / "missing")
    assert not_before == datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
    nonces = NonceService(b"k" * 32, clock, not_before=not_before)
    assert nonces.check(nonces.issue()) == not_before + nonces.lifetime
