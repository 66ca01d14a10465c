"""ACME identifiers: the typed `Identifier` value and the syntax check of each identifier type.

Types: `dns` (RFC 8555), `ip` (RFC 8738), and the device identifiers of
draft-ietf-acme-device-attest: `permanent-identifier` and `hardware-module`.
Values are checked and brought to canonical form at the edge, so every later comparison
is an exact octet comparison.
"""

from __future__ import annotations

import ipaddress
import re
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


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
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
        if not _LABEL.match(label):
            raise Malformed(f"dns identifier {value!r} has an invalid label {label!r}")
    if labels[-1].isdigit():
        raise Malformed(f"dns identifier {value!r} looks like an IP address; use the ip type")
    return name


def _canonical_ip(value: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise Malformed(f"ip identifier {value!r} is not an IPv4 or IPv6 address") from None
    if str(addr) != value:
        raise Malformed(f"ip identifier {value!r} is not in canonical form ({addr})")
    return value


def _canonical_device(value: str) -> str:
    if not value:
        raise Malformed("device identifier value must not be empty")
    if len(value.encode()) > _MAX_DEVICE_VALUE:
        raise Malformed(f"device identifier value is longer than {_MAX_DEVICE_VALUE} octets")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise Malformed("device identifier value contains whitespace or control characters")
    return value


_CANONICALISERS = {
    IdentifierType.DNS: _canonical_dns,
    IdentifierType.IP: _canonical_ip,
    IdentifierType.PERMANENT_IDENTIFIER: _canonical_device,
    IdentifierType.HARDWARE_MODULE: _canonical_device,
}
