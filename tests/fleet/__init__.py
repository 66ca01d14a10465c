"""Test fleets: synthetic devices for every attestation format, one module per format.

Each module builds a small vendor-like PKI with `cryptography` (roots, intermediates and
leaves carrying the vendor's extensions) and produces attestation statements bound to a
given `attestation.context.Binding`, with knobs that break every field the verifier
checks. It returns the attested private key too, so the same device can finish a full
ACME flow (CSR at finalize). Real vendor evidence lives in `../shared/vectors`; the fleet
covers what real samples cannot: signatures over our own challenges and every rejection.
"""

from __future__ import annotations

from typing import Any, Mapping


def with_changes(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied: a value replaces the member, None removes it (a knob's way
    to break a claim or field by leaving it out)."""
    merged = dict(base)
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged
