"""TPMT_PUBLIC / TPMS_ATTEST parsers: real TPM bytes, every malformation, and fuzzing."""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import replace

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.errors import AttestationError, MalformedStatement, UnsupportedFormat
from attestation.tpm.constants import Alg, St
from attestation.tpm.structs import (
    CertifyInfo, ClockInfo, EccParms, EccPoint, PcrSelection, QuoteInfo, RsaParms, Scheme,
    SymDefObject, TpmsAttest, TpmtPublic, compute_name,
)
from tests import vectors

WEBAUTHN = sorted(e["path"] for e in vectors.manifest() if e["path"].startswith("tpm-webauthn/"))
QUOTE_JSON = "tpm-quote/go-attestation-windows-gcp-shielded-vm.json"


def att_stmt(path: str) -> dict:
    return cbor2.loads(vectors.read(path))["attStmt"]


def go_attestation() -> dict:
    return json.loads(vectors.read(QUOTE_JSON))


# --- real TPM bytes ----------------------------------------------------------------------


@pytest.mark.parametrize("path", WEBAUTHN)
def test_real_pub_area_parses_as_the_manifest_says(path):
    stmt, expected = att_stmt(path), vectors.entry(path)["checks"]["pubArea"]
    public = TpmtPublic.parse(stmt["pubArea"])
    assert public.to_bytes() == stmt["pubArea"]
    assert {Alg.RSA: "RSA", Alg.ECC: "ECC"}[public.type] == expected["type"]
    assert public.name_alg == int(expected["nameAlg"], 16)
    assert public.object_attributes == int(expected["objectAttributes"], 16)
    key = public.public_key()
    if public.type == Alg.RSA:
        assert public.parameters.key_bits == expected["keyBits"] == key.key_size
        assert public.parameters.exponent == 0 and key.public_numbers().e == expected["exponent"] == 65537
        assert f"{key.public_numbers().n:x}".startswith(expected["n"].rstrip("."))
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert len(public.spki()) > 64


@pytest.mark.parametrize("path", WEBAUTHN)
def test_real_cert_info_certifies_the_pub_area(path):
    stmt = att_stmt(path)
    attest, public = TpmsAttest.parse(stmt["certInfo"]), TpmtPublic.parse(stmt["pubArea"])
    assert attest.to_bytes() == stmt["certInfo"]
    assert attest.type == St.ATTEST_CERTIFY
    assert attest.attested.name == public.name() == compute_name(public.name_alg, stmt["pubArea"])
    assert len(attest.extra_data) == 20  # SHA-1: every Windows Hello statement is alg RS1


def test_real_quote_parses_with_its_pcr_selection_and_digest():
    data, checks = go_attestation(), vectors.entry(QUOTE_JSON)["checks"]
    quote = TpmsAttest.parse(base64.b64decode(data["Quote"]["Quote"]))
    assert quote.type == St.ATTEST_QUOTE and quote.extra_data == b""
    [selection] = quote.attested.pcr_select
    assert [f"{selection.hash_alg:#x}", list(selection.pcrs)] == checks["pcr_selection"][0]
    assert quote.attested.pcr_digest.hex() == checks["pcrDigest_hex"]
    assert quote.to_bytes() == base64.b64decode(data["Quote"]["Quote"])


def test_real_ak_public_of_the_quote_vector():
    expected = vectors.entry(QUOTE_JSON)["checks"]["ak_public"]
    public = TpmtPublic.parse(base64.b64decode(go_attestation()["AK"]["Public"]))
    assert public.object_attributes == int(expected["objectAttributes"], 16)
    assert public.parameters.scheme == Scheme(Alg.RSASSA, Alg.SHA1)
    assert public.public_key().public_numbers().e == expected["exponent"]


def test_creation_attestation_is_a_valid_type_not_parsed_here():
    with pytest.raises(UnsupportedFormat) as info:
        TpmsAttest.parse(base64.b64decode(go_attestation()["AK"]["CreateAttestation"]))
    assert info.value.check == "tpm-attest-type"


# --- strictness ---------------------------------------------------------------------------

RSA_PUB = att_stmt("tpm-webauthn/win-hello-dell-xps13-nuvoton-2021.attObj.cbor")["pubArea"]
ECC_PUB = att_stmt("tpm-webauthn/win-hello-nuvoton-ecc-pubarea-2022.attObj.cbor")["pubArea"]
CERT_INFO = att_stmt("tpm-webauthn/win-hello-dell-xps13-nuvoton-2021.attObj.cbor")["certInfo"]
QUOTE = base64.b64decode(go_attestation()["Quote"]["Quote"])


def patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


@pytest.mark.parametrize("data", [RSA_PUB, ECC_PUB], ids=["rsa", "ecc"])
def test_every_truncation_of_a_pub_area_is_malformed(data):
    for end in range(len(data)):
        with pytest.raises(MalformedStatement):
            TpmtPublic.parse(data[:end])


