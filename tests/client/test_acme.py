"""client/acme.py and client/http.py against a real `acmeda serve` (no TPM needed): the account
key, registration with and without external account binding, badNonce retry, problem
documents, TLS verification, and the wire parsing of what the CA sends."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from email.message import Message
from email.utils import format_datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings, strategies as st

from ca.renewal import cert_id as server_cert_id
from client.acme import (
    AcmeClient, AcmeError, AcmeProblem, Authorization, Challenge, Order, RenewalWindow, cert_id,
    load_or_create_account_key, retry_after,
)
from client.http import Http, HttpResponse, TransportError, tls_context
from tests.client.conftest import eab_key


class CountingHttp(Http):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, str, int]] = []

    def request(self, method, url, body=None, headers=None):
        response = super().request(method, url, body, headers)
        self.sent.append((method, url, response.status))
        return response


def _client(ca, tmp_path, name: str = "account-key.pem") -> AcmeClient:
    http = CountingHttp(tls_context(ca.tls_root, insecure=False))
    return AcmeClient(http, ca.directory, load_or_create_account_key(tmp_path / name))


def test_account_key_is_created_private_and_reused(tmp_path):
    path = tmp_path / "state" / "account-key.pem"
    first = load_or_create_account_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_account_key(path).thumbprint() == first.thumbprint()
    path.write_text("not a key")
    with pytest.raises(AcmeError, match="cannot be read"):
        load_or_create_account_key(path)


def test_registration_needs_eab_and_returns_the_same_account_again(plain_ca, tmp_path):
    acme = _client(plain_ca, tmp_path)
    with pytest.raises(AcmeProblem) as refused:
        acme.register()
    assert refused.value.code == "externalAccountRequired" and refused.value.detail
    kid = acme.register(eab=eab_key(plain_ca))
    assert kid.startswith(plain_ca.directory.rsplit("/directory", 1)[0])
    assert _client(plain_ca, tmp_path).register() == kid  # an existing account answers without EAB


def test_wrong_eab_key_is_refused(plain_ca, tmp_path):
    key_id, _ = eab_key(plain_ca)
    with pytest.raises(AcmeProblem) as refused:
        _client(plain_ca, tmp_path).register(eab=(key_id, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
    assert refused.value.code == "unauthorized"


def test_bad_nonce_is_retried_once_with_the_nonce_the_refusal_carries(plain_ca, tmp_path):
    acme = _client(plain_ca, tmp_path)
    acme.register(eab=eab_key(plain_ca))
    acme._nonce = "bm90LWEtbm9uY2U"  # a nonce the CA never issued
    order = acme.new_order([{"type": "permanent-identifier", "value": "device-1"}])
    assert order.status == "pending" and len(order.authorizations) == 1
    posts = [status for method, url, status in acme.http.sent if method == "POST" and url.endswith("/new-order")]
    assert posts == [400, 201]


def test_problem_documents_keep_type_detail_and_subproblems(plain_ca, tmp_path):
    acme = _client(plain_ca, tmp_path)
    acme.register(eab=eab_key(plain_ca))
    with pytest.raises(AcmeProblem) as refused:
        acme.new_order([{"type": "permanent-identifier", "value": "device/not-an-oid"}])
    assert refused.value.type == "urn:ietf:params:acme:error:malformed"
    assert str(refused.value).startswith("urn:ietf:params:acme:error:malformed: ")


def test_tls_is_verified_unless_insecure_is_asked_for_loudly(plain_ca, capsys):
    with pytest.raises(TransportError, match="--ca-bundle"):
        Http(tls_context(None, insecure=False)).request("GET", plain_ca.directory)
    response = Http(tls_context(None, insecure=True)).request("GET", plain_ca.directory)
    assert response.status == 200 and "newOrder" in response.json()
    assert "WARNING: --insecure" in capsys.readouterr().err


def test_cert_id_is_the_one_the_ca_computes():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.now(timezone.utc)
    for serial in (1, 0x80, 0xFF00, 0x7F_FFFF_FFFF_FFFF_FFFF):
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(serial).not_valid_before(now).not_valid_after(now + timedelta(days=1))
                .add_extension(x509.AuthorityKeyIdentifier(b"\x01\x02\x03", None, None), critical=False)
                .sign(key, hashes.SHA256()))
        assert cert_id(cert) == server_cert_id(b"\x01\x02\x03", serial)


def _response(**headers: str) -> HttpResponse:
    message = Message()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return HttpResponse(200, message, b"")


def test_retry_after_reads_seconds_and_dates():
    assert retry_after(_response(Retry_After="3"), 1.0) == 3.0
    assert retry_after(_response(), 1.0) == 1.0
    assert retry_after(_response(Retry_After="soon"), 2.0) == 2.0
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after(_response(Retry_After=later), 1.0) <= 30


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                     max_leaves=12)
_members = st.dictionaries(st.sampled_from(["status", "type", "url", "token", "finalize", "authorizations", "identifier",
                                            "challenges", "suggestedWindow", "start", "end", "certificate"]),
                           _json, max_size=8)


@settings(max_examples=300, deadline=None)
@given(doc=_members | _json)
def test_malformed_ca_answers_are_acme_errors(doc):
    """Only AcmeError leaves the wire parsers, whatever JSON the CA sends."""
    for parse in (lambda: Order.from_json("u", doc), lambda: Authorization.from_json("u", doc),
                  lambda: Challenge.from_json(doc), lambda: RenewalWindow.from_json(doc, None)):
        try:
            parse()
        except AcmeError:
            pass
