"""Ownership of a device identifier across bound and replayable evidence (trust on first use).

An EC2 instance proves one identifier both ways: aws-nitro (bound to the challenge) and
aws-iid (a document with no nonce, which anyone who saw it can present again). The
TEST-ONLY stand-in formats here model the two: "test-bound" signs the key authorization,
"test-replayable" is a fixed document naming the instance, accepted for any challenge, so
account B literally replays the bytes account A's machine sent. The real formats are tested
on recorded evidence in tests/attestation and tests/ca/test_acme_device_nitro.py /
test_acme_device_cloud_iid.py. Runs on SQLite and PostgreSQL (the `start_app` fixture).
"""

from __future__ import annotations

import secrets
from typing import Any, Mapping

import cbor2
from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.errors import InvalidSignature
from attestation.evidence import Evidence, PermanentIdentifier, TrustLevel
from attestation.format import Format, key_authorization_binding
from enroll.aliases import AliasRegistry
from tests.acme_client import AcmeSession, b64
from tests.ca.flow import poll

CLOUD_KEY = ec.generate_private_key(ec.SECP256R1())
ASSIGNER = "2.25.1"


def _signed(stmt: Mapping[str, Any], message: bytes) -> None:
    try:
        CLOUD_KEY.public_key().verify(stmt["sig"], message, ec.ECDSA(hashes.SHA256()))
    except _BadSignature:
        raise InvalidSignature("test: sig does not verify") from None


def _evidence(fmt: str, instance: str, ctx, *, replayable: bool) -> Evidence:
    return Evidence(fmt=fmt, public_key=None, trust_level=TrustLevel.CLOUD,
                    permanent_identifiers=(PermanentIdentifier(instance, ASSIGNER),), attested_at=ctx.now,
                    replayable=replayable)


def _bound(stmt: Mapping[str, Any], ctx) -> Evidence:
    _signed(stmt, ctx.binding.att_to_be_signed)
    return _evidence("test-bound", stmt["instance"], ctx, replayable=False)


def _replayable(stmt: Mapping[str, Any], ctx) -> Evidence:
    _signed(stmt, stmt["instance"].encode())  # signs the instance only: no challenge binding
    return _evidence("test-replayable", stmt["instance"], ctx, replayable=True)


FORMATS = {"test-bound": Format("test-bound", _bound, key_authorization_binding),
           "test-replayable": Format("test-replayable", _replayable, key_authorization_binding)}


def _statement(fmt: str, instance: str, key_authorization: bytes) -> dict:
    message = key_authorization if fmt == "test-bound" else instance.encode()
    return {"fmt": fmt, "attStmt": {"instance": instance, "sig": CLOUD_KEY.sign(message, ec.ECDSA(hashes.SHA256()))}}


async def _accounts(start_app, count: int) -> tuple[Any, list[AcmeSession]]:
    client, services = await start_app(formats=FORMATS, device_min_trust_level="cloud")
    sessions = []
    for _ in range(count):
        session = AcmeSession(client)
        await session.load_directory()
        await session.new_account()
        sessions.append(session)
    return services, sessions


def _instance() -> str:
    """An instance id of its own per test: the PostgreSQL database lives for the whole session."""
    return f"i-{secrets.token_hex(8)}"


async def _enroll(acme: AcmeSession, fmt: str, instance: str, ordered: str | None = None) -> dict:
    ordered = ordered or f"{instance}/{ASSIGNER}"
    order = await (await acme.new_order([{"type": "permanent-identifier", "value": ordered}])).json()
    authz_url = order["authorizations"][0]
    challenge = (await (await acme.get(authz_url)).json())["challenges"][0]
    att = _statement(fmt, instance, acme.key_authorization(challenge["token"]).encode())
    await acme.post(challenge["url"], {"attObj": b64(cbor2.dumps(att))})
    return await poll(acme, authz_url, {"valid", "invalid"})


def _refused_as_owned(authz: dict) -> bool:
    detail = authz["challenges"][0].get("error", {}).get("detail", "")
    return authz["status"] == "invalid" and "first enrolled by another account" in detail


async def test_bound_enrollment_makes_the_account_owner_of_the_replayable_path(start_app):
    _services, (a, b) = await _accounts(start_app, 2)
    instance = _instance()
    assert (await _enroll(a, "test-bound", instance))["status"] == "valid"
    stranger = await _enroll(b, "test-replayable", instance)
    assert _refused_as_owned(stranger), "a replayed document must not make another account the first user"
    assert (await _enroll(a, "test-replayable", instance))["status"] == "valid", "the owner keeps its replayable path"
    assert (await _enroll(b, "test-bound", instance))["status"] == "valid", "bound evidence is admitted whoever owns"


async def test_bound_evidence_takes_ownership_over_from_a_replaying_squatter(start_app):
    _services, (owner, squatter) = await _accounts(start_app, 2)
    instance = _instance()
    assert (await _enroll(squatter, "test-replayable", instance))["status"] == "valid", "trust on first use"
    assert _refused_as_owned(await _enroll(owner, "test-replayable", instance))
    assert (await _enroll(owner, "test-bound", instance))["status"] == "valid"
    assert (await _enroll(owner, "test-replayable", instance))["status"] == "valid", "fresh possession moved ownership"
    assert _refused_as_owned(await _enroll(squatter, "test-replayable", instance))


async def test_ownership_follows_the_attested_identifier_behind_an_alias(start_app):
    services, (a, b) = await _accounts(start_app, 2)
    instance = _instance()
    alias = f"ENROLL-{secrets.token_hex(4)}"
    await AliasRegistry(services.store, services.clock).add(alias, f"{instance}/{ASSIGNER}", single_use=False)
    assert (await _enroll(a, "test-bound", instance))["status"] == "valid"
    aliased = await _enroll(b, "test-replayable", instance, ordered=alias)
    assert _refused_as_owned(aliased), "an alias must not open a second, unowned name for the instance"
    assert (await _enroll(a, "test-replayable", instance, ordered=alias))["status"] == "valid"
