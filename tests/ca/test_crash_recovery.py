"""Nothing acknowledged is lost when a replica stops mid-flow: an order left `processing`
(CSR, serial and time stored, certificate not yet) is re-signed by another replica with the
same serial, once; a challenge left `processing` is validated again."""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509

from ca import certificates, validation
from ca.issuance import new_serial
from ca.model import Status
from ca.renewal import serial_hex
from ca.storage import repository as repo
from ca.storage.records import Certificate, Challenge, Order
from tests.ca.flow import make_csr, poll, validate_ip_order


async def test_issuance_interrupted_after_processing_is_resumed_with_the_same_serial(acme, responder, clock):
    await acme.new_account()
    order_url, order = await validate_ip_order(acme, responder)
    services = acme.services
    order_id = order_url.rsplit("/", 1)[1]
    csr, _ = make_csr(["127.0.0.1"])
    serial = serial_hex(new_serial())
    async with services.store.transaction() as tx:  # what finalize commits before it signs
        assert await repo.transition(tx, Order, order_id, [Status.READY.value],
                                     status=Status.PROCESSING.value, csr=csr, serial=serial,
                                     issuance_started=clock.now())
    processing = await (await acme.get(order_url)).json()
    assert processing["status"] == "processing"
    # The PostgreSQL database is shared by the session's tests: check this order, not counts.
    await certificates.resume_stale(services)
    assert (await (await acme.get(order_url)).json())["status"] == "processing", "a fresh issuance is not stale yet"
    clock.advance(timedelta(minutes=1))
    await certificates.resume_stale(services)
    await certificates.resume_stale(services)  # a second pass must not issue again
    done = await (await acme.get(order_url)).json()
    assert done["status"] == "valid" and done["certificate"].endswith("/" + serial)
    leaf = x509.load_pem_x509_certificates(await (await acme.get(done["certificate"])).read())[0]
    assert leaf.serial_number == int(serial, 16)
    async with services.store.transaction() as tx:
        assert len(await repo.select(tx, Certificate, "order_id = ?", order_id)) == 1


async def test_validation_interrupted_is_resumed(acme, responder, clock):
    await acme.new_account()
    order = await (await acme.new_order([{"type": "ip", "value": "127.0.0.1"}])).json()
    authz = await (await acme.get(order["authorizations"][0])).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    responder.tokens[challenge["token"]] = acme.key_authorization(challenge["token"])
    services = acme.services
    challenge_id = challenge["url"].rsplit("/", 1)[1]
    async with services.store.transaction() as tx:  # claimed by a replica that then stopped
        assert await repo.transition(tx, Challenge, challenge_id, [Status.PENDING.value],
                                     status=Status.PROCESSING.value, processing_since=clock.now(), payload={})
    clock.advance(services.config.validation_timeout * 3)
    assert await validation.resume_stale(services) >= 1
    authz = await poll(acme, order["authorizations"][0], {"valid", "invalid"})
    assert authz["status"] == "valid"
