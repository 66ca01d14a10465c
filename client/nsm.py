"""The Nitro Secure Module (NSM) of an AWS Nitro enclave, `/dev/nsm`: DescribeNSM and Attestation.

The protocol, from aws-nitro-enclaves-nsm-api (src/api/mod.rs, src/driver/mod.rs) and Linux
include/uapi/linux/nsm.h:

- A request is the CBOR encoding of a Rust (serde) enum, externally tagged: a unit variant
  is its name as a text string (`"DescribeNSM"`), a struct variant a one-entry map,
  `{"Attestation": {"user_data": bstr / null, "nonce": bstr / null, "public_key": bstr / null}}`.
  At most NSM_REQUEST_MAX_SIZE octets.
- The response is encoded the same way: `{"Attestation": {"document": bstr}}` (the COSE_Sign1
  attestation document), `{"DescribeNSM": {"module_id": tstr, "digest": tstr, ...}}`, or
  `{"Error": "<ErrorCode>"}` (InvalidArgument, InputTooLarge, InternalError, ...).
- Both travel through one ioctl on the device, NSM_IOCTL_RAW = _IOWR(0x0A, 0, struct nsm_raw),
  whose argument is two iovecs {u64 addr; u64 len}: the request, and a response buffer of
  NSM_RESPONSE_MAX_SIZE octets. The driver fills the buffer and writes the response's
  length into the second iovec.

`Nsm` encodes requests and decodes responses; the ioctl is its `Transport` (CBOR request in,
CBOR response out), so tests replace it with a recorded document. No test here can reach an
NSM: only code running inside an enclave can.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from dataclasses import dataclass
from typing import Any, Callable

import cbor2

DEVICE = "/dev/nsm"
NSM_MAGIC = 0x0A
NSM_REQUEST_MAX_SIZE = 0x1000
NSM_RESPONSE_MAX_SIZE = 0x3000

Transport = Callable[[bytes], bytes]  # CBOR request -> CBOR response


class NsmError(Exception):
    """The NSM could not be reached or refused the request: a message for the user."""


class _Iovec(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _NsmRaw(ctypes.Structure):
    _fields_ = [("request", _Iovec), ("response", _Iovec)]


def _iowr(kind: int, number: int, size: int) -> int:
    """Linux's _IOWR (asm-generic/ioctl.h, as on x86-64 and arm64): dir 3 << 30 | size << 16 | type << 8 | nr."""
    return (3 << 30) | (size << 16) | (kind << 8) | number


NSM_IOCTL_RAW = _iowr(NSM_MAGIC, 0, ctypes.sizeof(_NsmRaw))  # 0xC0200A00


def ioctl_transport(path: str = DEVICE) -> Transport:
    """The real transport: one NSM_IOCTL_RAW on `path` per request."""

    def send(request: bytes) -> bytes:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise NsmError(f"cannot open the Nitro Secure Module {path}: {exc.strerror} "
                           "(acmeda device enroll --cloud aws-nitro runs inside a Nitro enclave)") from None
        try:
            request_buffer = ctypes.create_string_buffer(request, len(request))
            response_buffer = ctypes.create_string_buffer(NSM_RESPONSE_MAX_SIZE)
            raw = _NsmRaw(_Iovec(ctypes.addressof(request_buffer), len(request)),
                          _Iovec(ctypes.addressof(response_buffer), NSM_RESPONSE_MAX_SIZE))
            fcntl.ioctl(fd, NSM_IOCTL_RAW, raw)  # the driver updates raw.response.len in place
        except OSError as exc:
            raise NsmError(f"the NSM request on {path} failed: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        return response_buffer.raw[:min(raw.response.len, NSM_RESPONSE_MAX_SIZE)]

    return send


@dataclass(frozen=True)
class NsmDescription:
    """What DescribeNSM says of the module; module_id is "<parent instance id>-enc<enclave id>"."""

    module_id: str
    digest: str
    version: tuple[int, int, int]


class Nsm:
    """The enclave's NSM through `transport` (default: the ioctl on /dev/nsm)."""

    def __init__(self, transport: Transport | None = None) -> None:
        self._transport = transport or ioctl_transport()

    def describe(self) -> NsmDescription:
        body = self._call("DescribeNSM", "DescribeNSM")
        try:
            version = (int(body["version_major"]), int(body["version_minor"]), int(body["version_patch"]))
            module_id, digest = body["module_id"], body["digest"]
            if not isinstance(module_id, str) or not isinstance(digest, str):
                raise TypeError("module_id and digest are not text")
        except (KeyError, TypeError, ValueError) as exc:
            raise NsmError(f"the NSM's DescribeNSM answer is malformed ({type(exc).__name__}: {exc})") from None
        return NsmDescription(module_id, digest, version)

    def attestation(self, *, nonce: bytes | None, public_key: bytes | None, user_data: bytes | None = None) -> bytes:
        """The signed attestation document (COSE_Sign1 bytes, exactly as the NSM returned them)."""
        request = {"Attestation": {"user_data": user_data, "nonce": nonce, "public_key": public_key}}
        body = self._call(request, "Attestation")
        document = body.get("document") if isinstance(body, dict) else None
        if not isinstance(document, bytes) or not document:
            raise NsmError("the NSM's Attestation answer has no document")
        return document

    def _call(self, request: Any, variant: str) -> Any:
        encoded = cbor2.dumps(request)
        if len(encoded) > NSM_REQUEST_MAX_SIZE:
            raise NsmError(f"the {variant} request is {len(encoded)} octets; the NSM takes at most {NSM_REQUEST_MAX_SIZE}")
        try:
            response = cbor2.loads(self._transport(encoded))
        except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
            raise NsmError(f"the NSM's answer to {variant} is not CBOR: {exc}") from None
        if isinstance(response, dict) and set(response) == {"Error"}:
            raise NsmError(f"the NSM refused {variant}: {response['Error']}")
        if not isinstance(response, dict) or set(response) != {variant}:
            raise NsmError(f"the NSM answered {variant} with {_describe(response)}, not a {variant} response")
        return response[variant]


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"a map of {sorted(map(str, value))}"
    return f"a {type(value).__name__}"
