"""RFC 8555 §7.4–7.6 and RFC 9773 over the real app: orders, http-01 over loopback, finalize,
download, revocation, renewal info; every rejection its own row (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca.renewal import cert_id
from tests.acme_client import AcmeSession, b64
from tests.ca.flow import issue_ip_certificate, make_csr, poll, validate_ip_order
from tests.ca.test_acme_jws import problem


@pytest.fixture
async def account(acme):
    assert (await acme.new_account()).status == 201
    return acme


async def test_full_issuance_over_http01(account, responder):
    order_url, order, chain = await issue_ip_certificate(account, responder)
    assert order["status"] == "valid"
    certs = x509.load_pem_x509_certificates(chain)
    leaf, intermediate = certs
    services = account.services
    assert intermediate == services.authority.intermediate
    intermediate.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm))
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=7)
    assert leaf.serial_number.bit_length() > 64
    authz = await (await account.get(order["authorizations"][0])).json()
    http01 = next(c for c in authz["challenges"] if c["type"] == "http-01")
    assert http01["status"] == "valid" and http01["validationRecord"]


async def test_order_objects_and_links(account):
    response = await account.new_order([{"type": "ip", "value": "127.0.0.1"}])
    order = await response.json()
    assert response.status == 201 and order["status"] == "pending"
    assert order["finalize"].endswith("/finalize") and len(order["authorizations"]) == 1
    authz_resp = await account.get(order["authorizations"][0])
    authz = await authz_resp.json()
    assert authz["identifier"] == {"type": "ip", "value": "127.0.0.1"}
    assert {c["type"] for c in authz["challenges"]} == {"http-01", "tls-alpn-01"}
    chall = await account.get(authz["challenges"][0]["url"])
    assert f'<{order["authorizations"][0]}>;rel="up"' in chall.headers.getall("Link")
    listing = await (await account.get(account.kid + "/orders")).json()
    assert listing["orders"] == [response.headers["Location"]]


async def test_dns_orders_offer_three_challenges_and_wildcards_only_dns01(account):
    order = await (await account.new_order([{"type": "dns", "value": "a.example.com"},
                                            {"type": "dns", "value": "*.example.com"}])).json()
    kinds = []
    for url in order["authorizations"]:
        authz = await (await account.get(url)).json()
        kinds.append((authz["identifier"]["value"], authz.get("wildcard", False), sorted(c["type"] for c in authz["challenges"])))
    assert sorted(kinds) == [("a.example.com", False, ["dns-01", "http-01", "tls-alpn-01"]),
                             ("example.com", True, ["dns-01"])]


@pytest.mark.parametrize("identifiers, kind", [
    ([], "malformed"),
    ("127.0.0.1", "malformed"),
    ([{"type": "email", "value": "a@b.c"}], "unsupportedIdentifier"),
    ([{"type": "dns", "value": "Bad_Name.example.com"}], "malformed"),
    ([{"type": "dns", "value": "UPPER.example.com"}], "malformed"),
    ([{"type": "dns", "value": "localhost"}], "rejectedIdentifier"),
    ([{"type": "ip", "value": "127.000.0.1"}], "malformed"),
    ([{"type": "ip", "value": "127.0.0.1"}, {"type": "ip", "value": "127.0.0.1"}], "malformed"),
    ([{"type": "permanent-identifier", "value": ""}], "malformed"),
    ([{"type": "permanent-identifier", "value": "SERIAL/not-an-oid"}], "malformed"),
    ([{"type": "hardware-module", "value": "SERIAL-WITHOUT-TYPE"}], "malformed"),
    ([{"type": "ip", "value": "127.0.0.1"}, {"type": "permanent-identifier", "value": "SERIAL1"}], "rejectedIdentifier"),
])
async def test_identifier_rejections(account, identifiers, kind):
    await problem(await account.new_order(identifiers), kind, 400)


async def test_finalize_before_ready_is_order_not_ready(account):
    order = await (await account.new_order([{"type": "ip", "value": "127.0.0.1"}])).json()
    csr, _ = make_csr(["127.0.0.1"])
    await problem(await account.post(order["finalize"], {"csr": b64(csr)}), "orderNotReady", 403)


def _with_version(der: bytes, version: str, bad: str) -> bytes:
    """`der` with its first `version` field (hex TLV) replaced: cryptography raises InvalidVersion, not ValueError."""
    at = der.index(bytes.fromhex(version))
    return der[:at] + bytes.fromhex(bad) + der[at + len(version) // 2:]


def _account_key_csr(acme: AcmeSession) -> bytes:
    return make_csr(["127.0.0.1"], key=acme.key.key._wrapped)[0]


@pytest.mark.parametrize("make, detail", [
    (lambda acme: b"\x30\x03\x02\x01\x00", "parse"),
    (lambda acme: make_csr(["127.0.0.2"])[0], "127.0.0.2"),
    (lambda acme: make_csr(["127.0.0.1", "127.0.0.2"])[0], "127.0.0.2"),
    (lambda acme: make_csr([], common_name="other.example.com")[0], "other.example.com"),
    (_account_key_csr, "account key"),
    (lambda acme: make_csr(["127.0.0.1"], key=ec.generate_private_key(ec.SECP521R1()))[0], "secp521r1"),
    (lambda acme: _with_version(make_csr(["127.0.0.1"])[0], "020100", "020101"), "version field"),  # a 500 once
])
async def test_bad_csrs(account, responder, make, detail):
    order_url, order = await validate_ip_order(account, responder)
    doc = await problem(await account.post(order["finalize"], {"csr": b64(make(account))}), "badCSR", 400)
    assert detail.lower() in doc["detail"].lower(), doc
    still = await (await account.get(order_url)).json()
    assert still["status"] == "ready", "a refused CSR must not consume the order"


async def test_failed_http01_makes_challenge_authz_and_order_invalid(account, responder):
    order = await (await account.new_order([{"type": "ip", "value": "127.0.0.1"}])).json()
    authz_url = order["authorizations"][0]
    authz = await (await account.get(authz_url)).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    responder.tokens[challenge["token"]] = "wrong"
    await account.post(challenge["url"], {})
    authz = await poll(account, authz_url, {"valid", "invalid"})
    assert authz["status"] == "invalid"
    failed = next(c for c in authz["challenges"] if c["type"] == "http-01")
    assert failed["error"]["type"] == "urn:ietf:params:acme:error:incorrectResponse"
    again = await account.post(challenge["url"], {})
    assert (await again.json())["status"] == "invalid", "a token validates once"


async def test_an_order_whose_authorizations_all_turned_valid_is_finalized_whatever_its_stored_status(account):
    """Two replicas that validate an order's two authorizations at the same moment each see the
    other's still pending (PostgreSQL, READ COMMITTED), so neither stores the order `ready`. The
    order is ready by its authorizations (RFC 8555 §7.1.6) and finalize must go by that; it
    refused forever before. The end state of that race is set up here directly in the store."""
    from ca.storage import repository as repo
    from ca.storage.records import Authorization, Order

    response = await account.new_order([{"type": "ip", "value": "127.0.0.1"}, {"type": "ip", "value": "::1"}])
    order_url, order = response.headers["Location"], await response.json()
    store = account.services.store
    async with store.transaction() as tx:
        for authz_url in order["authorizations"]:
            assert await repo.transition(tx, Authorization, authz_url.rsplit("/", 1)[1], ["pending"], status="valid")
    async with store.read() as tx:
        assert (await repo.get(tx, Order, order_url.rsplit("/", 1)[1])).status == "pending"
    assert (await (await account.get(order_url)).json())["status"] == "ready"
    csr, _ = make_csr(["127.0.0.1", "::1"])
    finalized = await account.post(order["finalize"], {"csr": b64(csr)})
    assert finalized.status == 200, await finalized.text()
    assert (await poll(account, order_url, {"valid", "invalid"}))["status"] == "valid"


async def test_order_expires(account, clock):
    response = await account.new_order([{"type": "ip", "value": "127.0.0.1"}])
    clock.advance(timedelta(hours=25))
    order = await (await account.get(response.headers["Location"])).json()
    assert order["status"] == "invalid"


async def test_authorization_deactivation_invalidates_order(account):
    response = await account.new_order([{"type": "ip", "value": "127.0.0.1"}])
    order = await response.json()
    deactivated = await (await account.post(order["authorizations"][0], {"status": "deactivated"})).json()
    assert deactivated["status"] == "deactivated"
    assert (await (await account.get(response.headers["Location"])).json())["status"] == "invalid"


async def test_orders_are_private_to_their_account(account):
    order = await (await account.new_order([{"type": "ip", "value": "127.0.0.1"}])).json()
    other = AcmeSession(account.http, directory=account.directory)
    await other.new_account()
    await problem(await other.get(order["authorizations"][0]), "unauthorized", 403)


async def test_revocation_by_account_and_reasons(account, responder):
    _, _, chain = await issue_ip_certificate(account, responder)
    der = x509.load_pem_x509_certificates(chain)[0].public_bytes(__import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER)
    url = account.directory["revokeCert"]
    await problem(await account.post(url, {"certificate": b64(der), "reason": 7}), "badRevocationReason", 400)
    await problem(await account.post(url, {"certificate": b64(der), "reason": 2}), "badRevocationReason", 400)
    other = AcmeSession(account.http, directory=account.directory)
    await other.new_account()
    await problem(await other.post(url, {"certificate": b64(der)}), "unauthorized", 403)
    ok = await account.post(url, {"certificate": b64(der), "reason": 4})
    assert ok.status == 200, await ok.text()
    await problem(await account.post(url, {"certificate": b64(der)}), "alreadyRevoked", 400)


async def test_revocation_by_another_account_that_holds_current_authorizations(account, responder, clock):
    """§7.6: an account that did not order a certificate may revoke it once it holds valid
    authorizations for all its identifiers; expired ones do not count (they prove nothing now)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    _, _, chain = await issue_ip_certificate(account, responder)
    der = x509.load_pem_x509_certificates(chain)[0].public_bytes(Encoding.DER)
    url = account.directory["revokeCert"]
    other = AcmeSession(account.http, directory=account.directory)
    await other.new_account()
    await validate_ip_order(other, responder)
    clock.advance(timedelta(hours=25))  # the other account's authorization has expired (orders live 24 h)
    refused = await problem(await other.post(url, {"certificate": b64(der)}), "unauthorized", 403)
    assert "valid, unexpired authorizations" in refused["detail"]
    await validate_ip_order(other, responder)
    ok = await other.post(url, {"certificate": b64(der), "reason": 1})
    assert ok.status == 200, await ok.text()
    await problem(await account.post(url, {"certificate": b64(der)}), "alreadyRevoked", 400)


