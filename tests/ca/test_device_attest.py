"""device-attest-01: attObj decoding, format dispatch, error mapping and identifier/key policy.

The real formats are tested in tests/attestation/; here the TEST-ONLY stand-in format of
`tests.ca.standin_format` drives the plumbing (see its docstring).
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import cbor2
import pytest
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation import MAX_ATTESTATION_OBJECT, decode_attestation_object, verify_attestation
from attestation.context import Binding, TrustStore, VerificationContext
from attestation.errors import AttestationError, MalformedStatement, UnsupportedFormat
from attestation.evidence import Evidence, TrustLevel
from attestation.format import Format, key_authorization_binding
from ca.challenges import ValidationRequest
from ca.challenges.device_attest import DeviceAttestValidator, csr_key_matches_evidence
from ca.clock import FrozenClock
from ca.identifiers import Identifier, IdentifierType
from ca.problems import BadAttestationStatement, BadCSR, Malformed, UnsupportedIdentifier
from tests.ca import standin_format
from tests.ca.standin_format import Device
from attestation.evidence import TrustLevel as _TrustLevel
from ca.device_policy import DevicePolicy

SOFTWARE_OK = DevicePolicy(min_trust_level=_TrustLevel.SOFTWARE)  # the stand-in proves only a software key

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
KEY_AUTHZ = f"{TOKEN}.{THUMBPRINT}"
OTHER = Format(name="other", verify=standin_format.verify, acme_binding=key_authorization_binding)
ALL_FORMATS = {"standin": standin_format.FORMAT, "other": OTHER}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def perm(value: str) -> Identifier:
    return Identifier(IdentifierType.PERMANENT_IDENTIFIER, value)


def request(payload, identifier: Identifier | None = None) -> ValidationRequest:
    return ValidationRequest(identifier or perm("SN-0001"), TOKEN, KEY_AUTHZ, payload, THUMBPRINT)


def att_payload(att_obj: bytes) -> dict:
    return {"attObj": b64u(att_obj)}


@pytest.fixture
def validator() -> DeviceAttestValidator:
    return DeviceAttestValidator({"standin": standin_format.FORMAT}, TrustStore(), FrozenClock(NOW), policy=SOFTWARE_OK)


@pytest.fixture
def device() -> Device:
    return Device()


async def test_happy_path(validator, device):
    result = await validator.validate(request(att_payload(device.att_obj(KEY_AUTHZ.encode()))))
    assert result.evidence.public_key == device.spki
    assert result.evidence.attested_at == NOW  # the context's time came from the injected clock
    assert result.record == {
        "fmt": "standin",
        "trustLevel": "software",
        "identifier": {"type": "permanent-identifier", "value": "SN-0001"},
        "attestedIdentifiers": [{"type": "permanent-identifier", "value": "SN-0001"}],
        "attestedAt": NOW.isoformat(),
    }


async def test_hardware_module_and_assigner_match_in_text_form(validator, device):
    att = device.att_obj(KEY_AUTHZ.encode(), hwType="1.3.6.1.4.1.41482.3.7")
    hw = Identifier(IdentifierType.HARDWARE_MODULE, "SN-0001/1.3.6.1.4.1.41482.3.7")
    assert (await validator.validate(request(att_payload(att), hw))).evidence.hardware_modules
    att = device.att_obj(KEY_AUTHZ.encode(), assigner="1.2.3.4")
    assert await validator.validate(request(att_payload(att), perm("SN-0001/1.2.3.4")))


async def test_unknown_payload_members_are_ignored_and_auth_data_allowed(validator, device):
    stmt = device.statement(KEY_AUTHZ.encode())
    att = cbor2.dumps({"fmt": "standin", "attStmt": stmt, "authData": b"\x00" * 37})
    assert await validator.validate(request({**att_payload(att), "note": "draft-09 §5: ignored"}))


@pytest.mark.parametrize("payload", [
    {}, {"attObj": None}, {"attObj": ""}, {"attObj": 42}, {"attObj": ["AA"]},
    {"attObj": "oGNmbXQ="}, {"attObj": "oGNm+XQ"}, {"attObj": "oGNm/XQ"}, {"attObj": "oG Nm"},
    {"attObj": "A"}, {"attObj": "AB"}, ["attObj"], "attObj",
], ids=["empty", "null", "empty-string", "number", "array", "padded", "plus", "slash", "space",
        "length-1-mod-4", "stray-bits", "payload-array", "payload-string"])
async def test_bad_payload_is_malformed_naming_att_obj(validator, payload):
    with pytest.raises(Malformed) as info:
        await validator.validate(request(payload))
    assert "attObj" in info.value.detail


@pytest.mark.parametrize("att_obj, detail", [
    (b"\xff\xfe\xfd", "not valid CBOR"),
    (cbor2.dumps({"fmt": "standin", "attStmt": {}}) + b"\x00", "1 trailing bytes"),
    (cbor2.dumps(["standin", {}]), "not a map"),
    (cbor2.dumps({"fmt": "standin"}), "lacks attStmt"),
    (cbor2.dumps({"attStmt": {}}), "lacks fmt"),
    (cbor2.dumps({"fmt": "standin", "attStmt": {}, "x5c": []}), "unexpected keys 'x5c'"),
    (cbor2.dumps({"fmt": b"standin", "attStmt": {}}), "fmt is not a text string"),
    (cbor2.dumps({"fmt": "standin", "attStmt": [1]}), "attStmt is not a map"),
    (cbor2.dumps({"fmt": "standin", "attStmt": {}, "authData": "text"}), "authData is not a byte string"),
    (cbor2.dumps({"fmt": "standin", "attStmt": {}, "authData": None}), "authData is not a byte string"),
    (bytes.fromhex("a3" "63666d74" "6161" "63666d74" "6162" "6761747453746d74" "a0"), "Duplicate map key"),
    (cbor2.dumps({"fmt": "standin", "attStmt": {True: 1}}), "map key True: map keys must be"),
    (cbor2.dumps({"fmt": "standin", "attStmt": {1.5: 1}}), "map key 1.5: map keys must be"),
    (cbor2.dumps({"fmt": "standin", "attStmt": {None: 1}}), "map key None: map keys must be"),
    (cbor2.dumps({"fmt": "standin", "attStmt": {"x": {False: 1}}}), "map key False: map keys must be"),
], ids=["not-cbor", "trailing", "array", "no-attStmt", "no-fmt", "extra-key", "fmt-bytes", "stmt-array",
        "authData-text", "authData-null", "duplicate-key", "key-true", "key-float", "key-null", "nested-key-false"])
async def test_bad_attestation_object(validator, att_obj, detail):
    with pytest.raises(BadAttestationStatement) as info:
        await validator.validate(request(att_payload(att_obj)))
    assert detail in info.value.detail
    assert isinstance(info.value.__cause__, MalformedStatement)


@pytest.mark.parametrize("tagged", ["c11a514b67b0", "d81c80", "d9d9f7a0", "c249010000000000000000", "f7", "f8ff"],
                         ids=["date", "shareable", "self-describe", "bignum", "undefined", "simple"])
def test_tags_and_simple_values_are_rejected(tagged):
    att = bytes.fromhex("a263666d7467") + b"standin" + bytes.fromhex("6761747453746d74a16161") + bytes.fromhex(tagged)
    with pytest.raises(MalformedStatement):
        decode_attestation_object(att)


def test_integer_and_byte_string_map_keys_are_allowed():
    obj = decode_attestation_object(cbor2.dumps({"fmt": "standin", "attStmt": {1: b"x", -7: 2, b"k": [True, None]}}))
    assert obj.att_stmt == {1: b"x", -7: 2, b"k": [True, None]} and obj.auth_data is None


def test_oversized_attestation_object_is_rejected():
    att = cbor2.dumps({"fmt": "standin", "attStmt": {"pad": b"\x00" * MAX_ATTESTATION_OBJECT}})
    with pytest.raises(MalformedStatement, match="larger than"):
        decode_attestation_object(att)


async def test_unknown_format_lists_enabled_formats_sorted(device):
    validator = DeviceAttestValidator({"standin": standin_format.FORMAT, "alpha": OTHER}, TrustStore(), FrozenClock(NOW), policy=SOFTWARE_OK)
    with pytest.raises(BadAttestationStatement) as info:
        await validator.validate(request(att_payload(device.att_obj(KEY_AUTHZ.encode(), fmt="packed"))))
    assert info.value.detail == "attestation format 'packed' is not enabled on this server; enabled formats: alpha, standin"
    assert isinstance(info.value.__cause__, UnsupportedFormat)


async def test_disabled_format_is_unsupported(validator, device):
    att = device.att_obj(KEY_AUTHZ.encode(), fmt="other")
    assert verify_attestation(att, VerificationContext(Binding(KEY_AUTHZ.encode(), KEY_AUTHZ.encode()), NOW,
                                                       TrustStore()), ALL_FORMATS)  # known to the library
    with pytest.raises(BadAttestationStatement, match="'other' is not enabled on this server; enabled formats: standin$"):
        await validator.validate(request(att_payload(att)))


async def test_attestation_error_detail_is_preserved(validator, device):
    att = device.att_obj(b"some other key authorization")
    with pytest.raises(BadAttestationStatement) as info:
        await validator.validate(request(att_payload(att)))
    assert info.value.detail == "standin: sig does not verify over attToBeSigned with attStmt.pub"
    assert info.value.__cause__.check == "signature-invalid"


async def test_format_crash_on_bad_input_becomes_malformed_statement(device):
    def crashing(stmt, ctx):
        return stmt["missing"]

    validator = DeviceAttestValidator({"standin": Format("standin", crashing, key_authorization_binding)},
                                      TrustStore(), FrozenClock(NOW))
    with pytest.raises(BadAttestationStatement, match="KeyError"):
        await validator.validate(request(att_payload(device.att_obj(KEY_AUTHZ.encode()))))


async def test_identifier_mismatch_carries_rejected_identifier_subproblem(validator, device):
    ordered = perm("SN-9999")
    with pytest.raises(BadAttestationStatement) as info:
        await validator.validate(request(att_payload(device.att_obj(KEY_AUTHZ.encode())), ordered))
    doc = info.value.to_json()
    assert doc["type"] == "urn:ietf:params:acme:error:badAttestationStatement"
    assert "permanent-identifier:SN-9999" in doc["detail"] and "permanent-identifier:SN-0001" in doc["detail"]
    assert len(doc["subproblems"]) == 1
    sub = doc["subproblems"][0]
    assert sub["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"
    assert sub["identifier"] == {"type": "permanent-identifier", "value": "SN-9999"}


@pytest.mark.parametrize("ordered", [
    perm("sn-0001"),  # octet for octet: no case folding
    perm("SN-0001/1.2.3.4"),  # the evidence states no assigner
    Identifier(IdentifierType.HARDWARE_MODULE, "SN-0001/1.2.3.4"),  # a permanent identifier is not a module
])
async def test_identifier_match_is_exact(validator, device, ordered):
    with pytest.raises(BadAttestationStatement) as info:
        await validator.validate(request(att_payload(device.att_obj(KEY_AUTHZ.encode())), ordered))
    assert info.value.subproblems[0].identifier == ordered


async def test_order_without_assigner_does_not_match_evidence_with_one(validator, device):
    att = device.att_obj(KEY_AUTHZ.encode(), assigner="1.2.3.4")
    with pytest.raises(BadAttestationStatement, match="SN-0001/1.2.3.4"):
        await validator.validate(request(att_payload(att), perm("SN-0001")))


@pytest.mark.parametrize("ordered", [perm("ABC/2.25.1"), perm("ABC")])
async def test_attested_value_with_a_slash_has_no_text_form(validator, ordered):
    """PermanentIdentifier("ABC/2.25.1") without assigner must not match the order "ABC/2.25.1",
    which reads as value ABC with assigner 2.25.1: an assigner the evidence never stated."""
    att = Device(serial="ABC/2.25.1").att_obj(KEY_AUTHZ.encode())
    with pytest.raises(BadAttestationStatement) as info:
        await validator.validate(request(att_payload(att), ordered))
    assert info.value.subproblems[0].identifier == ordered
    assert "permanent-identifier with value 'ABC/2.25.1' (empty or holding \"/\")" in info.value.detail


async def test_identifier_less_evidence(validator):
    with pytest.raises(BadAttestationStatement) as info:
        await validator.validate(request(att_payload(Device(serial="").att_obj(KEY_AUTHZ.encode()))))
    assert info.value.detail == "attestation proves no device identifier"
    assert not info.value.subproblems


async def test_non_device_identifier_is_unsupported(validator, device):
    with pytest.raises(UnsupportedIdentifier):
        await validator.validate(request(att_payload(device.att_obj(KEY_AUTHZ.encode())),
                                         Identifier(IdentifierType.DNS, "example.com")))


def _evidence(public_key: bytes | None) -> Evidence:
    return Evidence(fmt="standin", public_key=public_key, trust_level=TrustLevel.SOFTWARE)


def test_csr_key_must_be_the_attested_key(device):
    csr_key_matches_evidence(device.spki, _evidence(device.spki))
    with pytest.raises(BadCSR) as info:
        csr_key_matches_evidence(Device().spki, _evidence(device.spki))
    assert info.value.detail == "CSR public key is not the attested key"
    with pytest.raises(BadCSR):
        csr_key_matches_evidence(b"not a key", _evidence(device.spki))
    # Evidence that attests no key binds through the account: any CSR key is the account's choice.
    csr_key_matches_evidence(Device().spki, _evidence(None))


def test_csr_key_comparison_ignores_point_compression():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = asn1_keys.PublicKeyInfo.load(spki)
    compressed = asn1_keys.PublicKeyInfo({
        "algorithm": info["algorithm"],
        "public_key": key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint),
    }).dump()
    assert compressed != spki
    csr_key_matches_evidence(spki, _evidence(compressed))


# --- fuzz: nothing but AttestationError leaves verify_attestation -------------------------------

FUZZ_CTX = VerificationContext(Binding(KEY_AUTHZ.encode(), KEY_AUTHZ.encode()), NOW, TrustStore())
_leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(), st.text(max_size=20), st.binary(max_size=40),
                    st.just(cbor2.undefined), st.builds(cbor2.CBORSimpleValue, st.integers(32, 255)))
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4),
                            st.builds(cbor2.CBORTag, st.integers(0, 2**16), inner)),
    max_leaves=20,
)
_stmt_keys = st.sampled_from(["alg", "pub", "sig", "serial", "hwType", "assigner"])
_statements = st.dictionaries(st.one_of(_stmt_keys, st.text(max_size=6)), _values, max_size=6)
_objects = st.one_of(
    _values,
    st.fixed_dictionaries({"fmt": st.one_of(st.sampled_from(["standin", "other", ""]), _values),
                           "attStmt": st.one_of(_statements, _values)},
                          optional={"authData": _values, "extra": _values}),
)


def _only_attestation_errors(data: bytes) -> None:
    try:
        verify_attestation(data, FUZZ_CTX, ALL_FORMATS)
    except AttestationError:
        pass


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_fuzz_random_bytes(data):
    _only_attestation_errors(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_objects, st.binary(max_size=3))
def test_fuzz_random_cbor_structures(obj, trailer):
    encoded = cbor2.dumps(obj)
    _only_attestation_errors(encoded)
    _only_attestation_errors(encoded + trailer)


@settings(max_examples=200, deadline=None)
@given(_statements)
def test_fuzz_statements_reach_the_format(stmt):
    valid = Device().statement(KEY_AUTHZ.encode())
    _only_attestation_errors(cbor2.dumps({"fmt": "standin", "attStmt": {**valid, **stmt}}))
