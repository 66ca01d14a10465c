"""acmeda's attestation verifiers: a pure library (no I/O, no HTTP, no ACME).

`verify_attestation(att_obj, ctx)` decodes the CBOR attestation object `{fmt, attStmt}`
and dispatches to the format's verifier, returning `Evidence` or raising an
`AttestationError` that names the failed check.
"""
