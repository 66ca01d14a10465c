"""How a challenge's outcome moves its authorization and order (RFC 8555 §7.1.6), and how stale
validations are claimed, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from ca import validation
from ca.model import Status
from ca.problems import Connection
from ca.storage import repository as repo
from ca.storage.records import Authorization, Challenge
from tests.ca.flow import poll


async def test_a_failed_sibling_challenge_leaves_a_valid_authorization_and_its_order_alone(acme, responder):
    """A client answered two challenges of one authorization; http-01 made it valid first, then
    the other failed. The authorization was decided by the first outcome, so the order, still
    waiting on its second identifier, stays pending."""
    await acme.new_account()
    response = await acme.new_order([{"type": "ip", "value": "127.0.0.1"}, {"type": "ip", "value": "::1"}])
    order_url, order = response.headers["Location"], await response.json()
    authzs = {url: await (await acme.get(url)).json() for url in order["authorizations"]}
    authz_url, authz = next((u, a) for u, a in authzs.items() if a["identifier"]["value"] == "127.0.0.1")
    http01 = next(c for c in authz["challenges"] if c["type"] == "http-01")
    other = next(c for c in authz["challenges"] if c["type"] != "http-01")
    services = acme.services
    other_id = other["url"].rsplit("/", 1)[1]
    async with services.store.transaction() as tx:  # answered too, its validation still running
        assert await repo.transition(tx, Challenge, other_id, [Status.PENDING.value],
                                     status=Status.PROCESSING.value, processing_since=services.clock.now(), payload={})
    responder.tokens[http01["token"]] = acme.key_authorization(http01["token"])
    assert (await acme.post(http01["url"], {})).status == 200
    assert (await poll(acme, authz_url, {"valid", "invalid"}))["status"] == "valid"

    async with services.store.read() as tx:
        challenge = await repo.get(tx, Challenge, other_id)
        stored_authz = await repo.get(tx, Authorization, challenge.authz_id)
    await validation._record_outcome(services, challenge, stored_authz, None, Connection("the other validation failed"))

    assert (await (await acme.get(other["url"])).json())["status"] == "invalid"
    assert (await (await acme.get(authz_url)).json())["status"] == "valid"
    assert (await (await acme.get(order_url)).json())["status"] == "pending"


async def test_a_stale_validation_is_claimed_once(acme, clock):
    """Two replicas that read the same stale challenge both try to claim it: only the claim made
    from the timestamp still stored moves it (the second replica's read is stale). The two reads
    cannot be interleaved over HTTP, so the second claim is made here with the first one's view."""
    await acme.new_account()
    order = await (await acme.new_order([{"type": "ip", "value": "127.0.0.1"}])).json()
    authz = await (await acme.get(order["authorizations"][0])).json()
    challenge_id = authz["challenges"][0]["url"].rsplit("/", 1)[1]
    services = acme.services
    started = clock.now()
    async with services.store.transaction() as tx:
        assert await repo.transition(tx, Challenge, challenge_id, [Status.PENDING.value],
                                     status=Status.PROCESSING.value, processing_since=started, payload={})
    clock.advance(timedelta(minutes=5))
    async with services.store.transaction() as tx:
        assert await repo.claim_stale_challenge(tx, challenge_id, started, clock.now())
    async with services.store.transaction() as tx:
        assert not await repo.claim_stale_challenge(tx, challenge_id, started, clock.now() + timedelta(seconds=1))
    async with services.store.read() as tx:
        assert (await repo.get(tx, Challenge, challenge_id)).processing_since == clock.now()
