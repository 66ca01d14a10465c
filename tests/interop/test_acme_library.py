"""certbot's `acme` library against `acmeda serve`, for the flows the CLIs cannot reach:
external account binding, issuance, renewal info (RFC 9773), key change (§7.3.5), deactivation."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import josepy as jose
import pytest
from acme import challenges, client, jws as acme_jws, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.interop.conftest import KeyAuthorizations, answering_http01, free_port, start_ca, stop_ca


@pytest.fixture(scope="module")
def eab_ca(tmp_path_factory, dns_server):
    tmp = tmp_path_factory.mktemp("acme-lib")
    ca = start_ca(tmp, http01_port=free_port(), dns_port=dns_server.port, extra=["--require-eab", "true"])
    with answering_http01(ca.http01_port):
        yield ca
    stop_ca(ca)


def _eab_key(ca) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-m", "ca.cli", "eab", "create", "--data-dir", str(ca.data_dir), "--label", "interop"],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    return re.search(r"key id:\s+(\S+)", out).group(1), re.search(r"hmac key:\s+(\S+)", out).group(1)


def _client(ca, key: jose.JWK) -> client.ClientV2:
    net = client.ClientNetwork(key, alg=jose.ES256, user_agent="acmeda-interop", verify_ssl=str(ca.root))
    return client.ClientV2(client.ClientV2.get_directory(ca.directory, net), net)


def _csr_pem(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def _issue(acme: client.ClientV2, name: str) -> str:
    order = acme.new_order(_csr_pem(name))
    for authz in order.authorizations:
        challenge = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = challenge.response_and_validation(acme.net.key)
        KeyAuthorizations.tokens[challenge.chall.encode("token")] = validation
        acme.answer_challenge(challenge, response)
    return acme.poll_and_finalize(order).fullchain_pem


def test_eab_issuance_renewal_info_key_change_and_deactivation(eab_ca):
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    acme = _client(eab_ca, key)
    assert acme.external_account_required()
    with pytest.raises(messages.Error) as refused:
        acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    assert refused.value.code == "externalAccountRequired"

    key_id, hmac_key = _eab_key(eab_ca)
    eab = messages.ExternalAccountBinding.from_data(key.public_key(), key_id, hmac_key, acme.directory)
    regr = acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True, external_account_binding=eab))
    assert regr.body.status == "valid"
    acme.net.account = regr

    fullchain = _issue(acme, "library.acmeda.test")
    renew_at, _next_check = acme.renewal_time(fullchain.encode())
    leaf = x509.load_pem_x509_certificate(fullchain.encode())
    assert leaf.not_valid_before_utc < renew_at < leaf.not_valid_after_utc

    new_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    inner = acme_jws.JWS.sign(json.dumps({"account": regr.uri, "oldKey": key.public_key().to_partial_json()}).encode(),
                              key=new_key, alg=jose.ES256, nonce=None, url=acme.directory["keyChange"])
    acme.net.post(acme.directory["keyChange"], inner)
    acme.net.key = new_key
    assert acme.query_registration(regr).body.status == "valid"
    old = _client(eab_ca, key)
    old.net.account = regr
    with pytest.raises(messages.Error):
        old.query_registration(regr)

    deactivated = acme.deactivate_registration(regr)
    assert deactivated.body.status == "deactivated"
    with pytest.raises(messages.Error) as gone:
        acme.new_order(_csr_pem("after.acmeda.test"))
    assert gone.value.code == "unauthorized"