@pytest.mark.parametrize("data", [CERT_INFO, QUOTE], ids=["certify", "quote"])
def test_every_truncation_of_a_tpms_attest_is_malformed(data):
    for end in range(len(data)):
        with pytest.raises(MalformedStatement):
            TpmsAttest.parse(data[:end])


def with_point(x: bytes, y: bytes) -> bytes:
    return replace(TpmtPublic.parse(ECC_PUB), unique=EccPoint(x, y)).to_bytes()


RSA_AUTH_END = 10 + 32  # type, nameAlg, objectAttributes, authPolicy (2 + 32)

PUBLIC_CASES = [
    ("trailing byte", RSA_PUB + b"\x00", MalformedStatement),
    ("not bytes", "0001", MalformedStatement),
    ("keyedhash object", patch(RSA_PUB, 0, b"\x00\x08"), UnsupportedFormat),
    ("unknown type", patch(RSA_PUB, 0, b"\x12\x34"), UnsupportedFormat),
    ("nameAlg SM3 cannot be computed", patch(RSA_PUB, 2, b"\x00\x12"), UnsupportedFormat),
    ("nameAlg not a hash", patch(RSA_PUB, 2, b"\x00\x01"), UnsupportedFormat),
    ("reserved attribute bit", patch(RSA_PUB, 4, b"\x80\x06\x04\x72"), MalformedStatement),
    ("authPolicy over 64 bytes", patch(RSA_PUB, 8, b"\x00\x41"), MalformedStatement),
    ("symmetric not a sym object alg", patch(RSA_PUB, RSA_AUTH_END, b"\x00\x0b"), UnsupportedFormat),
    ("rsa scheme ECDSA", patch(RSA_PUB, RSA_AUTH_END + 2, b"\x00\x18"), UnsupportedFormat),
    ("keyBits 1000", patch(RSA_PUB, RSA_AUTH_END + 4, b"\x03\xe8"), UnsupportedFormat),
    ("unique shorter than keyBits", patch(RSA_PUB, RSA_AUTH_END + 10, b"\x00\xff")[:-1], MalformedStatement),
    ("curve BN P256", patch(ECC_PUB, RSA_AUTH_END + 4, b"\x00\x10"), UnsupportedFormat),
    ("kdf ECDSA", patch(ECC_PUB, RSA_AUTH_END + 6, b"\x00\x18"), UnsupportedFormat),
    ("ecc x over the curve size", with_point(b"\x01" * 33, b"\x01" * 32), MalformedStatement),
    ("ecc y empty", with_point(b"\x01" * 32, b""), MalformedStatement),
]


@pytest.mark.parametrize("data, error", [c[1:] for c in PUBLIC_CASES], ids=[c[0] for c in PUBLIC_CASES])
def test_tpmt_public_rejects(data, error):
    with pytest.raises(error) as info:
        TpmtPublic.parse(data)
    assert info.value.check == "tpm-public"


def test_point_off_the_curve_is_not_a_public_key():
    public = TpmtPublic.parse(ECC_PUB)
    bad = TpmtPublic.parse(patch(ECC_PUB, len(ECC_PUB) - 1, bytes([ECC_PUB[-1] ^ 1])))
    assert public.public_key()
    with pytest.raises(MalformedStatement):
        bad.public_key()


ATTEST_CASES = [
    ("trailing byte", CERT_INFO + b"\x00", MalformedStatement, "tpm-attest"),
    ("magic", patch(CERT_INFO, 0, b"\xff\x54\x43\x48"), MalformedStatement, "tpm-attest-magic"),
    ("type not an attest tag", patch(CERT_INFO, 4, b"\x80\x01"), MalformedStatement, "tpm-attest-type"),
    ("type NV not parsed", patch(CERT_INFO, 4, b"\x80\x14"), UnsupportedFormat, "tpm-attest-type"),
    ("qualifiedSigner digest length", patch(CERT_INFO, 6, b"\x00\x21"), MalformedStatement, "tpm-attest"),
    ("qualifiedSigner unknown hash", patch(CERT_INFO, 8, b"\x77\x77"), UnsupportedFormat, "tpm-attest"),
    ("extraData over 66 bytes", patch(CERT_INFO, 42, b"\x00\x43"), MalformedStatement, "tpm-attest"),
    ("clockInfo.safe not yes/no", patch(CERT_INFO, 42 + 22 + 16, b"\x02"), MalformedStatement, "tpm-attest"),
    ("quote pcr count", patch(QUOTE, len(QUOTE) - 2 - 20 - 6 - 4, b"\x00\x00\x00\x11"), MalformedStatement, "tpm-attest"),
    ("quote pcr bank unknown", patch(QUOTE, len(QUOTE) - 2 - 20 - 6, b"\x77\x77"), UnsupportedFormat, "tpm-attest"),
]


@pytest.mark.parametrize("data, error, check", [c[1:] for c in ATTEST_CASES], ids=[c[0] for c in ATTEST_CASES])
def test_tpms_attest_rejects(data, error, check):
    with pytest.raises(error) as info:
        TpmsAttest.parse(data)
    assert info.value.check == check


