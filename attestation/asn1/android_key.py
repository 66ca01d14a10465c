"""Android Key Attestation: the KeyDescription extension (OID 1.3.6.1.4.1.11129.2.1.17).

Schema from "Key and ID attestation", source.android.com/docs/security/features/keystore/
attestation#schema, and developer.android.com/privacy-and-security/security-key-attestation
(attestation versions 1, 2, 3, 4, 100, 200, 300, 400 and 500). The AuthorizationList below
is the union of every version's fields: each one is an EXPLICIT context-specific tag equal
to the KeyMint `Tag` number, all optional, in ascending tag order as DER requires.

A tag this schema does not know makes the parse fail (fail closed), as in Google's own
verifier; add it here when a new KeyMint version defines one. Tags out of ascending order
are refused too: asn1crypto would otherwise set such an element aside unnamed and the
field would silently read as absent.
"""

from __future__ import annotations

from asn1crypto import core

from attestation.errors import MalformedStatement, catch_builtins

KEY_DESCRIPTION_OID = "1.3.6.1.4.1.11129.2.1.17"


class DerBoolean(core.Boolean):
    """BOOLEAN that accepts only the DER encodings 0x00 and 0xFF (X.690 §11.1).

    asn1crypto reads any non-zero octet as TRUE; Android's own parser refuses the BER
    form, and a RootOfTrust with deviceLocked encoded as 0x01 is a known malformed sample.
    """

    def __bool__(self) -> bool:
        if self.contents not in (b"\x00", b"\xff"):
            raise ValueError(f"BOOLEAN is not DER-encoded (contents {self.contents.hex()})")
        return self.contents == b"\xff"


class SecurityLevel(core.Enumerated):
    _map = {0: "Software", 1: "TrustedEnvironment", 2: "StrongBox"}


class VerifiedBootState(core.Enumerated):
    _map = {0: "Verified", 1: "SelfSigned", 2: "Unverified", 3: "Failed"}


class RootOfTrust(core.Sequence):
    """verifiedBootHash is absent in attestation versions 1 and 2."""

    _fields = [
        ("verified_boot_key", core.OctetString),
        ("device_locked", DerBoolean),
        ("verified_boot_state", VerifiedBootState),
        ("verified_boot_hash", core.OctetString, {"optional": True}),
    ]


class IntegerSet(core.SetOf):
    _child_spec = core.Integer


def _tagged(name: str, tag: int, spec: type) -> tuple[str, type, dict]:
    return (name, spec, {"explicit": tag, "optional": True})


class AuthorizationList(core.Sequence):
    _fields = [
        _tagged("purpose", 1, IntegerSet),
        _tagged("algorithm", 2, core.Integer),
        _tagged("key_size", 3, core.Integer),
        _tagged("block_mode", 4, IntegerSet),
        _tagged("digest", 5, IntegerSet),
        _tagged("padding", 6, IntegerSet),
        _tagged("caller_nonce", 7, core.Null),
        _tagged("min_mac_length", 8, core.Integer),
        _tagged("ec_curve", 10, core.Integer),
        _tagged("ml_dsa_variant", 11, core.Integer),  # version >= 500
        _tagged("rsa_public_exponent", 200, core.Integer),
        _tagged("mgf_digest", 203, IntegerSet),
        _tagged("rollback_resistance", 303, core.Null),
        _tagged("early_boot_only", 305, core.Null),
        _tagged("active_date_time", 400, core.Integer),
        _tagged("origination_expire_date_time", 401, core.Integer),
        _tagged("usage_expire_date_time", 402, core.Integer),
        _tagged("usage_count_limit", 405, core.Integer),
        _tagged("user_secure_id", 502, core.Integer),
        _tagged("no_auth_required", 503, core.Null),
        _tagged("user_auth_type", 504, core.Integer),
        _tagged("auth_timeout", 505, core.Integer),
        _tagged("allow_while_on_body", 506, core.Null),
        _tagged("trusted_user_presence_required", 507, core.Null),
        _tagged("trusted_confirmation_required", 508, core.Null),
        _tagged("unlocked_device_required", 509, core.Null),
        _tagged("all_applications", 600, core.Null),  # versions 1 and 2
        _tagged("creation_date_time", 701, core.Integer),
        _tagged("origin", 702, core.Integer),
        _tagged("rollback_resistant", 703, core.Null),  # versions 1 and 2
        _tagged("root_of_trust", 704, RootOfTrust),
        _tagged("os_version", 705, core.Integer),
        _tagged("os_patch_level", 706, core.Integer),
        _tagged("attestation_application_id", 709, core.OctetString),
        _tagged("attestation_id_brand", 710, core.OctetString),
        _tagged("attestation_id_device", 711, core.OctetString),
        _tagged("attestation_id_product", 712, core.OctetString),
        _tagged("attestation_id_serial", 713, core.OctetString),
        _tagged("attestation_id_imei", 714, core.OctetString),
        _tagged("attestation_id_meid", 715, core.OctetString),
        _tagged("attestation_id_manufacturer", 716, core.OctetString),
        _tagged("attestation_id_model", 717, core.OctetString),
        _tagged("vendor_patch_level", 718, core.Integer),
        _tagged("boot_patch_level", 719, core.Integer),
        _tagged("device_unique_attestation", 720, core.Null),
        _tagged("attestation_id_second_imei", 723, core.OctetString),
        _tagged("module_hash", 724, core.OctetString),  # version >= 400
    ]


class KeyDescription(core.Sequence):
    """`keymaster_*` fields are named `keyMint*` from version 100 on; the encoding is the same."""

    _fields = [
        ("attestation_version", core.Integer),
        ("attestation_security_level", SecurityLevel),
        ("keymint_version", core.Integer),
        ("keymint_security_level", SecurityLevel),
        ("attestation_challenge", core.OctetString),
        ("unique_id", core.OctetString),
        ("software_enforced", AuthorizationList),
        ("hardware_enforced", AuthorizationList),
    ]


class _AnyAlgorithmIdentifier(core.Sequence):
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class AnyPublicKeyInfo(core.Sequence):
    """SubjectPublicKeyInfo (RFC 5280 §4.1) of any key type, for reading the algorithm OID.

    asn1crypto's `keys.PublicKeyInfo` refuses key types it does not know, such as the ML-DSA
    keys (FIPS 204, OIDs 2.16.840.1.101.3.4.3.17–19) of KeyMint 5 leaves.
    """

    _fields = [("algorithm", _AnyAlgorithmIdentifier), ("public_key", core.BitString)]


@catch_builtins
def parse_key_description(der: bytes) -> KeyDescription:
    """Parse the extension value (the DER inside extnValue) completely, or raise MalformedStatement."""
    if not isinstance(der, (bytes, bytearray)):
        raise MalformedStatement("KeyDescription is not a byte string")
    description = KeyDescription.load(bytes(der), strict=True)
    description.native  # force every nested field (and DerBoolean's check) to parse now
    for name in ("software_enforced", "hardware_enforced"):
        if len(description[name]) != len(AuthorizationList._fields):
            raise MalformedStatement(f"KeyDescription {name}: tags are not in ascending order or are unknown")
    return description
