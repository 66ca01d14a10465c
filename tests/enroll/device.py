"""What a device sends in AK enrollment, built with the software TPM of `soft_tpm`: the begin
payload of the wire contract (docs/tpm-enrollment.md) and the answer ActivateCredential gives."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from attestation.tpm.credential import Protector
from attestation.tpm.ek import ek_hash
from ca.nonces import b64url
from tests.enroll import soft_tpm

INTERMEDIATE = soft_tpm.der(soft_tpm.maker().intermediate)


def machine(slot: int = 3) -> tuple:
    """(EK private key, EK certificate, EK hash) of one test machine. The PostgreSQL database
    lives for the session, so a test that registers an EK uses a machine of its own."""
    key = soft_tpm.private_key("rsa", slot)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, soft_tpm.maker().ek_certificate(key.public_key()), ek_hash(spki)


EK_KEY, EK_CERT, EK_HASH = machine()


def payload(ak=None, ek_certificate=EK_CERT, chain=(INTERMEDIATE,), **extra) -> dict:
    body = {"akPublic": b64url((ak or soft_tpm.ak_public()).to_bytes()), **extra}
    if ek_certificate is not None:
        body["ekCertificate"] = b64url(ek_certificate)
        body["ekChain"] = [b64url(c) for c in chain]
    return body


def tpm_answer(begun, ak=None, ek_key=EK_KEY) -> dict:
    """What the TPM answers: ActivateCredential (in software here) of what begin returned."""
    protector = Protector.for_key(ek_key.public_key())
    secret = soft_tpm.activate(ek_key, protector, (ak or soft_tpm.ak_public()).name(), begun.made)
    return {"secret": b64url(secret)}