def test_names_may_use_hashes_this_package_cannot_compute():
    sm3_signer = TpmsAttest.parse(patch(CERT_INFO, 8, b"\x00\x12"))  # SM3_256: 32-byte digest, valid
    assert sm3_signer.qualified_signer[:2] == b"\x00\x12"
    with pytest.raises(UnsupportedFormat):
        compute_name(Alg.SM3_256, RSA_PUB)


def test_pcr_selection_bitmap():
    assert PcrSelection(Alg.SHA256, b"\x81\x00\x01").pcrs == (0, 7, 16)


# --- fuzzing ------------------------------------------------------------------------------

FUZZ = settings(max_examples=int(os.environ.get("ACMEDA_FUZZ_EXAMPLES", 300)), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_only_attestation_errors(data):
    for parser in (TpmtPublic.parse, TpmsAttest.parse):
        try:
            parsed = parser(data)
        except AttestationError:
            continue
        assert parsed.to_bytes() == data  # what parses is canonical


@FUZZ
@given(st.sampled_from([RSA_PUB, ECC_PUB, CERT_INFO, QUOTE]), st.data())
def test_fuzz_mutated_real_structures_only_attestation_errors(base, data):
    offset = data.draw(st.integers(0, len(base) - 1))
    mutated = patch(base, offset, data.draw(st.binary(min_size=1, max_size=4)))
    parser = TpmsAttest.parse if base in (CERT_INFO, QUOTE) else TpmtPublic.parse
    try:
        parsed = parser(mutated)
    except AttestationError:
        return
    assert parsed.to_bytes() == mutated
    if isinstance(parsed, TpmtPublic):
        try:
            assert isinstance(parsed.public_key(), (rsa.RSAPublicKey, ec.EllipticCurvePublicKey))
        except MalformedStatement:
            pass


hash_algs = st.sampled_from([Alg.SHA1, Alg.SHA256, Alg.SHA384, Alg.SHA512])
names = st.one_of(st.binary(min_size=4, max_size=4), hash_algs.map(lambda a: struct.pack(">H", a) + b"\x01" * {4: 20, 11: 32, 12: 48, 13: 64}[a]))
sym = st.one_of(st.just(SymDefObject()), st.builds(SymDefObject, st.sampled_from([Alg.AES, Alg.SM4, Alg.CAMELLIA]),
                                                    st.sampled_from([128, 192, 256]), st.sampled_from([Alg.CFB, Alg.CBC])))
rsa_parms = st.builds(RsaParms, sym, st.one_of(st.just(Scheme()), st.builds(Scheme, st.sampled_from([Alg.RSASSA, Alg.RSAPSS, Alg.OAEP]), hash_algs)),
                      st.sampled_from([1024, 2048, 3072, 4096]), st.integers(0, 2**32 - 1))
ecc_parms = st.builds(EccParms, sym, st.one_of(st.just(Scheme()), st.builds(Scheme, st.just(Alg.ECDSA), hash_algs),
                                                st.builds(Scheme, st.just(Alg.ECDAA), hash_algs, st.integers(0, 65535))),
                      st.sampled_from([3, 4, 5]), st.one_of(st.just(Scheme()), st.builds(Scheme, st.just(Alg.KDF2), hash_algs)))


@st.composite
def publics(draw):
    common = dict(name_alg=draw(hash_algs), object_attributes=draw(st.integers(0, 2**32 - 1)) & 0x000F0CF6,
                  auth_policy=draw(st.binary(max_size=64)))
    if draw(st.booleans()):
        parms = draw(rsa_parms)
        return TpmtPublic(Alg.RSA, parameters=parms, unique=draw(st.binary(min_size=parms.key_bits // 8, max_size=parms.key_bits // 8)), **common)
    parms = draw(ecc_parms)
    size = {3: 32, 4: 48, 5: 66}[parms.curve_id]
    point = EccPoint(draw(st.binary(min_size=1, max_size=size)), draw(st.binary(min_size=1, max_size=size)))
    return TpmtPublic(Alg.ECC, parameters=parms, unique=point, **common)


attests = st.builds(
    TpmsAttest, st.just(0xFF544347), st.just(St.ATTEST_CERTIFY), names, st.binary(max_size=66),
    st.builds(ClockInfo, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.booleans()),
    st.integers(0, 2**64 - 1), st.builds(CertifyInfo, names, names),
)
quotes = st.builds(QuoteInfo, st.lists(st.builds(PcrSelection, hash_algs, st.binary(min_size=3, max_size=4)), max_size=4).map(tuple),
                   st.binary(max_size=64))


@FUZZ
@given(publics())
def test_fuzz_tpmt_public_round_trip(public):
    assert TpmtPublic.parse(public.to_bytes()) == public


@FUZZ
@given(attests, quotes, st.booleans())
def test_fuzz_tpms_attest_round_trip(attest, quote, as_quote):
    if as_quote:
        attest = TpmsAttest(attest.magic, St.ATTEST_QUOTE, attest.qualified_signer, attest.extra_data,
                            attest.clock_info, attest.firmware_version, quote)
    assert TpmsAttest.parse(attest.to_bytes()) == attest
