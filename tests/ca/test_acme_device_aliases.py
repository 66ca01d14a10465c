"""Enrollment aliases stand for an attested identifier in its text form, assigner included.

The TEST-ONLY stand-in format "test-ids" signs the key authorization with a fixed key and
reports the identifiers its statement lists: `perm` as (value, assigner or null) pairs and
`hw` as (hwType, serial) pairs. It stands for any format (a YubiKey, a cloud instance, a
TPM's hardware module); the real formats are tested in tests/attestation. Runs on SQLite
and PostgreSQL (the `start_app` fixture).
"""

from __future__ import annotations

import secrets
from typing import Any, Mapping

import cbor2
from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.assigners import GCE_INSTANCE_ID
from attestation.errors import InvalidSignature
from attestation.evidence import Evidence, HardwareModule, PermanentIdentifier, TrustLevel
from attestation.format import Format, key_authorization_binding
from enroll.aliases import AliasRegistry
from tests.acme_client import AcmeSession, b64
from tests.ca.flow import poll

SIGNER = ec.generate_private_key(ec.SECP256R1())
YUBICO_PIV = "1.3.6.1.4.1.41482.3.7"


def _verify(stmt: Mapping[str, Any], ctx) -> Evidence:
    try:
        SIGNER.public_key().verify(stmt["sig"], ctx.binding.att_to_be_signed, ec.ECDSA(hashes.SHA256()))
    except _BadSignature:
        raise InvalidSignature("test-ids: sig does not verify") from None
    return Evidence(fmt="test-ids", public_key=None, trust_level=TrustLevel.CLOUD,
                    permanent_identifiers=tuple(PermanentIdentifier(v, a) for v, a in stmt.get("perm", [])),
                    hardware_modules=tuple(HardwareModule(t, s.encode()) for t, s in stmt.get("hw", [])),
                    attested_at=ctx.now)


FORMATS = {"test-ids": Format("test-ids", _verify, key_authorization_binding)}


async def _setup(start_app) -> tuple[AcmeSession, AliasRegistry]:
    client, services = await start_app(formats=FORMATS, device_min_trust_level="cloud")
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    return acme, AliasRegistry(services.store, services.clock)


async def _enroll(acme: AcmeSession, alias: str, **identifiers: list) -> dict:
    order = await (await acme.new_order([{"type": "permanent-identifier", "value": alias}])).json()
    authz_url = order["authorizations"][0]
    challenge = (await (await acme.get(authz_url)).json())["challenges"][0]
    keyauth = acme.key_authorization(challenge["token"]).encode()
    stmt = {"sig": SIGNER.sign(keyauth, ec.ECDSA(hashes.SHA256())), **identifiers}
    await acme.post(challenge["url"], {"attObj": b64(cbor2.dumps({"fmt": "test-ids", "attStmt": stmt}))})
    return await poll(acme, authz_url, {"valid", "invalid"})


def _alias() -> str:
    return f"ENROLL-{secrets.token_hex(6)}"  # the PostgreSQL database lives for the whole session


async def test_alias_for_a_serial_without_assigner_is_not_satisfied_by_the_same_value_with_one(start_app):
    acme, registry = await _setup(start_app)
    yubikey = _alias()
    await registry.add(yubikey, "12345678")  # a YubiKey serial: no assigner
    cloud = await _enroll(acme, yubikey, perm=[["12345678", GCE_INSTANCE_ID]])  # a GCE instance 12345678
    assert cloud["status"] == "invalid"
    assert "registered for another device" in cloud["challenges"][0]["error"]["detail"]
    assert (await _enroll(acme, yubikey, perm=[["12345678", None]]))["status"] == "valid"


async def test_alias_registered_in_the_value_slash_assigner_form_matches(start_app):
    acme, registry = await _setup(start_app)
    instance = _alias()
    await registry.add(instance, f"999/{GCE_INSTANCE_ID}")
    assert (await _enroll(acme, instance, perm=[["999", None]]))["status"] == "invalid", "the assigner is part of it"
    assert (await _enroll(acme, instance, perm=[["999", GCE_INSTANCE_ID]]))["status"] == "valid"


async def test_alias_for_a_hardware_module_matches_its_serial_slash_type_form(start_app):
    acme, registry = await _setup(start_app)
    module = _alias()
    await registry.add(module, f"SN-42/{YUBICO_PIV}")
    assert (await _enroll(acme, module, perm=[["SN-42", None]]))["status"] == "invalid"
    assert (await _enroll(acme, module, hw=[[YUBICO_PIV, "SN-42"]]))["status"] == "valid"
