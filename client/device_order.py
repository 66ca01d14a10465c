"""The ACME half every device enrollment shares, whatever attests the device (a TPM, a cloud).

Order the device's permanent identifier, answer each device-attest-01 challenge with an
attestation object made for that challenge's key authorization, finalize with a CSR the
device signs, download the chain, and check that it certifies the device's key.
"""

from __future__ import annotations

from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from client.acme import AcmeClient, AcmeError, AcmeProblem, Order, b64url
from client.csr import PermanentIdentifier, build_csr

CHALLENGE = "device-attest-01"
AttestationMaker = Callable[[str], bytes]  # key authorization -> attestation object (CBOR)
DigestSigner = Callable[[bytes], bytes]  # SHA-256 digest -> DER ECDSA signature by the device key


def obtain_device_certificate(acme: AcmeClient, identifier: PermanentIdentifier, spki: bytes, sign_digest: DigestSigner,
                              attestation_object: AttestationMaker, deadline: float, *,
                              replaces: str | None = None) -> bytes:
    """Order, validate, finalize and download: the PEM chain for the key `spki`."""
    order = acme.new_order([{"type": "permanent-identifier", "value": identifier.order_value}], replaces=replaces)
    for authz_url in order.authorizations:
        _validate(acme, authz_url, attestation_object, deadline)
    order, _ = acme.order(order.url)
    if order.status != "ready":
        _raise_order(order, "ready")
    order = acme.finalize(order, build_csr(spki, sign_digest, identifier), deadline)
    if order.status != "valid" or not order.certificate:
        _raise_order(order, "valid")
    chain = acme.download(order.certificate)  # type: ignore[arg-type]
    _check_chain(chain, spki)
    return chain


def _validate(acme: AcmeClient, authz_url: str, attestation_object: AttestationMaker, deadline: float) -> None:
    authz, _ = acme.authorization(authz_url)
    if authz.status == "valid":
        return
    if authz.status != "pending":
        raise AcmeError(f"the authorization for {authz.identifier.get('value')} is {authz.status}")
    challenge = authz.challenge(CHALLENGE)
    att_obj = attestation_object(acme.key_authorization(challenge.token or ""))
    answered, response = acme.respond(challenge, {"attObj": b64url(att_obj)})
    authz = acme.wait_authorization(authz_url, answered, response, deadline)
    if authz.status != "valid":
        failed = authz.challenge(CHALLENGE)
        if failed.error:
            raise AcmeProblem(failed.error, int(failed.error.get("status") or 400))
        raise AcmeError(f"the authorization for {authz.identifier.get('value')} became {authz.status}")


def _raise_order(order: Order, wanted: str) -> None:
    if order.error:
        raise AcmeProblem(order.error, int(order.error.get("status") or 400))
    raise AcmeError(f"the order is {order.status}, not {wanted}")


def _check_chain(chain_pem: bytes, spki: bytes) -> None:
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    except ValueError as exc:
        raise AcmeError(f"the CA's certificate chain is not PEM: {exc}") from None
    issued = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if issued != spki:
        raise AcmeError("the CA issued a certificate for another key than the device's")
