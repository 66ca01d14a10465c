"""Subject alternative names of ACME identifiers: encode for issuance, decode for checking.

dns → dNSName, ip → iPAddress, and the two device identifiers of
draft-ietf-acme-device-attest (§3, §4) as otherName:

- `permanent-identifier` → id-on-permanentIdentifier (RFC 4043)
  `PermanentIdentifier ::= SEQUENCE { identifierValue UTF8String OPTIONAL,
                                      assigner OBJECT IDENTIFIER OPTIONAL }`
- `hardware-module` → id-on-hardwareModuleName (RFC 4108)
  `HardwareModuleName ::= SEQUENCE { hwType OBJECT IDENTIFIER, hwSerialNum OCTET STRING }`

Text forms in ACME orders are those the draft defines (§3.1, §4.1):
`permanent-identifier-value = device-identifier-value ["/" assigner-value]` and
`hardware-module-value = hw-serial-num-value "/" hw-type-value`, where the OIDs are
dotted decimal and the identifier / serial contains no "/". The hwSerialNum octets are the
UTF-8 octets of the serial text, octet for octet (§4.2); identifierValue is always present
(§3.2). Decoding rebuilds the text form, so "CSR matches order" is an exact string
comparison as the draft requires, and a name that has no text form (a "/" inside the
serial, a missing identifierValue, non-UTF-8 serial octets) is refused rather than guessed.

The same decoder serves the finalize-time CSR check and the relying-party gate.
"""

from __future__ import annotations

import ipaddress
import re

from asn1crypto import core
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from ca.identifiers import Identifier, IdentifierType

ID_ON_PERMANENT_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.8.3")
ID_ON_HARDWARE_MODULE_NAME = ObjectIdentifier("1.3.6.1.5.5.7.8.4")

# The draft's ABNF for a dotted-decimal OID: first arc 0-2, second arc 0-39 under 0 and 1,
# no leading zeros anywhere.
_DOTTED_OID = re.compile(r"(?:[01]\.[1-3]?[0-9]|2\.(?:0|[1-9][0-9]*))(?:\.(?:0|[1-9][0-9]*))*")


class PermanentIdentifier(core.Sequence):
    """RFC 4043 §2."""

    _fields = [
        ("identifier_value", core.UTF8String, {"optional": True}),
        ("assigner", core.ObjectIdentifier, {"optional": True}),
    ]


class HardwareModuleName(core.Sequence):
    """RFC 4108 §5."""

    _fields = [
        ("hw_type", core.ObjectIdentifier),
        ("hw_serial_num", core.OctetString),
    ]


class OtherNameError(ValueError):
    """A device identifier's text form or otherName DER is not acceptable; says which rule failed."""


def split_permanent_identifier(value: str) -> tuple[str, str | None]:
    """`ABC123` → ("ABC123", None); `ABC123/1.2.3.4` → ("ABC123", "1.2.3.4")."""
    device_id, sep, assigner = value.partition("/")
    if not device_id:
        raise OtherNameError(f"permanent-identifier {value!r} has an empty device identifier")
    if not sep:
        return device_id, None
    _check_oid(assigner, f"permanent-identifier {value!r} assigner")
    return device_id, assigner


def split_hardware_module(value: str) -> tuple[str, str]:
    """`ABCD/1.2.3.4` → serial "ABCD", hwType "1.2.3.4"."""
    serial, sep, hw_type = value.partition("/")
    if not sep:
        raise OtherNameError(f"hardware-module {value!r} lacks the '/' and hardware type OID")
    if not serial:
        raise OtherNameError(f"hardware-module {value!r} has an empty serial number")
    _check_oid(hw_type, f"hardware-module {value!r} hardware type")
    return serial, hw_type


def _check_oid(dotted: str, what: str) -> None:
    if not _DOTTED_OID.fullmatch(dotted):
        raise OtherNameError(f"{what} {dotted!r} is not a dotted-decimal object identifier")


def encode_general_name(identifier: Identifier) -> x509.GeneralName:
    """The SAN entry that carries `identifier` in a certificate."""
    if identifier.type is IdentifierType.DNS:
        return x509.DNSName(identifier.value)
    if identifier.type is IdentifierType.IP:
        return x509.IPAddress(ipaddress.ip_address(identifier.value))
    return encode_other_name(identifier)


