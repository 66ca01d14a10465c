"""Strict decoders for the untrusted CBOR and JSON the formats read.

One place, so that every format refuses the same things: CBOR with any tag (1 dates, 2
bignums, 28/29 shared references that build cyclic objects, 258 sets), duplicate map keys,
deep nesting or bytes after the one item; JSON with a member twice (which of the two would a
verifier have checked?) or NaN / Infinity. Callers turn `ValueError` from `strict_json` and
the `MalformedStatement` from `strict_cbor` into their own check names.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping as MappingABC
from typing import Any, Iterator

import cbor2

from attestation.errors import MalformedStatement


class _RejectAllTags(MappingABC):
    """cbor2 `semantic_decoders` that refuse every tag."""

    def __getitem__(self, tag: int):
        def reject(*_: Any) -> Any:
            raise cbor2.CBORDecodeError(f"CBOR tag {tag} is not allowed here")

        return reject

    def get(self, tag: int, default: Any = None):  # cbor2 6.2 asks with [] (checked); get() for safety
        return self[tag]

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _reject_tag(*args: Any) -> Any:
    """Backstop `tag_hook` (cbor2 6 passes (tag, immutable), cbor2 5 (decoder, tag))."""
    tags = [a.tag for a in args if isinstance(a, cbor2.CBORTag)]
    raise cbor2.CBORDecodeError(f"CBOR tag {tags[0] if tags else '?'} is not allowed here")


def strict_cbor(data: bytes, what: str, *, check: str, max_depth: int) -> Any:
    """Exactly one CBOR item from `data`, strictly; any failure is MalformedStatement(check).

    Integer map keys are allowed: COSE headers and the `pcrs` of a TPM quote use them. (cbor2's
    strict_hashable_types would refuse them too, not only array and map keys; callers that
    want plain keys check the decoded item, as `attestation._check_plain` does.)"""
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(
            stream,
            semantic_decoders=_RejectAllTags(),
            tag_hook=_reject_tag,
            max_depth=max_depth,
            allow_duplicate_keys=False,
        ).decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError, MemoryError, EOFError) as exc:
        reason = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
        raise MalformedStatement(f"{what} is not valid CBOR: {reason}", check=check) from exc
    if stream.tell() != len(data):
        raise MalformedStatement(f"{what} has {len(data) - stream.tell()} trailing bytes after its CBOR item", check=check)
    return item


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"member {key!r} appears more than once")
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str | bytes) -> Any:
    """`json.loads`, refusing duplicate members, NaN / Infinity and deep nesting (ValueError)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:  # the decoder's answer to `[[[[…`; callers catch only ValueError
        raise ValueError("JSON is nested too deeply") from None
