"""The subject alternative name of TPM EK and AK certificates, decoded tolerantly but exactly.

TCG EK Credential Profile (TPM 2.0) §3.2.9: the certificate subject is empty and the SAN
(critical) holds a directoryName with three attributes, TPMManufacturer (2.23.133.2.1),
TPMModel (2.23.133.2.2) and TPMVersion (2.23.133.2.3). Real certificates differ in ways
that are all the same information, and this decoder accepts each of them:

- one RDN per attribute (the spec's form, STMicro / Intel Windows AIKs) or a single
  multi-valued RDN holding all three (Nuvoton Windows AIKs, Google vTPMs);
- the values as UTF8String (spec) or PrintableString (a Nuvoton EK), or any other
  DirectoryString choice. asn1crypto's `x509.Name` insists on UTF8String for these OIDs, so
  the directoryName is read with the permissive schema below instead.

The same SAN may carry device identifiers as otherName: PermanentIdentifier
(id-on-permanentIdentifier 1.3.6.1.5.5.7.8.3, RFC 4043 §2) and HardwareModuleName
(id-on-hardwareModuleName 1.3.6.1.5.5.7.8.4, RFC 4108 §5). They are returned as the
`attestation.evidence` types; a PermanentIdentifier without identifierValue names nothing
the CA could put in a certificate and is left out. Other general names are ignored.

Only the SAN extension's own bytes are parsed, so a certificate whose other extensions
asn1crypto refuses (a STMicro EK's TPMSecurityAssertions) still yields its SAN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asn1crypto import core
from asn1crypto import x509 as asn1_x509

from attestation.errors import MalformedStatement
from attestation.evidence import HardwareModule, PermanentIdentifier

OID_SAN = "2.5.29.17"
OID_TPM_MANUFACTURER = "2.23.133.2.1"
OID_TPM_MODEL = "2.23.133.2.2"
OID_TPM_VERSION = "2.23.133.2.3"
OID_PERMANENT_IDENTIFIER = "1.3.6.1.5.5.7.8.3"
OID_HARDWARE_MODULE_NAME = "1.3.6.1.5.5.7.8.4"
_TPM_ATTRIBUTES = {OID_TPM_MANUFACTURER: "manufacturer", OID_TPM_MODEL: "model", OID_TPM_VERSION: "version"}
_VENDOR_ID = re.compile(r"id:([0-9A-Fa-f]{8})")


class _Attribute(core.Sequence):
    """AttributeTypeAndValue with the value left as any DER value (RFC 5280 §4.1.2.4)."""

    _fields = [("type", core.ObjectIdentifier), ("value", core.Any)]


class _Rdn(core.SetOf):
    _child_spec = _Attribute


class _RdnSequence(core.SequenceOf):
    _child_spec = _Rdn


class _DirectoryString(core.Choice):
    _alternatives = [
        ("utf8_string", core.UTF8String),
        ("printable_string", core.PrintableString),
        ("ia5_string", core.IA5String),
        ("visible_string", core.VisibleString),
        ("teletex_string", core.TeletexString),
        ("bmp_string", core.BMPString),
        ("universal_string", core.UniversalString),
    ]


class _GeneralName(core.Choice):
    """GeneralName (RFC 5280 §4.2.1.6) with a permissive directoryName."""

    _alternatives = [
        ("other_name", asn1_x509.AnotherName, {"implicit": 0}),
        ("rfc822_name", core.IA5String, {"implicit": 1}),
        ("dns_name", core.IA5String, {"implicit": 2}),
        ("x400_address", asn1_x509.ORAddress, {"implicit": 3}),
        ("directory_name", _RdnSequence, {"explicit": 4}),
        ("edi_party_name", asn1_x509.EDIPartyName, {"implicit": 5}),
        ("uniform_resource_identifier", core.IA5String, {"implicit": 6}),
        ("ip_address", core.OctetString, {"implicit": 7}),
        ("registered_id", core.ObjectIdentifier, {"implicit": 8}),
    ]


class _GeneralNames(core.SequenceOf):
    _child_spec = _GeneralName


class Asn1PermanentIdentifier(core.Sequence):
    """PermanentIdentifier (RFC 4043 §2)."""

    _fields = [
        ("identifier_value", core.UTF8String, {"optional": True}),
        ("assigner", core.ObjectIdentifier, {"optional": True}),
    ]


class Asn1HardwareModuleName(core.Sequence):
    """HardwareModuleName (RFC 4108 §5)."""

    _fields = [("hw_type", core.ObjectIdentifier), ("hw_serial_num", core.OctetString)]


@dataclass(frozen=True)
class TpmSan:
    """What a TPM certificate's SAN states. The three TCG values are as written, e.g. `id:4E544300`."""

    manufacturer: str | None = None
    model: str | None = None
    version: str | None = None
    permanent_identifiers: tuple[PermanentIdentifier, ...] = ()
    hardware_modules: tuple[HardwareModule, ...] = ()

    @property
    def vendor(self) -> str | None:
        """The TCG vendor ID as its four ASCII characters: `id:4E544300` → `NTC`, `id:494E5443` → `INTC`.

        None when the value is not `id:` and eight hex digits, or the octets are not printable ASCII.
        """
        match = _VENDOR_ID.fullmatch(self.manufacturer or "")
        if match is None:
            return None
        text = bytes.fromhex(match.group(1)).rstrip(b"\x00 ")
        if not text or not all(0x20 < c < 0x7F for c in text):
            return None
        return text.decode("ascii")


