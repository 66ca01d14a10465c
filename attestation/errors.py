"""Typed attestation errors: every failure names the check that failed.

`attestation/` raises only these; it knows nothing of ACME. The CA maps any
`AttestationError` to a `badAttestationStatement` problem whose detail is `str(error)`.
"""

from __future__ import annotations

import functools
from typing import Callable, ParamSpec, TypeVar

from cbor2 import CBORError  # not a ValueError in cbor2 6


class AttestationError(Exception):
    """Base class. `check` is a short stable name of the failed check (for logs, metrics, tests)."""

    check: str = "attestation"

    def __init__(self, detail: str, *, check: str | None = None) -> None:
        super().__init__(detail)
        if check is not None:
            self.check = check


class MalformedStatement(AttestationError):
    """The bytes do not parse as the format says (bad CBOR, DER, TPM structure, missing field)."""

    check = "malformed"


class UnsupportedFormat(AttestationError):
    """The `fmt` is unknown or disabled, or a key type / algorithm is not supported."""

    check = "unsupported"


class UntrustedChain(AttestationError):
    """The certificate chain does not lead to a configured root, or a link's signature is bad."""

    check = "chain-untrusted"


class ChainExpired(UntrustedChain):
    """A certificate in the chain is outside its validity period at `now`."""

    check = "chain-expired"


class CertificateRevoked(UntrustedChain):
    """A certificate in the chain is listed as revoked by its vendor."""

    check = "chain-revoked"


class ChallengeMismatch(AttestationError):
    """The statement is not bound to this challenge (nonce, extraData, attestationChallenge)."""

    check = "challenge-mismatch"


class InvalidSignature(AttestationError):
    """`sig` does not verify with the attested (or attestation) key."""

    check = "signature-invalid"


class IdentifierMissing(AttestationError):
    """The evidence does not carry the device identifier the format requires."""

    check = "identifier-missing"


class RequirementFailed(AttestationError):
    """A structural requirement of the format is not met (cert profile, TPM attributes, levels)."""

    check = "requirement-failed"


P = ParamSpec("P")
R = TypeVar("R")


def catch_builtins(func: Callable[P, R]) -> Callable[P, R]:
    """Turn parser crashes on untrusted bytes (KeyError, ValueError, …) into MalformedStatement.

    Wrap each parse boundary with this so that nothing but an AttestationError leaves the library.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except AttestationError:
            raise
        except (KeyError, IndexError, ValueError, TypeError, AttributeError, OverflowError, EOFError,
                RecursionError, CBORError) as exc:
            raise MalformedStatement(f"{func.__name__}: {type(exc).__name__}: {exc}") from exc

    return wrapper
