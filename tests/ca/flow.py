"""Helpers that drive a whole order through the in-process app (used by several test modules)."""

from __future__ import annotations

import asyncio
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.acme_client import AcmeSession, b64


def make_csr(names: list[str], key=None, *, common_name: str | None = None) -> tuple[bytes, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER), key


async def poll(acme: AcmeSession, url: str, until: set[str], attempts: int = 100) -> dict:
    for _ in range(attempts):
        response = await acme.get(url)
        body = await response.json()
        if body["status"] in until:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} stayed {body['status']}")


async def validate_ip_order(acme: AcmeSession, responder, ip: str = "127.0.0.1") -> tuple[str, dict]:
    """New order for an IP identifier, answered over real http-01; returns (order URL, order)."""
    response = await acme.new_order([{"type": "ip", "value": ip}])
    assert response.status == 201, await response.text()
    order_url, order = response.headers["Location"], await response.json()
    authz = await (await acme.get(order["authorizations"][0])).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    responder.tokens[challenge["token"]] = acme.key_authorization(challenge["token"])
    answered = await acme.post(challenge["url"], {})
    assert answered.status == 200, await answered.text()
    order = await poll(acme, order_url, {"ready", "invalid"})
    return order_url, order


async def issue_ip_certificate(acme: AcmeSession, responder, ip: str = "127.0.0.1") -> tuple[str, dict, bytes]:
    order_url, order = await validate_ip_order(acme, responder, ip)
    assert order["status"] == "ready", order
    csr, _key = make_csr([ip])
    finalized = await acme.post(order["finalize"], {"csr": b64(csr)})
    assert finalized.status == 200, await finalized.text()
    order = await poll(acme, order_url, {"valid", "invalid"})
    chain = await (await acme.get(order["certificate"])).read()
    return order_url, order, chain
