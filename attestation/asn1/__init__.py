"""asn1crypto schemas of vendor attestation structures, one module per vendor.

Each module declares the structure as `asn1crypto.core` classes with a docstring citing
the specification it follows, and one `parse_*` function that is the parse boundary:
untrusted bytes in, a fully parsed value or `MalformedStatement` out. No DER is sliced
by hand anywhere in the library.
"""
