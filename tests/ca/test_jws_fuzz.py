"""Fuzzing the parsers of untrusted request bytes: only ACME problems may come out, never a crash,
and the running app answers every mangled request with a 4xx problem document."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca import jws
from ca.problems import AcmeProblem, Malformed
from tests.acme_client import b64, sign

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_parse_jws_on_random_bytes(data):
    try:
        jws.parse_jws(data)
    except AcmeProblem:
        pass


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["protected", "payload", "signature", "header", "x"]),
                       st.text(alphabet="AZaz09-_=+/ .", max_size=40) | json_values, max_size=4))
def test_parse_jws_on_random_structures(obj):
    try:
        jws.parse_jws(json.dumps(obj).encode())
    except AcmeProblem:
        pass


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_account_key_and_algorithm_parsing(value):
    for check in (jws.parse_account_key, lambda v: jws.signature_algorithm({"alg": v})):
        try:
            check(value)
        except AcmeProblem:
            pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["EC", "RSA"]),
       st.dictionaries(st.sampled_from(["crv", "x", "y", "n", "e", "use", "alg", "kid", "key_ops"]), json_values, max_size=5))
def test_account_key_with_members_of_any_type(kty, members):
    try:
        jws.parse_account_key({"kty": kty, **members})
    except AcmeProblem:
        pass


@pytest.mark.parametrize("body", [
    b"[" * 100_000,
    b'{"a":' * 100_000,
    json.dumps({"protected": b64(b"[" * 100_000), "payload": "", "signature": ""}).encode(),
])
def test_parse_jws_on_deep_nesting(body):
    with pytest.raises(Malformed, match="nested too deeply"):
        jws.parse_jws(body)


def test_payload_json_on_deep_nesting():
    parsed = jws.parse_jws(json.dumps({"protected": b64(b'{"alg":"ES256"}'), "payload": b64(b"[" * 100_000),
                                       "signature": ""}).encode())
    with pytest.raises(Malformed, match="payload is not valid JSON: nested too deeply"):
        jws.payload_json(parsed)


def _mutations(body: dict[str, str], rng: random.Random, count: int) -> list[bytes]:
    raw = json.dumps(body).encode()
    out = []
    for _ in range(count):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.5:
                data[position] = rng.randrange(256)
            elif choice < 0.75:
                del data[position]
            else:
                data.insert(position, rng.randrange(256))
        out.append(bytes(data))
    return out


async def test_app_answers_mangled_requests_with_problems(acme):
    await acme.new_account()
    rng = random.Random(8555)
    url = acme.directory["newOrder"]
    body = sign({"identifiers": [{"type": "ip", "value": "127.0.0.1"}]}, key=acme.key, url=url,
                nonce=await acme.nonce(), kid=acme.kid)
    for data in _mutations(body, rng, 150):
        response = await acme.http.post("/acme/new-order", data=data, headers={"Content-Type": "application/jose+json"})
        assert 400 <= response.status < 500 or response.status == 201, (response.status, data)
        if response.status != 201:
            assert response.content_type == "application/problem+json"
