"""The TPM 2.0 wire encoding: big-endian integers and TPM2B sized buffers (Part 2 §10.4.1).

`Reader` reads one structure field by field and names the field in every error; the pack
functions are its inverse, used by `to_bytes()`. `LittleEndianReader` reads the TCG event
log, whose integers are little-endian (UEFI byte order, TCG PC Client PFP §10.2).
"""

from __future__ import annotations

import struct

from attestation.errors import MalformedStatement, UnsupportedFormat
from attestation.tpm.constants import DIGEST_SIZE, alg_name

_U8, _U16, _U32, _U64 = (struct.Struct(f">{c}") for c in "BHIQ")
_LE16, _LE32, _LE64 = (struct.Struct(f"<{c}") for c in "HIQ")


class Reader:
    """A cursor over the bytes of one TPM structure; every read names the field it reads."""

    __slots__ = ("_data", "_pos", "what", "check")

    def __init__(self, data: bytes, what: str, check: str) -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise MalformedStatement(f"{what} is not a byte string", check=check)
        self._data, self._pos, self.what, self.check = bytes(data), 0, what, check

    def fail(self, detail: str, check: str | None = None) -> MalformedStatement:
        return MalformedStatement(f"{self.what}: {detail}", check=check or self.check)

    def unsupported(self, detail: str, check: str | None = None) -> UnsupportedFormat:
        return UnsupportedFormat(f"{self.what}: {detail}", check=check or self.check)

    def _take(self, size: int, field: str) -> int:
        start = self._pos
        if start + size > len(self._data):
            raise self.fail(f"{field} is truncated at offset {start} ({size} bytes needed, {len(self._data) - start} left)")
        self._pos = start + size
        return start

    def _int(self, fmt: struct.Struct, field: str) -> int:
        return fmt.unpack_from(self._data, self._take(fmt.size, field))[0]

    def u8(self, field: str) -> int:
        return self._int(_U8, field)

    def u16(self, field: str) -> int:
        return self._int(_U16, field)

    def u32(self, field: str) -> int:
        return self._int(_U32, field)

    def u64(self, field: str) -> int:
        return self._int(_U64, field)

    def sized(self, field: str, max_size: int) -> bytes:
        """A TPM2B: UINT16 size, then that many bytes (Part 2 §10.4.1)."""
        size = self.u16(f"{field}.size")
        if size > max_size:
            raise self.fail(f"{field}.size {size} exceeds the maximum of {max_size}")
        start = self._take(size, field)
        return self._data[start : start + size]

    def raw(self, size: int, field: str) -> bytes:
        """`size` bytes as they are (a fixed-size array, or a buffer whose size came earlier)."""
        start = self._take(size, field)
        return self._data[start : start + size]

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    @property
    def offset(self) -> int:
        return self._pos

    def hash_alg(self, field: str) -> int:
        """A TPMI_ALG_HASH (Part 2 §9.27), without TPM_ALG_NULL."""
        value = self.u16(field)
        if value in DIGEST_SIZE:
            return value
        raise self.unsupported(f"{field} {alg_name(value)} is not a supported hash algorithm")

    def finish(self) -> None:
        left = len(self._data) - self._pos
        if left:
            raise self.fail(f"{left} trailing byte(s) after the structure")


class LittleEndianReader(Reader):
    """A `Reader` whose UINT16/32/64 are little-endian: the TCG event log (PFP §10.2)."""

    __slots__ = ()

    def u16(self, field: str) -> int:
        return self._int(_LE16, field)

    def u32(self, field: str) -> int:
        return self._int(_LE32, field)

    def u64(self, field: str) -> int:
        return self._int(_LE64, field)


def u8(value: int) -> bytes:
    return _U8.pack(value)


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def sized(buffer: bytes) -> bytes:
    """A TPM2B: the UINT16 size of `buffer`, then `buffer`."""
    return _U16.pack(len(buffer)) + buffer


def le16(value: int) -> bytes:
    return _LE16.pack(value)


def le32(value: int) -> bytes:
    return _LE32.pack(value)


def le64(value: int) -> bytes:
    return _LE64.pack(value)
