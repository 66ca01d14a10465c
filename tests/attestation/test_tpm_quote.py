"""TPM2_Quote verification: the two real quotes (MANIFEST §3c), one row per rejection reason
through the simulated boot of tests/fleet/tpm_quote.py, TPMT_SIGNATURE, and fuzzing."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.errors import (
    AttestationError, ChallengeMismatch, InvalidSignature, MalformedStatement, RequirementFailed,
    UnsupportedFormat,
)
from attestation.tpm.constants import Alg, St
from attestation.tpm.quote import QuoteBundle, normalize_pcrs, verify_quote
from attestation.tpm.structs import TpmtSignature
from tests import vectors
from tests.fleet import tpm_quote as fleet

SHA256 = Alg.SHA256


def verify(sample: fleet.Sample, nonce: bytes = fleet.NONCE):
    return verify_quote(sample.ak_public, sample.quote, sample.signature, sample.pcrs, nonce)


# --- real quotes --------------------------------------------------------------------------


def test_real_windows_gcp_quote_verifies_with_its_ak():
    real = fleet.windows_gcp()
    (quote, signature), = real.quotes
    result = verify_quote(real.ak_public, quote, signature, real.pcrs, b"")
    assert real.nonce == b"" and result.attest.extra_data == b""
    assert result.sig_alg_name == "rsassa-sha1"  # the AK's scheme fixes SHA-1 (Windows AIKs do)
    assert [s.hash_alg for s in result.attest.attested.pcr_select] == [Alg.SHA1]
    assert result.pcrs == {Alg.SHA1: real.pcrs[Alg.SHA1]} and len(result.pcrs[Alg.SHA1]) == 24


def test_real_gce_quotes_verify_for_each_bank_with_the_ak_and_its_certificate():
    real = fleet.gce_cos()
    certificate = x509.load_der_x509_certificate(vectors.read(fleet.GCE_AK_CERT))
    cert_spki = certificate.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert_spki == real.ak_public.spki()  # the AK certificate certifies ak_pub
    banks = []
    for quote, signature in real.quotes:
        for ak in (real.ak_public, cert_spki):
            result = verify_quote(ak, quote, signature, real.pcrs, fleet.GCE_NONCE)
            assert result.attest.extra_data == b"\x90\x09" and result.sig_alg_name == "rsassa-sha256"
        (bank,) = result.pcrs
        assert result.pcrs[bank] == real.pcrs[bank] and len(result.pcrs[bank]) == 24
        banks.append(bank)
    assert banks == [Alg.SHA1, Alg.SHA256, Alg.SHA384]


def _gce_quote():
    real = fleet.gce_cos()
    return real, real.quotes[1]  # the SHA-256 bank


def test_real_quote_wrong_nonce():
    real, (quote, signature) = _gce_quote()
    with pytest.raises(ChallengeMismatch) as caught:
        verify_quote(real.ak_public, quote, signature, real.pcrs, b"\x90\x0a")
    assert caught.value.check == "tpm-quote-nonce"


def test_real_quote_altered_pcr_value():
    real, (quote, signature) = _gce_quote()
    pcrs = {bank: dict(values) for bank, values in real.pcrs.items()}
    pcrs[SHA256][7] = bytes(32)
    with pytest.raises(RequirementFailed) as caught:
        verify_quote(real.ak_public, quote, signature, pcrs, fleet.GCE_NONCE)
    assert caught.value.check == "tpm-quote-pcr-digest"


def test_real_quote_signed_by_another_key():
    windows, gce = fleet.windows_gcp(), fleet.gce_cos()
    (quote, signature), = windows.quotes
    with pytest.raises(InvalidSignature) as caught:
        verify_quote(gce.ak_public.spki(), quote, signature, windows.pcrs, b"")
    assert caught.value.check == "tpm-quote-sig"


# --- the simulated boot: valid variants -----------------------------------------------------


@pytest.mark.parametrize("knobs", [
    dict(), dict(scheme=Alg.RSAPSS), dict(sig_hash=Alg.SHA1), dict(sig_hash=Alg.SHA384),
    dict(ak="p256"), dict(ak="p384", sig_hash=Alg.SHA384), dict(ak_scheme=Alg.NULL),
    dict(quote_banks=(Alg.SHA1, SHA256)), dict(select=b"\x80\x00\x00"), dict(select=b""),
], ids=lambda knobs: ",".join(f"{k}={v}" for k, v in knobs.items()) or "default")
def test_fleet_quote_verifies(knobs):
    sample = fleet.mutate(**knobs)
    result = verify(sample)
    selected = [i for o, byte in enumerate(knobs.get("select", b"\xff\xff\xff")) for i in range(8 * o, 8 * o + 8) if byte >> (i % 8) & 1]
    for bank in knobs.get("quote_banks", (SHA256,)):
        assert sorted(result.pcrs.get(bank, {})) == selected
        assert all(result.pcrs[bank][i] == sample.true_pcrs[bank][i] for i in selected)


def test_quote_takes_an_spki_ak_and_flat_pcr_values():
    sample = fleet.make()
    flat = {(bank, index): value for bank, values in sample.pcrs.items() for index, value in values.items()}
    result = verify_quote(sample.ak_public.spki(), sample.quote, sample.signature, flat, fleet.NONCE)
    assert result.pcrs[SHA256] == sample.true_pcrs[SHA256]


def test_supplied_values_outside_the_selection_are_not_attested():
    result = verify(fleet.mutate(select=b"\x80\x00\x00"))
    assert result.pcrs == {SHA256: {7: fleet.make().true_pcrs[SHA256][7]}}


# --- one row per rejection reason -------------------------------------------------------------

ECDSA_SIG = TpmtSignature(Alg.ECDSA, SHA256, ecc=(b"\x01" * 32, b"\x02" * 32)).to_bytes()
ECDAA_SIG = TpmtSignature(Alg.ECDAA, SHA256, ecc=(b"\x01" * 32, b"\x02" * 32)).to_bytes()
HMAC_SIG = b"\x00\x05\x00\x0b" + bytes(32)

REJECTIONS = [
    ("wrong-nonce", dict(extra_data=b"another challenge"), ChallengeMismatch, "tpm-quote-nonce"),
    ("empty-nonce", dict(extra_data=b""), ChallengeMismatch, "tpm-quote-nonce"),
    ("signed-by-another-key", dict(foreign_signer=True), InvalidSignature, "tpm-quote-sig"),
    ("signed-by-another-ec-key", dict(ak="p256", foreign_signer=True), InvalidSignature, "tpm-quote-sig"),
    ("corrupt-signature", dict(corrupt_sig=True), InvalidSignature, "tpm-quote-sig"),
    ("not-tpm-generated", dict(magic=0xFF544348), MalformedStatement, "tpm-attest-magic"),
    ("certify-not-quote", dict(attest_type=St.ATTEST_CERTIFY), RequirementFailed, "tpm-quote-type"),
    ("quote-trailing-byte", dict(quote_edit=lambda b: b + b"\x00"), MalformedStatement, "tpm-attest"),
    ("pcr-digest-altered", dict(pcr_digest=bytes(32)), RequirementFailed, "tpm-quote-pcr-digest"),
    ("pcr-value-altered", dict(supplied=((SHA256, 7, b"\x07" * 32),)), RequirementFailed, "tpm-quote-pcr-digest"),
    ("pcr-value-missing", dict(supplied=((SHA256, 7, None),)), MalformedStatement, "tpm-quote-pcrs"),
    ("pcr-value-wrong-size", dict(supplied=((SHA256, 7, bytes(20)),)), MalformedStatement, "tpm-quote-pcrs"),
    ("pcr-bank-missing", dict(quote_banks=(Alg.SHA384,), supplied=tuple((Alg.SHA384, i, None) for i in range(24))),
     MalformedStatement, "tpm-quote-pcrs"),
    ("ak-not-restricted", dict(ak_attributes=fleet.AK_ATTRIBUTES & ~(1 << 16)), RequirementFailed, "tpm-quote-ak"),
    ("ak-not-signing", dict(ak_attributes=fleet.AK_ATTRIBUTES & ~(1 << 18)), RequirementFailed, "tpm-quote-ak"),
    ("ak-not-fixed-tpm", dict(ak_attributes=fleet.AK_ATTRIBUTES & ~(1 << 1)), RequirementFailed, "tpm-quote-ak"),
    ("scheme-not-the-aks", dict(ak_scheme=Alg.RSAPSS), InvalidSignature, "tpm-quote-sig-alg"),
    ("ecdsa-for-an-rsa-ak", dict(ak_scheme=Alg.NULL, signature_bytes=ECDSA_SIG), InvalidSignature, "tpm-quote-sig-alg"),
    ("ecdaa-signature", dict(ak="p256", signature_bytes=ECDAA_SIG), UnsupportedFormat, "tpm-quote-sig-alg"),
    ("hmac-signature", dict(signature_bytes=HMAC_SIG), UnsupportedFormat, "tpm-signature"),
    ("signature-truncated", dict(signature_bytes=fleet.make().signature[:-1]), MalformedStatement, "tpm-signature"),
]


@pytest.mark.parametrize("name,knobs,error,check", REJECTIONS, ids=[row[0] for row in REJECTIONS])
def test_fleet_rejection(name, knobs, error, check):
    with pytest.raises(error) as caught:
        verify(fleet.mutate(**knobs))
    assert caught.value.check == check, str(caught.value)


def test_wrong_expected_nonce():
    with pytest.raises(ChallengeMismatch):
        verify(fleet.make(), nonce=hashlib.sha256(b"another key authorization").digest())


@pytest.mark.parametrize("ak", [b"not DER", "text", None])
def test_ak_must_be_a_tpmt_public_or_an_spki(ak):
    sample = fleet.make()
    with pytest.raises(MalformedStatement) as caught:
        verify_quote(ak, sample.quote, sample.signature, sample.pcrs, fleet.NONCE)
    assert caught.value.check == "tpm-quote-ak"


@pytest.mark.parametrize("pcrs", [None, [], {SHA256: [b"x"]}, {"sha256": {0: b"x"}}, {SHA256: {0: "00"}}, {True: {0: b""}}, {SHA256: {-1: b""}}])
def test_pcr_values_must_be_a_map_of_banks(pcrs):
    with pytest.raises(MalformedStatement) as caught:
        normalize_pcrs(pcrs)
    assert caught.value.check == "tpm-quote-pcrs"


def test_signature_round_trips():
    for data in (fleet.make().signature, fleet.mutate(ak="p256").signature, ECDAA_SIG):
        assert TpmtSignature.parse(data).to_bytes() == data


# --- the attStmt members ------------------------------------------------------------------------


def test_bundle_from_att_stmt():
    sample = fleet.make()
    assert QuoteBundle.from_att_stmt({"ver": "2.0"}) is None
    bundle = QuoteBundle.from_att_stmt(sample.att_stmt())
    assert bundle == sample.bundle
    no_log = {k: v for k, v in sample.att_stmt().items() if k != "eventLog"}
    assert QuoteBundle.from_att_stmt(no_log).event_log is None


@pytest.mark.parametrize("change", [{"quote": None}, {"quoteSig": "sig"}, {"pcrs": None}, {"eventLog": 1}])
def test_bundle_members_have_their_types(change):
    stmt = {**fleet.make().att_stmt(), **change}
    stmt = {k: v for k, v in stmt.items() if v is not None}
    with pytest.raises(MalformedStatement) as caught:
        QuoteBundle.from_att_stmt(stmt)
    assert caught.value.check in ("tpm-quote-statement", "tpm-quote-pcrs")


# --- fuzzing ----------------------------------------------------------------------------------

FUZZ = settings(max_examples=int(os.environ.get("ACMEDA_FUZZ_EXAMPLES", 200)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = fleet.make()


def patch(data: bytes, offset: int, replacement: bytes) -> bytes:
    return data[:offset] + replacement + data[offset + len(replacement):]


@FUZZ
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_fuzz_random_quote_and_signature_only_attestation_errors(quote, signature):
    with pytest.raises(AttestationError):
        verify_quote(VALID.ak_public, quote, signature, VALID.pcrs, fleet.NONCE)


@FUZZ
@given(st.booleans(), st.data())
def test_fuzz_mutated_quote_or_signature_only_attestation_errors(in_quote, data):
    base = VALID.quote if in_quote else VALID.signature
    mutated = patch(base, data.draw(st.integers(0, len(base) - 1)), data.draw(st.binary(min_size=1, max_size=4)))
    quote, signature = (mutated, VALID.signature) if in_quote else (VALID.quote, mutated)
    try:
        verify_quote(VALID.ak_public, quote, signature, VALID.pcrs, fleet.NONCE)
    except AttestationError:
        return
    assert (quote, signature) == (VALID.quote, VALID.signature)  # only the unchanged pair verifies


@FUZZ
@given(st.one_of(st.binary(max_size=80), st.sampled_from([VALID.signature, ECDSA_SIG]).flatmap(
    lambda base: st.tuples(st.integers(0, len(base) - 1), st.binary(min_size=1, max_size=3)).map(lambda p: patch(base, *p)))))
def test_fuzz_signature_parser_only_attestation_errors(data):
    try:
        parsed = TpmtSignature.parse(data)
    except AttestationError:
        return
    assert parsed.to_bytes() == data  # what parses is canonical