def _fail(detail: str) -> MalformedStatement:
    return MalformedStatement(f"TPM certificate subjectAltName: {detail}", check="tpm-san")


def _text(value: core.Any, what: str) -> str:
    try:
        text = value.parse(_DirectoryString).native
    except Exception as exc:  # asn1crypto raises ValueError and TypeError on foreign tags
        raise _fail(f"{what} is not a directory string: {exc}") from exc
    if not isinstance(text, str):
        raise _fail(f"{what} is not a directory string")
    return text


def _directory_attributes(rdns: _RdnSequence, found: dict[str, str]) -> None:
    for rdn in rdns:
        for attribute in rdn:
            key = _TPM_ATTRIBUTES.get(attribute["type"].dotted)
            if key is None:
                continue
            if key in found:
                raise _fail(f"TPM {key} appears more than once")
            found[key] = _text(attribute["value"], f"TPM {key}")


def _other_name(other: asn1_x509.AnotherName, permanent: list, modules: list) -> None:
    type_id = other["type_id"].dotted
    if type_id == OID_PERMANENT_IDENTIFIER:
        value = other["value"].parse(Asn1PermanentIdentifier).native
        if value["identifier_value"] is not None:
            permanent.append(PermanentIdentifier(value["identifier_value"], value["assigner"]))
    elif type_id == OID_HARDWARE_MODULE_NAME:
        value = other["value"].parse(Asn1HardwareModuleName).native
        modules.append(HardwareModule(value["hw_type"], value["hw_serial_num"]))


def decode_san(extn_value: bytes) -> TpmSan:
    """Decode the DER GeneralNames of a SAN extension (the extnValue octets)."""
    found: dict[str, str] = {}
    permanent: list[PermanentIdentifier] = []
    modules: list[HardwareModule] = []
    try:
        names = _GeneralNames.load(bytes(extn_value), strict=True)
        for general_name in names:
            if general_name.name == "directory_name":
                _directory_attributes(general_name.chosen, found)
            elif general_name.name == "other_name":
                _other_name(general_name.chosen, permanent, modules)
    except MalformedStatement:
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, … on malformed DER
        raise _fail(f"does not parse: {exc}") from exc
    return TpmSan(found.get("manufacturer"), found.get("model"), found.get("version"), tuple(permanent), tuple(modules))


def san_extension(cert: asn1_x509.Certificate) -> tuple[bytes, bool] | None:
    """The SAN extension's extnValue octets and critical flag, without parsing other extensions."""
    found = None
    try:
        for extension in cert["tbs_certificate"]["extensions"]:
            if extension["extn_id"].dotted == OID_SAN:
                if found is not None:
                    raise _fail("the certificate has two subjectAltName extensions")
                found = (extension["extn_value"].contents, bool(extension["critical"].native))
    except MalformedStatement:
        raise
    except Exception as exc:
        raise _fail(f"the certificate's extensions do not parse: {exc}") from exc
    return found


def certificate_san(der: bytes) -> TpmSan | None:
    """The TPM SAN of a DER certificate (EK or AK), or None when it has no SAN extension."""
    try:
        cert = asn1_x509.Certificate.load(bytes(der))
    except Exception as exc:
        raise _fail(f"the certificate does not parse: {exc}") from exc
    extension = san_extension(cert)
    return None if extension is None else decode_san(extension[0])
