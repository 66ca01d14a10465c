"""ACME identifiers: the typed `Identifier` value and the syntax check of each identifier type.

Types: `dns` (RFC 8555), `ip` (RFC 8738), and the device identifiers of
draft-ietf-acme-device-attest: `permanent-identifier` and `hardware-module`.
Values are checked and brought to canonical form at the edge, so every later comparison
is an exact octet comparison.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ca.problems import Malformed, RejectedIdentifier, UnsupportedIdentifier


class IdentifierType(str, Enum):
    DNS = "dns"
    IP = "ip"
    PERMANENT_IDENTIFIER = "permanent-identifier"
    HARDWARE_MODULE = "hardware-module"

    @property
    def is_device(self) -> bool:
        return self in (IdentifierType.PERMANENT_IDENTIFIER, IdentifierType.HARDWARE_MODULE)


@dataclass(frozen=True, order=True)
class Identifier:
    type: IdentifierType
    value: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type.value, "value": self.value}

    @property
    def is_wildcard(self) -> bool:
        return self.type is IdentifierType.DNS and self.value.startswith("*.")

    def __str__(self) -> str:
        return f"{self.type.value}:{self.value}"


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_MAX_DEVICE_VALUE = 1024


def parse_identifier(obj: Any) -> Identifier:
    """Parse and canonicalise one identifier object from a request; raise the right problem."""
    if not isinstance(obj, dict) or set(obj) - {"type", "value"}:
        raise Malformed("identifier must be an object with exactly the fields type and value")
    type_, value = obj.get("type"), obj.get("value")
    if not isinstance(type_, str) or not isinstance(value, str):
        raise Malformed("identifier type and value must be strings")
    try:
        itype = IdentifierType(type_)
    except ValueError:
        raise UnsupportedIdentifier(
            f"identifier type {type_!r} is not supported; supported: "
            + ", ".join(t.value for t in IdentifierType)
        ) from None
    return Identifier(itype, _CANONICALISERS[itype](value))


def _canonical_dns(value: str) -> str:
    name = value.lower()
    if name != value:
        # Exact matching downstream depends on one spelling; RFC 8555 §7.1.4 wants the ASCII form.
        raise Malformed(f"dns identifier {value!r} must be lower case")
    if name.endswith("."):
        raise Malformed(f"dns identifier {value!r} must not end with a dot")
    if len(name) > 253:
        raise Malformed("dns identifier is longer than 253 octets")
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            raise RejectedIdentifier(f"wildcard {value!r} must cover at least two labels")
    if len(labels) < 2:
        raise RejectedIdentifier(f"dns identifier {value!r} is not a fully qualified domain name")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise Malformed(f"dns identifier {value!r} has an invalid label {label!r}")
    if labels[-1].isdigit():
        raise Malformed(f"dns identifier {value!r} looks like an IP address; use the ip type")
    return name


def _canonical_ip(value: str) -> str:
    if "%" in value:
        # A zone index (RFC 6874) names an interface of the client's host, not an address we could validate.
        raise Malformed(f"ip identifier {value!r} must not carry an IPv6 zone index")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise Malformed(f"ip identifier {value!r} is not an IPv4 or IPv6 address") from None
    if str(addr) != value:
        raise Malformed(f"ip identifier {value!r} is not in canonical form ({addr})")
    return value


# draft-ietf-acme-device-attest-09 §3.1 and §4.1 (ABNF, RFC 5234). The identifier part is
# 1*(%x00-2E / %x30-FF) over the octets of the UTF-8 string: any text without "/" (no
# multi-octet UTF-8 sequence contains 0x2F). The OID part is dotted decimal without leading
# zeros, the second arc below 40 under the arcs 0 and 1.
_PERMANENT_RULE = 'permanent-identifier-value = device-identifier-value ["/" assigner-value]'
_HARDWARE_RULE = 'hardware-module-value = hw-serial-num-value "/" hw-type-value'
_OID_RULE = 'first-and-second-components *("." component)'
_COMPONENT = r"(?:0|[1-9][0-9]*)"
_DRAFT_OID = re.compile(rf"(?:[01]\.[1-3]?[0-9]|2\.{_COMPONENT})(?:\.{_COMPONENT})*")


def _canonical_device(value: str, itype: IdentifierType) -> str:
    """Check a device identifier against the draft's ABNF, then acmeda's policy; never rewrite it.

    The draft forbids any normalisation (§3.2, §4.2: octet-for-octet), so the value is returned
    as given. Syntax errors are `malformed` (draft §3.1, §4.1); values the syntax allows but
    acmeda will not issue for (control characters, over-long values) are `rejectedIdentifier`;
    the length is checked first so that no detail echoes a huge value.
    """
    rule = _PERMANENT_RULE if itype is IdentifierType.PERMANENT_IDENTIFIER else _HARDWARE_RULE
    try:
        octets = value.encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed(f"{itype.value} value is not a valid UTF-8 string (draft-ietf-acme-device-attest §3.1, §4.1)") from None
    if len(octets) > _MAX_DEVICE_VALUE:
        raise RejectedIdentifier(f"{itype.value} value is longer than {_MAX_DEVICE_VALUE} octets")
    first, slash, oid = value.partition("/")
    if not first:
        part = "device-identifier-value" if itype is IdentifierType.PERMANENT_IDENTIFIER else "hw-serial-num-value"
        raise Malformed(f"{itype.value} {value!r} does not match {rule}: {part} must have at least one character")
    if itype is IdentifierType.HARDWARE_MODULE and not slash:
        raise Malformed(f"{itype.value} {value!r} does not match {rule}: the \"/\" and hw-type-value are required")
    if slash and not _DRAFT_OID.fullmatch(oid):
        part = "assigner-value" if itype is IdentifierType.PERMANENT_IDENTIFIER else "hw-type-value"
        raise Malformed(f"{itype.value} {value!r} does not match {rule}: {part} {oid!r} does not match {_OID_RULE}")
    if any(unicodedata.category(c) == "Cc" for c in value):
        # The ABNF admits %x00-1F; acmeda does not: NUL cannot be stored in PostgreSQL text,
        # and control characters in serial numbers only ever serve log or display injection.
        raise RejectedIdentifier(f"{itype.value} {value!r} contains control characters; acmeda does not issue for it")
    return value


def _canonical_permanent_identifier(value: str) -> str:
    return _canonical_device(value, IdentifierType.PERMANENT_IDENTIFIER)


def _canonical_hardware_module(value: str) -> str:
    return _canonical_device(value, IdentifierType.HARDWARE_MODULE)


_CANONICALISERS = {
    IdentifierType.DNS: _canonical_dns,
    IdentifierType.IP: _canonical_ip,
    IdentifierType.PERMANENT_IDENTIFIER: _canonical_permanent_identifier,
    IdentifierType.HARDWARE_MODULE: _canonical_hardware_module,
}