def encode_other_name(identifier: Identifier) -> x509.OtherName:
    if identifier.type is IdentifierType.PERMANENT_IDENTIFIER:
        device_id, assigner = split_permanent_identifier(identifier.value)
        fields: dict[str, object] = {"identifier_value": device_id}
        if assigner is not None:
            fields["assigner"] = assigner
        return x509.OtherName(ID_ON_PERMANENT_IDENTIFIER, PermanentIdentifier(fields).dump())
    if identifier.type is IdentifierType.HARDWARE_MODULE:
        serial, hw_type = split_hardware_module(identifier.value)
        value = HardwareModuleName({"hw_type": hw_type, "hw_serial_num": serial.encode("utf-8")})
        return x509.OtherName(ID_ON_HARDWARE_MODULE_NAME, value.dump())
    raise OtherNameError(f"identifier type {identifier.type.value} has no otherName form")


def decode_other_name(name: x509.OtherName) -> Identifier:
    """The device identifier an otherName SAN names; `OtherNameError` if it names none."""
    if name.type_id == ID_ON_PERMANENT_IDENTIFIER:
        return Identifier(IdentifierType.PERMANENT_IDENTIFIER, _decode_permanent_identifier(name.value))
    if name.type_id == ID_ON_HARDWARE_MODULE_NAME:
        return Identifier(IdentifierType.HARDWARE_MODULE, _decode_hardware_module(name.value))
    raise OtherNameError(f"otherName {name.type_id.dotted_string} is not a device identifier")


def _decode_permanent_identifier(der: bytes) -> str:
    fields = _load_exact(PermanentIdentifier, der)
    device_id, assigner = fields.get("identifier_value"), fields.get("assigner")
    if not device_id:
        raise OtherNameError("PermanentIdentifier has no identifierValue")
    if "/" in device_id:
        raise OtherNameError(f"PermanentIdentifier identifierValue {device_id!r} contains '/'")
    return device_id if assigner is None else f"{device_id}/{assigner}"


def _decode_hardware_module(der: bytes) -> str:
    fields = _load_exact(HardwareModuleName, der)
    try:
        serial = fields["hw_serial_num"].decode("utf-8")
    except UnicodeDecodeError:
        raise OtherNameError("HardwareModuleName hwSerialNum is not UTF-8") from None
    if not serial or "/" in serial:
        raise OtherNameError(f"HardwareModuleName hwSerialNum {serial!r} is empty or contains '/'")
    return f"{serial}/{fields['hw_type']}"


def _load_exact(schema: type[core.Sequence], der: bytes) -> dict[str, object]:
    """The schema's fields from `der`, which must be exactly their DER encoding."""
    what = schema.__name__
    names = {name for name, _, *_ in schema._fields}
    # The bytes come from a CSR. asn1crypto parses lazily, so a bad element can surface while
    # reading `.native` or re-encoding, not only in `load`, and not only as ValueError: an
    # unexpected universal tag raises AttributeError, a wrong type TypeError, and a truncated
    # OID ValueError only when it is dumped. Everything that touches the bytes stays guarded.
    try:
        native = schema.load(der, strict=True).native
        fields = {name: value for name, value in native.items() if name in names and value is not None}
        # asn1crypto tolerates extra SEQUENCE elements and some BER forms; re-encoding exposes both.
        canonical = bool(fields) and schema(fields).dump() == der
    except (ValueError, TypeError, AttributeError) as exc:
        raise OtherNameError(f"{what} is not valid DER: {_reason(exc)}") from None
    if not fields:
        raise OtherNameError(f"{what} is not valid DER: it holds none of its fields")
    if not canonical:
        raise OtherNameError(f"{what} is not valid DER: unexpected elements or a non-canonical encoding")
    return fields


def _reason(exc: Exception) -> str:
    """A client-facing reason: asn1crypto's first line; its AttributeError text names internals."""
    if isinstance(exc, AttributeError):
        return "an element has an ASN.1 type the schema does not allow there"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