async def test_revocation_by_certificate_key(account, responder):
    order_url, order = await validate_ip_order(account, responder)
    csr, cert_key = make_csr(["127.0.0.1"])
    await account.post(order["finalize"], {"csr": b64(csr)})
    order = await poll(account, order_url, {"valid"})
    chain = await (await account.get(order["certificate"])).read()
    from cryptography.hazmat.primitives.serialization import Encoding
    import josepy as jose

    der = x509.load_pem_x509_certificates(chain)[0].public_bytes(Encoding.DER)
    response = await account.post(account.directory["revokeCert"], {"certificate": b64(der), "reason": 1},
                                  use_kid=False, key=jose.JWKEC(key=cert_key))
    assert response.status == 200, await response.text()


async def test_renewal_info_and_replaces(account, responder):
    _, _, chain = await issue_ip_certificate(account, responder)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    ident = cert_id(aki, leaf.serial_number)
    response = await account.http.get(f"/acme/renewal-info/{ident}")
    assert response.status == 200, await response.text()
    window = (await response.json())["suggestedWindow"]
    assert window["start"] < window["end"]
    assert int(response.headers["Retry-After"]) > 0
    await problem(await account.http.get("/acme/renewal-info/not-a-cert-id"), "malformed", 400)
    replacement = await account.new_order([{"type": "ip", "value": "127.0.0.1"}], replaces=ident)
    assert replacement.status == 201 and (await replacement.json())["replaces"] == ident
    await problem(await account.new_order([{"type": "ip", "value": "127.0.0.1"}], replaces=ident), "alreadyReplaced", 409)


