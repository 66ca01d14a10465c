"""acmeda's attestation verifiers: a pure library (no I/O, no HTTP, no ACME).

`verify_attestation(att_obj, ctx)` decodes the CBOR attestation object `{fmt, attStmt}`
and dispatches to the format's verifier, returning `Evidence` or raising an
`AttestationError` that names the failed check.

The attestation object is the WebAuthn one (WebAuthn §6.5.4) as draft-ietf-acme-device-attest-09
§5 modifies it: `fmt` and `attStmt` are required; `authData` "SHOULD be omitted", so it is
accepted when present (a byte string) and otherwise ignored; nothing else may appear. The
decoding is strict: one CBOR item and no trailing bytes, no tags, no duplicate map keys,
map keys only text strings, byte strings or integers (not `true`, `false`, `null` or floats),
no `undefined` or simple values other than `true`, `false` and `null` as values, bounded depth.
Callers that must choose the binding by format (the ACME validator) use the three steps
`decode_attestation_object`, `select_format` and `verify_statement` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping


from attestation.context import VerificationContext
from attestation.errors import AttestationError, MalformedStatement, UnsupportedFormat, catch_builtins
from attestation.evidence import Evidence
from attestation.strict import strict_cbor

if TYPE_CHECKING:  # the registry imports every format; this module needs only the type
    from attestation.format import Format

__all__ = [
    "AttestationError",
    "AttestationObject",
    "MAX_ATTESTATION_OBJECT",
    "decode_attestation_object",
    "select_format",
    "verify_attestation",
    "verify_statement",
]

MAX_ATTESTATION_OBJECT = 160 * 1024  # octets: a statement with its chain is a few KiB; a TPM event log tens
_MAX_DEPTH = 16  # attStmt nests at most a few levels (a map of arrays of byte strings)
_REQUIRED_KEYS = frozenset({"fmt", "attStmt"})
_OPTIONAL_KEYS = frozenset({"authData"})
_PLAIN_SCALARS = (str, bytes, int, float, bool, type(None))
_KEY_TYPES = (str, bytes, int)  # and not bool, an int in Python
_CHECK = "attestation-object"  # the `check` name of every decoding failure here


@dataclass(frozen=True)
class AttestationObject:
    """A decoded attestation object: the format name, its statement, and the ignored authData."""

    fmt: str
    att_stmt: Mapping[str, Any]
    auth_data: bytes | None = None


def _decode_cbor(data: bytes) -> Any:
    """Exactly one CBOR data item, strictly; any failure is MalformedStatement."""
    item = strict_cbor(data, "attestation object", check=_CHECK, max_depth=_MAX_DEPTH)
    _check_plain(item, 0)
    return item


def _check_plain(item: Any, depth: int) -> None:
    """Only the CBOR major types a statement uses: no undefined, simple values or tag leftovers."""
    if depth > _MAX_DEPTH:
        raise MalformedStatement("attestation object nests too deeply", check=_CHECK)
    if isinstance(item, dict):
        for key, value in item.items():
            if not isinstance(key, _KEY_TYPES) or isinstance(key, bool):
                shown = repr(key) if isinstance(key, (bool, float, type(None))) else f"of type {type(key).__name__}"
                raise MalformedStatement(f"attestation object has a map key {shown}: map keys must be text strings, "
                                         "byte strings or integers", check=_CHECK)
            _check_plain(value, depth + 1)
    elif isinstance(item, list):
        for value in item:
            _check_plain(value, depth + 1)
    elif not isinstance(item, _PLAIN_SCALARS):
        raise MalformedStatement(f"attestation object contains a CBOR {type(item).__name__}, which is not allowed",
                                 check=_CHECK)


def decode_attestation_object(att_obj: bytes) -> AttestationObject:
    """Decode `{fmt: tstr, attStmt: map, ? authData: bstr}` strictly (draft-09 §5)."""
    if not isinstance(att_obj, (bytes, bytearray)):
        raise MalformedStatement("attestation object is not a byte string", check=_CHECK)
    if len(att_obj) > MAX_ATTESTATION_OBJECT:
        raise MalformedStatement(f"attestation object is larger than {MAX_ATTESTATION_OBJECT} octets", check=_CHECK)
    item = _decode_cbor(bytes(att_obj))
    if not isinstance(item, dict):
        raise MalformedStatement(f"attestation object is a CBOR {type(item).__name__}, not a map", check=_CHECK)
    missing = sorted(_REQUIRED_KEYS - item.keys())
    if missing:
        raise MalformedStatement(f"attestation object lacks {', '.join(missing)}", check=_CHECK)
    extra = sorted(repr(k) for k in item.keys() - _REQUIRED_KEYS - _OPTIONAL_KEYS)
    if extra:
        raise MalformedStatement(f"attestation object has unexpected keys {', '.join(extra)}", check=_CHECK)
    fmt, att_stmt, auth_data = item["fmt"], item["attStmt"], item.get("authData")
    if not isinstance(fmt, str):
        raise MalformedStatement("attestation object fmt is not a text string", check=_CHECK)
    if not isinstance(att_stmt, dict):
        raise MalformedStatement("attestation object attStmt is not a map", check=_CHECK)
    if "authData" in item and not isinstance(auth_data, bytes):  # present means a byte string, not null
        raise MalformedStatement("attestation object authData is not a byte string", check=_CHECK)
    return AttestationObject(fmt=fmt, att_stmt=att_stmt, auth_data=auth_data)


def select_format(fmt: str, formats: Mapping[str, Format]) -> Format:
    """The enabled format named `fmt`; unknown and disabled formats are alike: UnsupportedFormat."""
    found = formats.get(fmt)
    if found is None:
        enabled = ", ".join(sorted(formats)) or "none"
        raise UnsupportedFormat(f"attestation format {fmt!r} is not enabled on this server; enabled formats: {enabled}")
    return found


def verify_statement(fmt: Format, att_stmt: Mapping[str, Any], ctx: VerificationContext) -> Evidence:
    """Run one format's verifier. A parser crash inside it (KeyError, ValueError, …) on
    untrusted bytes becomes MalformedStatement, so only AttestationError leaves the library."""
    evidence = catch_builtins(fmt.verify)(att_stmt, ctx)
    if not isinstance(evidence, Evidence):
        raise TypeError(f"format {fmt.name!r} returned {type(evidence).__name__}, not Evidence")
    return evidence


def verify_attestation(att_obj: bytes, ctx: VerificationContext, formats: Mapping[str, Format]) -> Evidence:
    """Decode the attestation object, pick its format among `formats`, verify it against `ctx`."""
    obj = decode_attestation_object(att_obj)
    return verify_statement(select_format(obj.fmt, formats), obj.att_stmt, ctx)
