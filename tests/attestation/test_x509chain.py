"""x509chain: Name bounds, checked before any name is normalised (RFC 5280 §7.1 StringPrep is slow)."""

from __future__ import annotations

from functools import lru_cache

import cbor2
import pytest
from asn1crypto import x509 as asn1_x509

from attestation import MAX_ATTESTATION_OBJECT, verify_attestation
from attestation import x509chain
from attestation.context import TrustStore, VerificationContext
from attestation.errors import MalformedStatement
from attestation.format import key_authorization_binding
from attestation.formats import android_key, apple
from attestation.x509chain import MAX_NAME_ATTRIBUTES, MAX_NAME_BYTES, parse_certificate, verify_chain
from tests.fleet import android_key as fleet_android
from tests.fleet import apple as fleet_apple


def _attribute(value: str) -> asn1_x509.NameTypeAndValue:
    return asn1_x509.NameTypeAndValue({"type": "common_name",
                                       "value": asn1_x509.DirectoryString(name="utf8_string", value=value)})


def _rdns(count: int, value: str = "x" * 10) -> asn1_x509.Name:
    """`count` single-valued RDNs: the shape of the reviewer's 7,000-RDN issuer."""
    rdns = [asn1_x509.RelativeDistinguishedName([_attribute(value)]) for _ in range(count)]
    return asn1_x509.Name(name="", value=asn1_x509.RDNSequence(rdns))


@lru_cache(maxsize=None)
def _huge_der() -> bytes:
    return _rdns(7000).dump()  # ~147 KB; building it costs a second, so once per session


def _huge() -> asn1_x509.Name:
    return asn1_x509.Name.load(_huge_der())


def _one_rdn(attributes: int) -> asn1_x509.Name:
    """One multi-valued RDN of `attributes` values."""
    rdn = asn1_x509.RelativeDistinguishedName([_attribute(f"v{i}") for i in range(attributes)])
    return asn1_x509.Name(name="", value=asn1_x509.RDNSequence([rdn]))


def _with_name(der: bytes, field: str, name: asn1_x509.Name) -> bytes:
    """The certificate with its subject or issuer replaced (the signature no longer verifies)."""
    cert = asn1_x509.Certificate.load(der)
    tbs = asn1_x509.TbsCertificate.load(cert["tbs_certificate"].dump())
    tbs[field] = name
    return asn1_x509.Certificate({"tbs_certificate": tbs, "signature_algorithm": cert["signature_algorithm"],
                                  "signature_value": cert["signature_value"].native}).dump()


@pytest.fixture
def no_normalising(monkeypatch):
    def refuse(der):
        raise AssertionError("a Name was normalised before its bounds were checked")
    monkeypatch.setattr(x509chain, "_normalised_name", refuse)


def test_issuer_of_7000_rdns_is_refused_before_normalising(no_normalising):
    """The reviewer's construction: ~1.9 s of StringPrep per request before the bound."""
    att = fleet_apple.for_acme("tok", b"tok.thumb")
    leaf = _with_name(att.att_stmt["x5c"][0], "issuer", _huge())
    att_obj = cbor2.dumps({"fmt": "apple", "attStmt": {"x5c": [leaf]}})
    assert len(att_obj) < MAX_ATTESTATION_OBJECT  # the size cap alone does not stop it
    trust = TrustStore(roots={"apple": apple.default_roots()}, intermediates={"apple": apple.default_intermediates()})
    ctx = VerificationContext(apple.acme_binding("tok", b"tok.thumb"), fleet_apple.NOW, trust)
    with pytest.raises(MalformedStatement, match=f"leaf certificate issuer Name is .* more than the {MAX_NAME_BYTES}"):
        verify_attestation(att_obj, ctx, {"apple": apple.FORMAT})


@pytest.mark.parametrize("field", ["subject", "issuer"])
@pytest.mark.parametrize(("name", "detail"), [
    (_rdns(MAX_NAME_ATTRIBUTES + 1), f"has more than {MAX_NAME_ATTRIBUTES} attributes"),
    (_one_rdn(MAX_NAME_ATTRIBUTES + 1), f"has more than {MAX_NAME_ATTRIBUTES} attributes"),
    (_rdns(1, "a" * (MAX_NAME_BYTES + 1)), f"more than the {MAX_NAME_BYTES} allowed"),
], ids=["many-rdns", "many-values-in-one-rdn", "one-long-value"])
def test_oversized_names_are_refused(field, name, detail, no_normalising):
    der = _with_name(fleet_android.attest(key_authorization_binding("t", b"t.k")).chain[1], field, name)
    with pytest.raises(MalformedStatement, match=f"chain certificate 1 {field} Name .*{detail}"):
        parse_certificate(der, "chain certificate 1")


def test_names_at_the_bounds_are_accepted():
    chain = fleet_android.attest(key_authorization_binding("t", b"t.k")).chain
    at_count = _with_name(chain[1], "subject", _rdns(MAX_NAME_ATTRIBUTES))
    long_value = _rdns(1, "a" * (MAX_NAME_BYTES - 20))
    assert len(long_value.chosen.contents) <= MAX_NAME_BYTES
    for der in (at_count, _with_name(chain[1], "issuer", long_value)):
        assert parse_certificate(der).subject is not None


def test_name_comparison_guards_names_from_other_parsers(no_normalising):
    with pytest.raises(MalformedStatement, match="more than"):
        x509chain._name_key(_huge())


def test_chain_certificate_and_android_leaf_with_huge_issuer_are_refused(no_normalising):
    att = fleet_android.attest(key_authorization_binding("t", b"t.k"))
    intermediate = _with_name(att.chain[1], "issuer", _huge())
    with pytest.raises(MalformedStatement, match="chain certificate 1 issuer Name"):
        verify_chain([att.chain[0], intermediate], att.trust.roots_for("android-key"), att.now)
    leaf = _with_name(att.chain[0], "issuer", _huge())
    with pytest.raises(MalformedStatement, match="leaf certificate issuer Name"):
        android_key.verify(dict(att.att_stmt, x5c=[leaf, *att.chain[1:]]), att.context())