async def test_rate_limit_on_new_orders(start_app):
    client, _ = await start_app(orders_per_account_per_hour=2)
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    for _ in range(2):
        assert (await acme.new_order([{"type": "ip", "value": "127.0.0.1"}])).status == 201
    response = await acme.new_order([{"type": "ip", "value": "127.0.0.1"}])
    await problem(response, "rateLimited", 429)
    assert response.headers["Retry-After"]


async def test_several_bad_identifiers_give_a_compound_problem_with_subproblems(account):
    bad = [{"type": "dns", "value": "UPPER.example.com"}, {"type": "email", "value": "a@b.c"}]
    doc = await problem(await account.new_order([{"type": "ip", "value": "127.0.0.1"}, *bad]), "compound", 400)
    assert [s["type"].rsplit(":", 1)[1] for s in doc["subproblems"]] == ["malformed", "unsupportedIdentifier"]
    assert [s["identifier"] for s in doc["subproblems"]] == bad
    single = await problem(await account.new_order([bad[1]]), "unsupportedIdentifier", 400)
    assert single["subproblems"][0]["identifier"] == bad[1]


async def test_revoking_a_certificate_with_an_unknown_version_is_malformed(account, responder):
    from cryptography.hazmat.primitives.serialization import Encoding

    _, _, chain = await issue_ip_certificate(account, responder)
    der = _with_version(x509.load_pem_x509_certificates(chain)[0].public_bytes(Encoding.DER), "a003020102", "a003020105")
    doc = await problem(await account.post(account.directory["revokeCert"], {"certificate": b64(der)}), "malformed", 400)
    assert "version field is 5" in doc["detail"]


