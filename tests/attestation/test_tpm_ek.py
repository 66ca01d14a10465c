"""EK certificates and AK public areas (attestation.tpm.ek, attestation.tpm.ak): every real EK
certificate of the vendor set chains to the bundled TPM maker roots at a time inside its
window (also those `cryptography` cannot parse); untrusted, expired and padded certificates;
pinned EKs; one row per AK refusal; and the bundled roots match their SOURCES.md."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import timedelta
from importlib import resources

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import HealthCheck, given, settings, strategies as st

from attestation.errors import AttestationError, ChainExpired, MalformedStatement, RequirementFailed, UntrustedChain
from attestation.roots import pem_certificates
from attestation.tpm.ak import check_ak_public
from attestation.tpm.constants import Alg, ObjectAttr
from attestation.tpm.credential import Protector
from attestation.tpm.ek import (
    EkTrust, canonical_spki, certificate_spki, check_protector_is_ek, default_ek_trust, ek_hash, pinned_ek,
    verify_ek_certificate,
)
from tests.enroll import soft_tpm
from tests.vectors import VECTORS, entry, parse_time, read

# The GCE "sign" certificates in tpm-ek/ certify signing keys of the vTPM (keyUsage
# digitalSignature only): they chain to the same roots but are not EK certificates.
SIGNING_KEY_VECTORS = sorted(p.name for p in (VECTORS / "tpm-ek").glob("*-sign-cert.der"))
EK_VECTORS = sorted(p.name for p in (VECTORS / "tpm-ek").glob("*.der") if p.name not in SIGNING_KEY_VECTORS)
EXPECTED_TPM = {
    "stm-rsa-ek-keylime.der": ("id:53544D20", "ST33HTPHAHB4", "id:00490004"),
    "nuvoton-ecc-ek-malformed-keylime.der": ("id:4E544300", "NPCT75x", "id:00070002"),
    "infineon-rsa-ek-keylime.der": ("id:49465800", "SLB 9670 TPM2.0", "id:073f"),
    "gce-uca-tpm-rsa-enc-cert.der": ("id:474F4F47", "vTPM", "id:20160511"),
    "gce-pca-tpm-rsa-enc-cert.der": (None, None, None),  # Google's newer EK/AK CA writes no TPM SAN
}


def _inside_window(name: str):
    start, _end = entry(f"tpm-ek/{name}")["checks"]["validity_window_all_certs"]
    return parse_time(start) + timedelta(days=1)


@pytest.mark.parametrize("name", EK_VECTORS)
def test_every_real_ek_certificate_chains_to_the_bundled_roots(name):
    raw = read(f"tpm-ek/{name}")
    ek = verify_ek_certificate(raw, default_ek_trust(), _inside_window(name))
    assert len(ek.path) >= 2 and ek.path[-1] in default_ek_trust().roots
    assert ek.spki == certificate_spki(raw) and re.fullmatch(r"[0-9a-f]{64}", ek.ek_hash)
    if name in EXPECTED_TPM:
        assert (ek.san.manufacturer, ek.san.model, ek.san.version) == EXPECTED_TPM[name]
    if entry(f"tpm-ek/{name}")["checks"].get("python_cryptography_strict_parse") is False:
        with pytest.raises(ValueError):
            x509.load_der_x509_certificate(raw)  # still true: the tolerant parse is what makes it verify


def test_ek_certificates_often_need_the_bundled_intermediates():
    raw = read("tpm-ek/infineon-rsa-ek-keylime.der")
    at = _inside_window("infineon-rsa-ek-keylime.der")
    roots_only = replace(default_ek_trust(), intermediates=())
    with pytest.raises(UntrustedChain, match="EK certificate: .*does not chain"):
        verify_ek_certificate(raw, roots_only, at)
    intermediate = verify_ek_certificate(raw, default_ek_trust(), at).path[1]
    assert verify_ek_certificate(raw, roots_only, at, chain=[intermediate]).path[1] == intermediate


def test_an_ek_from_an_untrusted_maker_is_refused():
    ek_key = soft_tpm.private_key("rsa", 3).public_key()
    untrusted = soft_tpm.maker("untrusted")
    raw = untrusted.ek_certificate(ek_key)
    with pytest.raises(UntrustedChain) as caught:
        verify_ek_certificate(raw, default_ek_trust(), soft_tpm.NOW, chain=[soft_tpm.der(untrusted.intermediate)])
    assert caught.value.check == "chain-untrusted" and str(caught.value).startswith("EK certificate:")
    trusted = EkTrust((soft_tpm.der(untrusted.root),))
    assert verify_ek_certificate(raw, trusted, soft_tpm.NOW, chain=[soft_tpm.der(untrusted.intermediate)])


def test_an_expired_ek_certificate_is_refused():
    with pytest.raises(ChainExpired, match="EK certificate: .*expired"):
        verify_ek_certificate(read("tpm-ek/infineon-rsa-ek-keylime.der"), default_ek_trust(),
                              parse_time("2034-01-01T00:00:00Z"))


def test_nv_padding_is_cut_but_nothing_else_may_follow():
    raw = read("tpm-ek/infineon-rsa-ek-keylime.der")
    at = _inside_window("infineon-rsa-ek-keylime.der")
    assert verify_ek_certificate(raw + b"\xff" * 300, default_ek_trust(), at).spki == certificate_spki(raw)
    assert verify_ek_certificate(raw + b"\x00" * 8, default_ek_trust(), at)
    with pytest.raises(MalformedStatement, match="not NV padding") as caught:
        verify_ek_certificate(raw + b"\xff\x30\x00", default_ek_trust(), at)
    assert caught.value.check == "ek-certificate"


def test_ek_hash_is_sha256_of_the_canonical_spki():
    key = soft_tpm.private_key("rsa", 3)
    spki = canonical_spki(key.public_key())
    assert ek_hash(spki) == hashlib.sha256(spki).hexdigest()
    pinned = pinned_ek(soft_tpm.ek_public("rsa", 3).to_bytes())
    assert pinned.spki == spki
    assert pinned.ek_hash == ek_hash(certificate_spki(soft_tpm.maker().ek_certificate(key.public_key())))


def test_a_pinned_ek_must_be_a_restricted_decryption_key():
    assert pinned_ek(soft_tpm.ek_public("p256").to_bytes()).protector.name_alg == Alg.SHA256
    signing = soft_tpm.ek_public("p256", attributes=soft_tpm.EK_ATTRIBUTES & ~ObjectAttr.DECRYPT | ObjectAttr.SIGN_ENCRYPT)
    with pytest.raises(RequirementFailed, match="restricted decryption key") as caught:
        pinned_ek(signing.to_bytes())
    assert caught.value.check == "ek-attributes"


def test_the_protector_must_be_the_verified_ek():
    ek = pinned_ek(soft_tpm.ek_public("rsa").to_bytes())
    check_protector_is_ek(ek, ek.protector)
    with pytest.raises(RequirementFailed) as caught:
        check_protector_is_ek(ek, Protector.for_key(soft_tpm.private_key("rsa", 41).public_key()))
    assert caught.value.check == "ek-protector"


# --- the AK ------------------------------------------------------------------------------------

AK = soft_tpm.AK_ATTRIBUTES


@pytest.mark.parametrize("kind", ["rsa", "p256", "p384"])
def test_a_restricted_signing_ak_passes(kind):
    public = soft_tpm.ak_public(kind)
    assert check_ak_public(public.to_bytes()) == public


@pytest.mark.parametrize(("changes", "check", "match"), [
    ({"attributes": AK & ~ObjectAttr.RESTRICTED}, "ak-attributes", "lack RESTRICTED"),
    ({"attributes": AK & ~ObjectAttr.FIXED_TPM}, "ak-attributes", "lack FIXED_TPM"),
    ({"attributes": AK & ~ObjectAttr.FIXED_PARENT}, "ak-attributes", "lack FIXED_PARENT"),
    ({"attributes": AK & ~ObjectAttr.SENSITIVE_DATA_ORIGIN}, "ak-attributes", "lack SENSITIVE_DATA_ORIGIN"),
    ({"attributes": AK & ~ObjectAttr.SIGN_ENCRYPT}, "ak-attributes", "lack SIGN_ENCRYPT"),
    ({"attributes": AK | ObjectAttr.DECRYPT}, "ak-decrypt", "set decrypt"),
    ({"name_alg": Alg.SHA1}, "ak-name-alg", "SHA1.*SHA-256 or stronger"),
    ({"kind": "rsa1024"}, "ak-key", "RSA 1024"),
    ({"kind": "p521"}, "ak-key", "NIST_P521"),
])
def test_ak_refusals(changes, check, match):
    public = soft_tpm.ak_public(**changes)
    with pytest.raises(RequirementFailed, match=match) as caught:
        check_ak_public(public.to_bytes())
    assert caught.value.check == check


def test_an_ak_public_area_that_does_not_parse():
    with pytest.raises(MalformedStatement) as caught:
        check_ak_public(soft_tpm.ak_public().to_bytes() + b"\x00")
    assert caught.value.check == "tpm-public"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.sampled_from(["ak", "pinned", "certificate"]))
def test_fuzzed_untrusted_bytes_raise_only_attestation_errors(data, target):
    try:
        if target == "ak":
            check_ak_public(data)
        elif target == "pinned":
            pinned_ek(data)
        else:
            verify_ek_certificate(data, default_ek_trust(), soft_tpm.NOW)
    except AttestationError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzzed_real_certificate_raises_only_attestation_errors(data):
    raw = bytearray(read("tpm-ek/nuvoton-ecc-ek-malformed-keylime.der"))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        verify_ek_certificate(bytes(raw), default_ek_trust(), _inside_window("nuvoton-ecc-ek-malformed-keylime.der"))
    except AttestationError:
        pass


# --- the bundled roots are the data SOURCES.md describes -----------------------------------------


@pytest.mark.parametrize("folder", ["tpm-ek", "tpm-ek-intermediates"])
def test_every_bundled_certificate_is_listed_with_its_fingerprint(folder):
    base = resources.files("attestation.roots").joinpath(folder)
    sources = base.joinpath("SOURCES.md").read_text()
    listed = set(re.findall(r"`([0-9a-f]{64})`", sources))
    found = {hashlib.sha256(der).hexdigest()
             for entry_ in base.iterdir() if entry_.name.endswith(".pem")
             for der in pem_certificates(entry_.read_bytes())}
    assert found and found == listed


def test_roots_and_intermediates_are_separate():
    trust = default_ek_trust()
    assert not set(trust.roots) & set(trust.intermediates)
    assert len(trust.roots) >= 20 and len(trust.intermediates) >= 100


@pytest.mark.parametrize("name", SIGNING_KEY_VECTORS)
def test_a_real_signing_key_certificate_under_a_tpm_root_is_not_an_ek_certificate(name):
    with pytest.raises(RequirementFailed) as caught:
        verify_ek_certificate(read(f"tpm-ek/{name}"), default_ek_trust(), _inside_window(name))
    assert caught.value.check == "ek-certificate"
    assert "allows neither keyEncipherment nor keyAgreement" in str(caught.value)


def _maker_leaf(maker, *, eku=None, ca=False, key_usage=None) -> bytes:
    builder = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(maker.intermediate.subject)
               .public_key(soft_tpm.private_key("rsa", 9).public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(soft_tpm.NOW - timedelta(days=1)).not_valid_after(soft_tpm.NOW + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return soft_tpm.der(builder.sign(maker.intermediate_key, hashes.SHA256()))


def _key_usage(**set_bits) -> x509.KeyUsage:
    bits = dict(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)
    return x509.KeyUsage(**{**bits, **set_bits})


EK_OID = x509.ObjectIdentifier("2.23.133.8.1")
NOT_EK_CERTIFICATES = [
    ("server-certificate", dict(eku=[x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), "lacks tcg-kp-EKCertificate"),
    ("ak-certificate", dict(eku=[x509.ObjectIdentifier("2.23.133.8.3")], key_usage=_key_usage(digital_signature=True)),
     "allows neither keyEncipherment nor keyAgreement"),
    ("ca-certificate", dict(eku=[EK_OID], ca=True), "is a CA certificate"),
]


@pytest.mark.parametrize("case, fields, words", NOT_EK_CERTIFICATES, ids=[c[0] for c in NOT_EK_CERTIFICATES])
def test_a_certificate_under_a_maker_root_must_be_an_ek_certificate(case, fields, words):
    """The activation secret is sealed to the certificate's key: whoever holds the key of any
    other certificate the maker signed could answer it in software."""
    maker = soft_tpm.maker()
    trust = EkTrust((soft_tpm.der(maker.root),), ())
    with pytest.raises(RequirementFailed) as caught:
        verify_ek_certificate(_maker_leaf(maker, **fields), trust, soft_tpm.NOW, chain=[soft_tpm.der(maker.intermediate)])
    assert caught.value.check == "ek-certificate" and words in str(caught.value)


def test_the_makers_intermediate_is_not_an_ek_certificate():
    maker = soft_tpm.maker()
    trust = EkTrust((soft_tpm.der(maker.root),), ())
    with pytest.raises(RequirementFailed, match="is a CA certificate"):
        verify_ek_certificate(soft_tpm.der(maker.intermediate), trust, soft_tpm.NOW)


@pytest.mark.parametrize("fields", [dict(), dict(eku=[EK_OID]), dict(key_usage=_key_usage(key_encipherment=True)),
                                    dict(eku=[EK_OID], key_usage=_key_usage(key_agreement=True))],
                         ids=["no-eku-no-key-usage", "ek-eku", "key-encipherment", "ek-eku-key-agreement"])
def test_ek_certificates_pass_with_the_profiles_marks_or_without_them(fields):
    maker = soft_tpm.maker()
    trust = EkTrust((soft_tpm.der(maker.root),), ())
    assert verify_ek_certificate(_maker_leaf(maker, **fields), trust, soft_tpm.NOW, chain=[soft_tpm.der(maker.intermediate)])
