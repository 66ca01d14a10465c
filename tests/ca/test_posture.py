"""The DevicePosture codec (`ca/posture.py`): round trips, the committed vector, strict decoding.

Malformed inputs are built with asn1crypto through lax schemas below (so that wrong values
can be written); only the BER length case spells bytes out, since no DER encoder emits it.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.evidence import Evidence, Posture, TrustLevel
from ca import oids
from ca.posture import (
    CRITICAL,
    FACT_FIELDS,
    OID,
    DecodedPosture,
    PostureDecodeError,
    _DevicePosture,
    _fact_tags,
    _PostureFacts,
    decode_posture,
    encode_posture,
    posture_extension,
    posture_from_certificate,
)

VECTORS = Path(__file__).resolve().parents[2] / "testdata" / "posture"
UTC = timezone.utc
AT = datetime(2026, 4, 28, 20, 37, 6, tzinfo=UTC)
# One value per fact, used where presence matters more than content.
SAMPLE = Posture(
    os_version="14.0.0", os_patch_level="202510", vendor_patch_level="20251005", boot_patch_level="202510",
    verified_boot="verified", bootloader_locked=False, secure_boot="full", sep_os_version="26.2",
    llb_version="26.2", firmware_version="5.7.1", key_protection="strongbox", pin_policy="once",
    touch_policy="always", extra=(("android.keymint_version", "300"), ("yubikey.fips", "false")),
    key_attested=True, replayable=False,
)


def evidence(posture: Posture = Posture(), trust: TrustLevel = TrustLevel.HARDWARE, fmt: str = "apple") -> Evidence:
    return Evidence(fmt=fmt, public_key=None, trust_level=trust, posture=posture)


# --- round trips -----------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
patch_levels = st.from_regex(r"[0-9]{6}([0-9]{2})?", fullmatch=True)
typed_facts = {
    **{attr: text for attr in FACT_FIELDS},
    **{attr: patch_levels for attr in ("os_patch_level", "vendor_patch_level", "boot_patch_level")},
    "verified_boot": st.sampled_from(["verified", "self-signed", "unverified", "failed"]),
    "bootloader_locked": st.booleans(),
    "key_attested": st.booleans(),
    "replayable": st.booleans(),
}
postures = st.builds(
    Posture,
    **{attr: st.none() | values for attr, values in typed_facts.items()},
    extra=st.dictionaries(text.filter(bool), text, max_size=4).map(lambda d: tuple(sorted(d.items()))),
)
offsets = st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)))
moments = st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(9998, 12, 30), timezones=offsets)


@settings(max_examples=300, deadline=None)
@given(posture=postures, trust=st.sampled_from(TrustLevel), fmt=text.filter(bool), moment=moments)
def test_arbitrary_postures_round_trip_exactly(posture: Posture, trust: TrustLevel, fmt: str, moment: datetime) -> None:
    decoded = decode_posture(encode_posture(evidence(posture, trust, fmt), moment))
    assert decoded == DecodedPosture(1, fmt, trust, moment.astimezone(UTC).replace(microsecond=0), posture)
    assert DecodedPosture.from_json(json.loads(json.dumps(decoded.to_json()))) == decoded


def test_every_fact_pair_present_alone_and_absent_alone_round_trips() -> None:
    """The presence patterns where optional-field matching can go wrong; hypothesis covers the rest."""
    attrs = [*FACT_FIELDS, "extra"]
    pairs = [*itertools.combinations(attrs, 2), *((a,) for a in attrs), ()]
    for n, pair in enumerate(pairs):
        alone = replace(Posture(), **{a: getattr(SAMPLE, a) for a in pair})
        without = replace(SAMPLE, **{a: getattr(Posture(), a) for a in pair})
        for posture in (alone, without):
            trust = list(TrustLevel)[n % len(TrustLevel)]
            assert decode_posture(encode_posture(evidence(posture, trust), AT)).posture == posture


@pytest.mark.parametrize("trust", list(TrustLevel))
def test_each_trust_level_round_trips(trust: TrustLevel) -> None:
    decoded = decode_posture(encode_posture(evidence(SAMPLE, trust), AT))
    assert (decoded.trust_level, decoded.posture, decoded.attested_at) == (trust, SAMPLE, AT)


def test_absent_facts_stay_absent_and_false_is_a_fact() -> None:
    decoded = decode_posture(encode_posture(evidence(Posture(bootloader_locked=False)), AT))
    assert decoded.posture == Posture(bootloader_locked=False)
    assert decoded.to_json()["facts"] == {"bootloaderLocked": False}
    assert decode_posture(encode_posture(evidence(), AT)).to_json()["facts"] == {}


def test_time_is_utc_whole_seconds() -> None:
    local = datetime(2026, 4, 28, 22, 37, 6, 999_999, tzinfo=timezone(timedelta(hours=2)))
    assert decode_posture(encode_posture(evidence(), local)).attested_at == AT


def test_every_posture_field_has_a_tagged_fact_in_order() -> None:
    assert {f.name for f in fields(Posture)} == {*FACT_FIELDS, "extra"}
    names = [name for name, _spec, params in _PostureFacts._fields]
    facts = list(FACT_FIELDS.values())
    assert names == [*facts[:13], "extra", *facts[13:]], "[13] extra sits between the v1 facts and the additions"
    assert [params["implicit"] for _name, _spec, params in _PostureFacts._fields] == list(range(16))


# --- the committed vector --------------------------------------------------------------------

def test_committed_vector_decodes_to_its_json_and_reencodes_byte_for_byte() -> None:
    der = (VECTORS / "device-posture-v1.der").read_bytes()
    expected = json.loads((VECTORS / "device-posture-v1.json").read_text("utf-8"))
    decoded = decode_posture(der)
    assert decoded.to_json() == expected
    from_json = DecodedPosture.from_json(expected)
    assert decoded == from_json
    again = encode_posture(evidence(from_json.posture, from_json.trust_level, from_json.fmt), from_json.attested_at)
    assert again == der


def test_vector_generator_agrees_with_the_committed_files() -> None:
    script = VECTORS / "make_vector.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_hex_dump_in_the_profile_document_is_the_committed_vector() -> None:
    doc = (VECTORS.parents[1] / "docs" / "certificate-profile.md").read_text("utf-8")
    block = doc.split("<!-- device-posture-v1.der -->\n```\n", 1)[1].split("```", 1)[0]
    assert bytes.fromhex(block) == (VECTORS / "device-posture-v1.der").read_bytes()


# --- strict decoding -------------------------------------------------------------------------

class _AnyEnum(core.Enumerated):
    _map = {n: str(n) for n in range(-1, 128)}


class _Elements(core.SequenceOf):
    _child_spec = core.Any


def elements(*values: core.Asn1Value) -> _Elements:
    return _Elements([core.Any(value) for value in values])


def posture_der(*, version: int = 1, fmt: str = "apple", trust: core.Asn1Value | None = None,
                time: core.Asn1Value | None = None, facts: core.Asn1Value | None = None,
                after: tuple[core.Asn1Value, ...] = ()) -> bytes:
    """A DevicePosture written with lax types, so any field can carry a wrong value."""
    return elements(
        core.Integer(version), core.UTF8String(fmt), trust if trust is not None else _AnyEnum(3),
        time if time is not None else core.GeneralizedTime("20260428203706Z"),
        facts if facts is not None else elements(), *after,
    ).dump()


def fact(tag: int, value: str = "x") -> core.Asn1Value:
    return core.UTF8String(value, implicit=tag)


def extra(*pairs: tuple[str, str]) -> core.Asn1Value:
    return _Elements([core.Any(elements(core.UTF8String(n), core.UTF8String(v))) for n, v in pairs], implicit=13)


def test_lax_builder_writes_what_the_codec_writes() -> None:
    assert posture_der(facts=elements(fact(0, "26.2"))) == encode_posture(evidence(Posture(os_version="26.2")), AT)


REJECTED = {
    "version 0": posture_der(version=0),
    "version 2": posture_der(version=2),
    "empty format": posture_der(fmt=""),
    "trust level 4": posture_der(trust=_AnyEnum(4)),
    "trust level -1": posture_der(trust=_AnyEnum(-1)),
    "trust level as INTEGER": posture_der(trust=core.Integer(3)),
    "verifiedBoot 4": posture_der(facts=elements(_AnyEnum(4, implicit=4))),
    "BOOLEAN 0x01": posture_der(facts=elements(core.Boolean(contents=b"\x01", implicit=5))),
    "patch level YYYY": posture_der(facts=elements(fact(1, "2025"))),
    "patch level with a sign": posture_der(facts=elements(fact(2, "+2025100"))),
    "fractional seconds": posture_der(time=core.GeneralizedTime("20260428203706.5Z")),
    "local time": posture_der(time=core.GeneralizedTime("20260428203706")),
    "offset time": posture_der(time=core.GeneralizedTime("20260428203706+0200")),
    "UTCTime": posture_der(time=core.UTCTime("260428203706Z")),
    "month 13": posture_der(time=core.GeneralizedTime("20261328203706Z")),
    "facts out of order": posture_der(facts=elements(fact(6), fact(0))),
    "fact repeated": posture_der(facts=elements(fact(0), fact(0))),
    "addition before a known fact": posture_der(facts=elements(fact(14), fact(6))),
    "universal element in facts": posture_der(facts=elements(core.UTF8String("x"))),
    "explicit tag for a fact": posture_der(facts=elements(core.UTF8String("x", explicit=0))),
    "empty extra": posture_der(facts=elements(extra())),
    "extra unsorted": posture_der(facts=elements(extra(("b", "1"), ("a", "2")))),
    "extra repeated": posture_der(facts=elements(extra(("a", "1"), ("a", "2")))),
    "extra empty name": posture_der(facts=elements(extra(("", "1")))),
    "element after facts": posture_der(after=(fact(0),)),
    "facts missing": elements(core.Integer(1), core.UTF8String("apple"), _AnyEnum(3), core.GeneralizedTime(AT)).dump(),
    "invalid UTF-8": posture_der(facts=elements(core.UTF8String(contents=b"\xc0\xaf", implicit=0))),
    "trailing bytes": posture_der() + core.Null().dump(),
    "not a SEQUENCE": core.OctetString(posture_der()).dump(),
    "empty input": b"",
}


@pytest.mark.parametrize("der", REJECTED.values(), ids=REJECTED.keys())
def test_decoder_rejects(der: bytes) -> None:
    with pytest.raises(PostureDecodeError):
        decode_posture(der)


def test_rejections_name_the_problem() -> None:
    def message(der: bytes) -> str:
        with pytest.raises(PostureDecodeError) as info:
            decode_posture(der)
        return str(info.value)

    assert "unknown DevicePosture version 2" in message(REJECTED["version 2"])
    assert "trustLevel 4 is not a known value" in message(REJECTED["trust level 4"])
    assert "verifiedBoot 4 is not a known value" in message(REJECTED["verifiedBoot 4"])
    assert "trailing data" in message(REJECTED["trailing bytes"])
    assert "not DER" in message(REJECTED["BOOLEAN 0x01"])
    assert "out of order" in message(REJECTED["facts out of order"])


def test_decoder_rejects_a_long_form_length() -> None:
    der = encode_posture(evidence(), AT)
    assert der[:2] == b"\x30\x20"  # SEQUENCE of 32 octets; BER may also write 30 81 20
    with pytest.raises(PostureDecodeError, match="not DER"):
        decode_posture(b"\x30\x81" + der[1:])


def test_additions_are_skipped_by_this_decoder() -> None:
    future = core.Boolean(True, implicit=16), _Elements([core.Any(core.Integer(7)), core.Any(fact(0))], implicit=20)
    der = posture_der(facts=elements(fact(0, "26.2"), *future))
    assert decode_posture(der).posture == Posture(os_version="26.2")
    bad_known = elements(core.Boolean(contents=b"\x01", implicit=5), *future)
    with pytest.raises(PostureDecodeError, match="not DER"):
        decode_posture(posture_der(facts=bad_known))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_posture_decode_error(data: bytes) -> None:
    try:
        decode_posture(data)
    except PostureDecodeError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_vector_is_rejected_or_canonical(data: st.DataObject) -> None:
    der = bytearray((VECTORS / "device-posture-v1.der").read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(der) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            der[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del der[at]
        else:
            der.insert(at, data.draw(st.integers(0, 255)))
    try:
        decoded = decode_posture(bytes(der))
    except PostureDecodeError:
        return
    again = encode_posture(evidence(decoded.posture, decoded.trust_level, decoded.fmt), decoded.attested_at)
    assert again == bytes(der) or has_additions(bytes(der))  # whatever is accepted is canonical
    assert decode_posture(again) == decoded


def has_additions(der: bytes) -> bool:
    return any(tag > 15 for tag in _fact_tags(_DevicePosture.load(der)["facts"]))


def test_a_mutation_into_an_addition_is_skipped() -> None:
    der = bytearray((VECTORS / "device-posture-v1.der").read_bytes())
    at = der.index(b"\xad\x81\x8e")  # [13] extra becomes [16], a fact from the future
    der[at] = 0xB0
    assert has_additions(bytes(der))
    assert decode_posture(bytes(der)).posture.extra == ()


# --- encoder refusals ------------------------------------------------------------------------

@pytest.mark.parametrize("ev, moment", [
    (evidence(), AT.replace(tzinfo=None)),
    (evidence(fmt=""), AT),
    (evidence(Posture(os_patch_level="2025-10")), AT),
    (evidence(Posture(boot_patch_level="2025101")), AT),
    (evidence(Posture(verified_boot="green")), AT),
    (evidence(Posture(bootloader_locked="yes")), AT),  # type: ignore[arg-type]
    (evidence(Posture(os_version=14)), AT),  # type: ignore[arg-type]
    (evidence(Posture(extra=(("b", "1"), ("a", "2")))), AT),
    (evidence(Posture(extra=(("a", "1"), ("a", "2")))), AT),
    (evidence(Posture(extra=(("", "1"),))), AT),
], ids=["naive time", "empty format", "patch level dashes", "patch level 7 digits", "verified boot word",
        "bool as str", "int version", "extra unsorted", "extra repeated", "extra empty name"])
def test_encoder_refuses_what_the_profile_cannot_carry(ev: Evidence, moment: datetime) -> None:
    with pytest.raises(ValueError):
        encode_posture(ev, moment)


# --- on a certificate ------------------------------------------------------------------------

def certificate(*extensions: tuple[x509.ExtensionType, bool]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name.from_rfc4514_string("CN=test CA"))
        .public_key(key.public_key()).serial_number(1).not_valid_before(AT).not_valid_after(AT + timedelta(hours=24))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:x-test:device")]), critical=True)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


def test_extension_on_a_certificate_is_non_critical_with_the_private_oid() -> None:
    vector = DecodedPosture.from_json(json.loads((VECTORS / "device-posture-v1.json").read_text("utf-8")))
    ev = evidence(vector.posture, vector.trust_level, vector.fmt)
    cert = x509.load_der_x509_certificate(certificate((posture_extension(ev, AT), CRITICAL)).public_bytes(Encoding.DER))
    extension = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oids.DEVICE_POSTURE))
    assert extension.critical is False
    assert extension.oid.dotted_string == "2.25.55515455809226192695543010104513035564.1.1"
    assert extension.value.value == (VECTORS / "device-posture-v1.der").read_bytes()
    assert posture_from_certificate(cert) == vector


def test_certificate_without_posture_reads_none_and_a_broken_one_raises() -> None:
    assert posture_from_certificate(certificate()) is None
    broken = certificate((x509.UnrecognizedExtension(OID, posture_der(version=2)), False))
    with pytest.raises(PostureDecodeError, match="version 2"):
        posture_from_certificate(broken)


def test_oid_arc_allocations() -> None:
    assert oids.DEVICE_POSTURE == f"{oids.ARC}.1.1" and oids.AGENT_DELEGATION == f"{oids.ARC}.1.2"
    assert oids.ASSIGNER_TPM_EK_HASH == f"{oids.ARC}.3.1" and oids.ASSIGNER_CLOUD_INSTANCE_ID == f"{oids.ARC}.3.2"
    assert len(set(oids.ALL.values())) == len(oids.ALL)
    for value in oids.ALL.values():
        assert value == oids.ARC or value.startswith(oids.ARC + ".")
        assert x509.ObjectIdentifier(value).dotted_string == value
        assert core.ObjectIdentifier(value).dotted == value