def _leaf_cert_id(chain: bytes, *, key_id: bytes | None = None, serial_octets: bytes | None = None) -> str:
    from ca.nonces import b64url

    leaf = x509.load_pem_x509_certificates(chain)[0]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    if serial_octets is None:
        return cert_id(key_id or aki, leaf.serial_number)
    return f"{b64url(aki)}.{b64url(serial_octets + leaf.serial_number.to_bytes(20, 'big').lstrip(bytes(1)))}"


@pytest.mark.parametrize("variant, status, detail", [
    ({"key_id": b"\x01\x02\x03 not our key"}, 404, "another issuer"),  # RFC 9773 §4.1: both halves name it
    ({"serial_octets": b"\x00\x00"}, 400, "minimal DER"),  # one certificate, one certID
])
async def test_renewal_info_and_replaces_check_the_whole_cert_id(account, responder, variant, status, detail):
    _, _, chain = await issue_ip_certificate(account, responder)
    ident = _leaf_cert_id(chain, **variant)
    doc = await problem(await account.http.get(f"/acme/renewal-info/{ident}"), "malformed", status)
    assert detail in doc["detail"], doc
    doc = await problem(await account.new_order([{"type": "ip", "value": "127.0.0.1"}], replaces=ident), "malformed", status)
    assert detail in doc["detail"], doc


async def test_an_expired_replacement_order_does_not_block_the_next(account, responder, clock):
    """Expiry is derived on read and never stored: an abandoned replacement order must not keep
    the certificate `alreadyReplaced` forever (RFC 9773 §5 allows a new one once it is invalid)."""
    _, _, chain = await issue_ip_certificate(account, responder)
    ident = _leaf_cert_id(chain)
    first = await account.new_order([{"type": "ip", "value": "127.0.0.1"}], replaces=ident)
    assert first.status == 201, await first.text()
    await problem(await account.new_order([{"type": "ip", "value": "127.0.0.1"}], replaces=ident), "alreadyReplaced", 409)
    clock.advance(timedelta(hours=25))
    assert (await (await account.get(first.headers["Location"])).json())["status"] == "invalid"
    second = await account.new_order([{"type": "ip", "value": "127.0.0.1"}], replaces=ident)
    assert second.status == 201, await second.text()
    await problem(await account.new_order([{"type": "ip", "value": "127.0.0.1"}], replaces=ident), "alreadyReplaced", 409)


async def test_validity_times_in_another_offset_are_echoed_as_the_same_instant_in_utc(account):
    response = await account.new_order([{"type": "ip", "value": "127.0.0.1"}],
                                       notBefore="2026-11-01T17:00:00+05:00", notAfter="2026-11-02T17:00:00+05:00")
    created = await response.json()
    assert response.status == 201, created
    fetched = await (await account.get(response.headers["Location"])).json()
    for order in (created, fetched):
        assert (order["notBefore"], order["notAfter"]) == ("2026-11-01T12:00:00Z", "2026-11-02T12:00:00Z")


async def _ready_order(acme: AcmeSession, responder, **validity: str) -> tuple[str, dict]:
    response = await acme.new_order([{"type": "ip", "value": "127.0.0.1"}], **validity)
    assert response.status == 201, await response.text()
    order_url, order = response.headers["Location"], await response.json()
    authz = await (await acme.get(order["authorizations"][0])).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    responder.tokens[challenge["token"]] = acme.key_authorization(challenge["token"])
    await acme.post(challenge["url"], {})
    return order_url, await poll(acme, order_url, {"ready"})


async def test_finalize_after_the_requested_not_after_is_refused_and_leaves_the_order(account, responder, clock):
    order_url, order = await _ready_order(account, responder, notAfter="2026-11-01T12:30:00Z")  # clock: 12:00
    clock.advance(timedelta(hours=1))
    csr, _ = make_csr(["127.0.0.1"])
    doc = await problem(await account.post(order["finalize"], {"csr": b64(csr)}), "malformed", 400)
    assert "notAfter 2026-11-01T12:30:00Z has passed" in doc["detail"]
    assert (await (await account.get(order_url)).json())["status"] == "ready"


@pytest.mark.parametrize("validity", [
    {"notAfter": "2026-11-08T12:00:00Z"},  # now + the server profile's 7 days: backdating must not add to it
    {},
])
async def test_certificates_never_outlive_the_profile_lifetime(account, responder, validity):
    order_url, order = await _ready_order(account, responder, **validity)
    csr, _ = make_csr(["127.0.0.1"])
    assert (await account.post(order["finalize"], {"csr": b64(csr)})).status == 200
    done = await poll(account, order_url, {"valid", "invalid"})
    leaf = x509.load_pem_x509_certificates(await (await account.get(done["certificate"])).read())[0]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=7)
    if validity:
        assert leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ") == validity["notAfter"]
