"""fmt "gcp-iit": real GCE identity tokens under Google's (historical) keys, one row per
rejection reason through the test fleet, and fuzzing of the token parser."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.assigners import GCE_INSTANCE_ID
from attestation.context import TrustStore, VerificationContext
from attestation.errors import (
    AttestationError, ChallengeMismatch, IdentifierMissing, InvalidSignature, MalformedStatement,
    RequirementFailed, UnsupportedFormat, UntrustedChain,
)
from attestation.evidence import Evidence, PermanentIdentifier, TrustLevel
from attestation.formats import gcp_iit
from tests import vectors
from tests.fleet import gcp_iit as fleet

TOKENS = sorted(e["path"] for e in vectors.manifest() if e["path"].endswith(".jwt") and e["path"].startswith("gcp-iit/"))
EXPECTED = {  # the instances the two real tokens name (MANIFEST §4c)
    "gcp-iit/infisical-dev-2024-05-17.jwt": ("8418160715288427941", "infisical-dev", "741176294612", "test-instance"),
    "gcp-iit/ncbi-gold-optics-2020-08-08.jwt": ("2911665560261013853", "gold-optics-262407", "1076775697284", "instance-1"),
}


def real(path: str) -> tuple[str, datetime, str]:
    """(token, its iat, its recorded aud) of a real vector."""
    entry = vectors.entry(path)
    token = vectors.read(path).decode("ascii").strip()
    return token, vectors.parse_time(entry["checks"]["iat_iso"]), entry["checks"]["aud"]


# --- real tokens -------------------------------------------------------------------------------


def test_bundled_keys_are_the_vector_jwks():
    vector_keys = sorted(vectors.read(p) for p in ("gcp-iit/google-oauth2-jwk-744f60e9.json",
                                                   "gcp-iit/google-oauth2-jwk-a3b762f8.json",
                                                   "gcp-iit/google-oauth2-jwk-bb434695.json"))
    assert sorted(gcp_iit.default_keys()) == vector_keys
    assert set(gcp_iit.trusted_keys(gcp_iit.default_keys())) == {
        "744f60e9fb515a2a01c11ebeb228712860540711", "a3b762f871cdb3bae0044c649622fc1396eda3e3",
        "bb43469594451820148b339c588aede305103919"}


@pytest.mark.parametrize("path", TOKENS)
def test_real_token_verifies_at_its_iat_under_its_recorded_audience(path):
    token, iat, aud = real(path)
    evidence = gcp_iit.verify_token(token, gcp_iit.default_keys(), iat, gcp_iit.audience_equal_to(aud))
    instance, project, number, name = EXPECTED[path]
    assert evidence.fmt == "gcp-iit" and evidence.trust_level is TrustLevel.CLOUD and evidence.public_key is None
    assert evidence.permanent_identifiers == (PermanentIdentifier(instance, GCE_INSTANCE_ID),)
    extra = dict(evidence.posture.extra)
    assert (extra["gce_project_id"], extra["gce_project_number"], extra["gce_instance_name"]) == (project, number, name)
    assert extra["gce_zone"] == "us-central1-a" and extra["gce_instance_creation"] < iat.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert evidence.attested_at == iat and not evidence.replayable and evidence.chain == ()


@pytest.mark.parametrize("path", TOKENS)
def test_real_token_is_refused_under_an_acme_binding(path):
    """Its aud was chosen by another relying party: it is bound to no ACME challenge."""
    token, iat, _aud = real(path)
    ctx = VerificationContext(gcp_iit.acme_binding("tok", b"tok.thumb"), iat, TrustStore(keys={"gcp-iit": gcp_iit.default_keys()}))
    with pytest.raises(ChallengeMismatch) as info:
        gcp_iit.verify({"token": token}, ctx)
    assert info.value.check == "gcp-iit-audience"


@pytest.mark.parametrize("path", TOKENS)
def test_real_token_after_its_hour(path):
    token, iat, aud = real(path)
    with pytest.raises(RequirementFailed) as info:
        gcp_iit.verify_token(token, gcp_iit.default_keys(), iat + timedelta(hours=1), gcp_iit.audience_equal_to(aud))
    assert info.value.check == "gcp-iit-expired"


def test_real_token_without_its_key_is_untrusted():
    token, iat, aud = real(TOKENS[0])
    others = tuple(d for d in gcp_iit.default_keys() if json.loads(d)["kid"] != gcp_iit.parse_token(token).header["kid"])
    with pytest.raises(UntrustedChain) as info:
        gcp_iit.verify_token(token, others, iat, gcp_iit.audience_equal_to(aud))
    assert info.value.check == "gcp-iit-key-unknown"


# --- binding -----------------------------------------------------------------------------------


def test_acme_binding_is_the_base64url_sha256_of_the_key_authorization():
    keyauth = b"tok.thumb"
    digest = base64.urlsafe_b64encode(hashlib.sha256(keyauth).digest()).rstrip(b"=")
    assert gcp_iit.acme_binding("tok", keyauth).challenge == digest and len(digest) == 43
    assert gcp_iit.audience_for("https://ca.example/acme/", keyauth) == f"https://ca.example/acme/device-attest-01/{digest.decode()}"
    assert gcp_iit.FORMAT.name == "gcp-iit" and gcp_iit.FORMAT.acme_binding is gcp_iit.acme_binding


def test_fleet_statement_verifies_for_acme():
    att = fleet.for_acme("tok", b"tok.thumb")
    evidence = gcp_iit.verify(att.att_stmt, att.ctx)
    assert evidence.permanent_identifiers == (PermanentIdentifier(fleet.INSTANCE_ID, GCE_INSTANCE_ID),)
    assert evidence.attested_at == fleet.NOW - timedelta(minutes=1)


DIGEST = fleet.attest().ctx.binding.challenge.decode()
ACCEPT = {
    "issuer without scheme": fleet.Knobs(claims={"iss": "accounts.google.com"}),
    "no typ": fleet.Knobs(header={"typ": None}),
    "aud on another host and path": fleet.Knobs(claims={"aud": f"https://vm.example/x/y/{DIGEST}"}),
    "keys as a JWK Set": fleet.Knobs(keys=(fleet.jwk_document(fleet.jwk("other", "k2"), fleet.jwk()),)),
    "iat within the clock skew": fleet.Knobs(claims={"iat": int(fleet.NOW.timestamp()) + 240,
                                                     "exp": int(fleet.NOW.timestamp()) + 3000}),
    "embedded jwk header ignored": fleet.Knobs(header={"jwk": fleet.jwk("rogue")}),
}


@pytest.mark.parametrize("knobs", ACCEPT.values(), ids=ACCEPT.keys())
def test_fleet_accepts(knobs):
    att = fleet.attest(knobs)
    assert gcp_iit.verify(att.att_stmt, att.ctx).permanent_identifiers[0].value == fleet.INSTANCE_ID


def test_license_ids_become_a_fact():
    att = fleet.attest(fleet.Knobs(engine={"license_id": ["5926592092274602096", "1000010"]}))
    assert dict(gcp_iit.verify(att.att_stmt, att.ctx).posture.extra)["gce_license_ids"] == "5926592092274602096,1000010"


# --- one row per rejection reason --------------------------------------------------------------

T = int(fleet.NOW.timestamp())
K = fleet.Knobs
REJECT = [
    ("token not text", K(token=b"a.b.c"), MalformedStatement, "gcp-iit-token"),  # type: ignore[arg-type]
    ("token two parts", K(token="eyJ9.eyJ9"), MalformedStatement, "gcp-iit-token"),
    ("token padded base64", K(token="eyJhbGciOiJSUzI1NiJ9==.e30.AA"), MalformedStatement, "gcp-iit-token"),
    ("header not JSON", K(token=f"{fleet.b64(b'alg')}.e30.AA"), MalformedStatement, "gcp-iit-token"),
    ("header duplicate member", K(token=fleet.b64(b'{"alg":"RS256","alg":"none"}') + ".e30.AA"), MalformedStatement, "gcp-iit-token"),
    ("payload an array", K(token=f"{fleet.b64(b'{}')}.{fleet.b64(b'[]')}.AA"), MalformedStatement, "gcp-iit-token"),
    ("token too long", K(claims={"pad": "x" * 9000}), MalformedStatement, "gcp-iit-token"),
    ("alg none", K(header={"alg": "none"}), UnsupportedFormat, "gcp-iit-alg"),
    ("alg HS256 keyed with the JWK", K(header={"alg": "HS256"}, signer="hs256"), UnsupportedFormat, "gcp-iit-alg"),
    ("alg RS512", K(header={"alg": "RS512"}), UnsupportedFormat, "gcp-iit-alg"),
    ("alg lower case", K(header={"alg": "rs256"}), UnsupportedFormat, "gcp-iit-alg"),
    ("alg missing", K(header={"alg": None}), UnsupportedFormat, "gcp-iit-alg"),
    ("crit", K(header={"crit": ["exp"]}), UnsupportedFormat, "gcp-iit-crit"),
    ("typ not JWT", K(header={"typ": "at+jwt"}), MalformedStatement, "gcp-iit-typ"),
    ("kid missing", K(header={"kid": None}), MalformedStatement, "gcp-iit-kid"),
    ("kid unknown", K(header={"kid": "0000"}), UntrustedChain, "gcp-iit-key-unknown"),
    ("key document not JWK", K(keys=(b"{]",)), UntrustedChain, "gcp-iit-keys"),
    ("key too small", K(keys=(json.dumps({**fleet.jwk(), "n": fleet.b64(b"\xff" * 128)}).encode(),)), UntrustedChain, "gcp-iit-keys"),
    ("only non-RS256 keys", K(keys=(json.dumps({**fleet.jwk(), "alg": "RS384"}).encode(),)), UntrustedChain, "gcp-iit-keys"),
    ("signature corrupted", K(corrupt_signature=True), InvalidSignature, "gcp-iit-signature"),
    ("signed by another key, same kid", K(signer="rogue"), InvalidSignature, "gcp-iit-signature"),
    ("signed by the key in its own jwk header", K(signer="rogue", header={"jwk": fleet.jwk("rogue")}), InvalidSignature,
     "gcp-iit-signature"),
    ("issuer not Google", K(claims={"iss": "https://evil.example"}), RequirementFailed, "gcp-iit-issuer"),
    ("issuer missing", K(claims={"iss": None}), RequirementFailed, "gcp-iit-issuer"),
    ("issuer a list", K(claims={"iss": ["https://accounts.google.com"]}), RequirementFailed, "gcp-iit-issuer"),
    ("iat not an integer", K(claims={"iat": "1793000000"}), MalformedStatement, "gcp-iit-claims"),
    ("exp a float", K(claims={"exp": T + 60.5}), MalformedStatement, "gcp-iit-claims"),
    ("exp missing", K(claims={"exp": None}), MalformedStatement, "gcp-iit-claims"),
    ("iat in the future", K(claims={"iat": T + 600, "exp": T + 1200}), RequirementFailed, "gcp-iit-iat"),
    ("expired", K(claims={"iat": T - 3600, "exp": T}), RequirementFailed, "gcp-iit-expired"),
    ("lifetime over an hour", K(claims={"iat": T - 60, "exp": T + 3600}), RequirementFailed, "gcp-iit-lifetime"),
    ("exp before iat", K(claims={"iat": T + 60, "exp": T + 30}), RequirementFailed, "gcp-iit-lifetime"),
    ("aud another challenge", K(claims={"aud": f"{fleet.CA_URL}/device-attest-01/{'A' * 43}"}), ChallengeMismatch, "gcp-iit-audience"),
    ("aud digest with a suffix", K(claims={"aud": f"{fleet.CA_URL}/device-attest-01/{DIGEST}x"}), ChallengeMismatch, "gcp-iit-audience"),
    ("aud http", K(claims={"aud": f"http://ca.example/device-attest-01/{DIGEST}"}), ChallengeMismatch, "gcp-iit-audience"),
    ("aud with a query", K(claims={"aud": f"https://ca.example/device-attest-01/{DIGEST}?x=1"}), ChallengeMismatch, "gcp-iit-audience"),
    ("aud the digest alone", K(claims={"aud": DIGEST}), ChallengeMismatch, "gcp-iit-audience"),
    ("aud a list", K(claims={"aud": [f"https://ca.example/device-attest-01/{DIGEST}"]}), ChallengeMismatch, "gcp-iit-audience"),
    ("aud missing", K(claims={"aud": None}), ChallengeMismatch, "gcp-iit-audience"),
    ("format=standard token", K(claims={"google": None}), IdentifierMissing, "gcp-iit-compute-engine"),
    ("instance_id not decimal", K(engine={"instance_id": "i-0abc"}), MalformedStatement, "gcp-iit-compute-engine"),
    ("instance_id missing", K(engine={"instance_id": None}), MalformedStatement, "gcp-iit-compute-engine"),
    ("project_number a string", K(engine={"project_number": "123"}), MalformedStatement, "gcp-iit-compute-engine"),
    ("zone empty", K(engine={"zone": ""}), MalformedStatement, "gcp-iit-compute-engine"),
    ("license_id not a list", K(engine={"license_id": "123"}), MalformedStatement, "gcp-iit-compute-engine"),
]


@pytest.mark.parametrize("knobs, error, check", [r[1:] for r in REJECT], ids=[r[0] for r in REJECT])
def test_fleet_rejects(knobs, error, check):
    att = fleet.attest(knobs)
    with pytest.raises(error) as info:
        gcp_iit.verify(att.att_stmt, att.ctx)
    assert type(info.value) is error and info.value.check == check


def test_no_keys_configured_fails_closed():
    att = fleet.attest()
    with pytest.raises(UntrustedChain) as info:
        gcp_iit.verify(att.att_stmt, replace(att.ctx, trust=TrustStore()))
    assert info.value.check == "gcp-iit-keys"


@pytest.mark.parametrize("stmt", [None, [("token", "x")], "token", {"tok": "x"}])
def test_statement_that_is_not_a_map_with_a_token(stmt):
    with pytest.raises(MalformedStatement) as info:
        gcp_iit.verify(stmt, fleet.attest().ctx)
    assert info.value.check == "gcp-iit-token"


# --- fuzzing the parser of untrusted bytes: nothing but AttestationError escapes ------------------

FUZZ = settings(max_examples=int(os.environ.get("ACMEDA_FUZZ_EXAMPLES", 150)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=10)


def _verify_or_error(att_stmt, ctx=None) -> None:
    try:
        assert isinstance(gcp_iit.verify(att_stmt, ctx or fleet.attest().ctx), Evidence)
    except AttestationError:
        pass


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=64) | st.integers() | st.none())
def test_fuzz_arbitrary_tokens(token):
    _verify_or_error({"token": token})


@FUZZ
@given(JSON, JSON)
def test_fuzz_arbitrary_header_and_claims(header, claims):
    """Well-formed base64url around arbitrary JSON, validly signed: the claim checks must hold."""
    if isinstance(header, dict):
        header = {"alg": "RS256", "kid": fleet.KID, **header}
    encoded = f"{fleet.b64(json.dumps(header).encode())}.{fleet.b64(json.dumps(claims).encode())}"
    signature = fleet._sign(fleet.Knobs(), encoded.encode())
    _verify_or_error({"token": f"{encoded}.{fleet.b64(signature)}"})


VALID = fleet.attest().token


@FUZZ
@given(st.integers(0, len(VALID) - 1), st.text(alphabet="AZaz09-_.=+/ é", min_size=1, max_size=3))
def test_fuzz_mutated_valid_token(offset, replacement):
    _verify_or_error({"token": VALID[:offset] + replacement + VALID[offset + 1:]})
