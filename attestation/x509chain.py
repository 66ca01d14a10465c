"""The one certificate-chain validator of the attestation library: time-aware and fail-closed.

Attestation chains do not follow the Web PKI profile that `cryptography.x509.verification`
enforces (Android leaves valid 1970–2048 without SAN, vendor certificates with explicit
NULL parameters, PrintableString SANs or BER that `cryptography` refuses to load), so this
walker parses with asn1crypto and checks each link itself: issuer name, signature by the
issuer's key, validity at `now`, CA flag, key usage and path length of every issuer. Only
configured roots anchor a path; a certificate is never trusted for arriving in the chain.

Parsing is lazy: only the fields the walker reads are decoded (so an odd extension value
elsewhere does not sink a valid chain), and parsed certificates are cached by their DER,
so roots and vendor intermediates are parsed once per process.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from threading import Lock
from typing import Sequence

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from attestation.errors import CertificateRevoked, ChainExpired, MalformedStatement, UnsupportedFormat, UntrustedChain

MAX_CHAIN_LENGTH = 8
# Bounds on a subject or issuer Name, checked before anything decodes or normalises it: RFC
# 5280 §7.1 comparison runs LDAP StringPrep over every attribute, so an issuer of thousands of
# RDNs in one statement would cost seconds of CPU. Real attestation certificates carry at
# most 6 attributes in under 200 bytes (every chain and root under ../shared/vectors).
MAX_NAME_ATTRIBUTES = 64
MAX_NAME_BYTES = 4096
_CACHE_SIZE = 512

_HASHES = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_CURVES = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
}


@dataclass(frozen=True)
class ChainPolicy:
    """Per-format relaxations, each one a documented vendor quirk; the defaults are strict."""

    require_ca_flag: bool = True  # every issuer must say cA=TRUE in basicConstraints
    check_validity: bool = True
    # Android's attestation-key certificates (Sony, some KeyMint) sign the leaf while saying
    # cA=FALSE / digitalSignature: relax the issuer checks for the leaf's direct issuer only.
    leaf_issuer_may_be_end_entity: bool = False


_cache: "OrderedDict[bytes, asn1_x509.Certificate]" = OrderedDict()
_cache_lock = Lock()


def parse_certificate(der: bytes, what: str = "certificate") -> asn1_x509.Certificate:
    """Parse DER (or the BER some vendors emit) into an asn1crypto Certificate.

    The fields the walker decodes (validity, signature, basicConstraints, keyUsage) are
    decoded now, so malformed ones fail here; other extension values stay undecoded. Names
    are compared by their encoding first and decoded only when a format reads them or two
    encodings differ: decoding a name costs more than the rest of a leaf, and a malformed one
    still fails, as MalformedStatement at the format's `catch_builtins` boundary. Only the size
    and attribute count of subject and issuer are checked here (`check_name_bounds`).
    """
    if not isinstance(der, (bytes, bytearray)):
        raise MalformedStatement(f"{what} is not a byte string")
    der = bytes(der)
    with _cache_lock:
        cached = _cache.get(der)
        if cached is not None:
            _cache.move_to_end(der)
            return cached
    try:
        cert = asn1_x509.Certificate.load(der, strict=True)
        tbs = cert["tbs_certificate"]
        for field in ("subject", "issuer"):
            check_name_bounds(tbs[field], f"{what} {field}")
        tbs["validity"].native
        cert["signature_algorithm"].native, cert["signature_value"].native
        _extension_value(cert, "2.5.29.19"), _extension_value(cert, "2.5.29.15")
    except MalformedStatement:
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError and friends
        raise MalformedStatement(f"{what} is not a valid X.509 certificate: {exc}") from exc
    with _cache_lock:
        _cache[der] = cert
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return cert


def check_name_bounds(name: asn1_x509.Name, what: str = "certificate name") -> None:
    """Refuse a Name over MAX_NAME_BYTES encoded or with more than MAX_NAME_ATTRIBUTES attributes.

    Reads only the encoding's length and the RDN headers, never an attribute value.
    """
    size = len(name.chosen.contents or b"")
    if size > MAX_NAME_BYTES:
        raise MalformedStatement(f"{what} Name is {size} bytes, more than the {MAX_NAME_BYTES} allowed")
    attributes = 0
    for rdn in name.chosen:
        attributes += len(rdn)
        if attributes > MAX_NAME_ATTRIBUTES:
            raise MalformedStatement(f"{what} Name has more than {MAX_NAME_ATTRIBUTES} attributes")


def _extension_value(cert: asn1_x509.Certificate, dotted: str):
    """The parsed value of one extension, or None; decodes nothing else."""
    extensions = cert["tbs_certificate"]["extensions"]
    for extension in extensions:
        if extension["extn_id"].dotted == dotted:
            return extension["extn_value"].parsed
    return None


def extension_values(cert: asn1_x509.Certificate, what: str = "certificate") -> dict[str, bytes]:
    """extnValue contents of every extension by dotted OID; RFC 5280 §4.2 forbids duplicates."""
    values: dict[str, bytes] = {}
    for ext in cert["tbs_certificate"]["extensions"]:
        oid = ext["extn_id"].dotted
        if oid in values:
            raise MalformedStatement(f"{what} carries extension {oid} more than once")
        values[oid] = ext["extn_value"].contents
    return values


def check_revocation(path: Sequence[asn1_x509.Certificate], check, fmt: str) -> None:
    """Refuse a path with a certificate the vendor's status list names (`check`: serial → reason or None)."""
    if check is None:
        return
    for cert in path:
        reason = check(cert.serial_number)
        if reason:
            raise CertificateRevoked(f"certificate serial {cert.serial_number:x} ({_describe(cert)}) is revoked "
                                     f"in the {fmt} status list: {reason}")


def public_key_of(spki: asn1_keys.PublicKeyInfo):
    """A `cryptography` public key from an asn1crypto SubjectPublicKeyInfo, tolerant of quirks."""
    try:
        algo = spki["algorithm"]["algorithm"].native
    except Exception as exc:
        raise MalformedStatement(f"public key algorithm does not parse: {exc}") from exc
    try:
        if algo == "rsa":
            numbers = spki["public_key"].parsed
            return rsa.RSAPublicNumbers(numbers["public_exponent"].native, numbers["modulus"].native).public_key()
        if algo == "ec":
            params = spki["algorithm"]["parameters"]
            if params.name != "named":
                raise UnsupportedFormat("EC public key with explicit curve parameters is not supported")
            curve = _CURVES.get(params.chosen.native)
            if curve is None:
                raise UnsupportedFormat(f"EC curve {params.chosen.native} is not supported")
            return ec.EllipticCurvePublicKey.from_encoded_point(curve(), spki["public_key"].native)
        return serialization.load_der_public_key(spki.dump())
    except (ValueError, TypeError) as exc:
        raise MalformedStatement(f"public key ({algo}) does not load: {exc}") from exc
    except UnsupportedFormat:
        raise
    except Exception as exc:  # cryptography's UnsupportedAlgorithm for unknown key types
        raise UnsupportedFormat(f"public key algorithm {algo} is not supported: {exc}") from exc


def verify_signature(public_key, signature: bytes, data: bytes, algorithm: asn1_x509.SignedDigestAlgorithm) -> None:
    """Verify one X.509-style signature; raise UntrustedChain naming the mismatch."""
    try:
        sig_algo, hash_name = algorithm.signature_algo, algorithm.hash_algo
    except (ValueError, KeyError) as exc:
        raise UnsupportedFormat(f"signature algorithm {algorithm['algorithm'].dotted} is not supported") from exc
    try:
        if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public_key.verify(signature, data)
            return
        hash_cls = _HASHES.get(hash_name)
        if hash_cls is None:
            raise UnsupportedFormat(f"signature hash {hash_name} is not supported")
        if isinstance(public_key, rsa.RSAPublicKey):
            if sig_algo == "rsassa_pss":
                params = algorithm["parameters"]
                pad = padding.PSS(padding.MGF1(hash_cls()), params["salt_length"].native)
            else:
                pad = padding.PKCS1v15()
            public_key.verify(signature, data, pad, hash_cls())
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hash_cls()))
        else:
            raise UnsupportedFormat(f"issuer key type {type(public_key).__name__} is not supported")
    except _CryptoInvalidSignature:
        raise UntrustedChain("certificate signature does not verify with its issuer's key") from None


def _name_matches(issuer: asn1_x509.Name, subject: asn1_x509.Name) -> bool:
    if issuer.contents == subject.contents:
        return True
    issuer_key, subject_key = _name_key(issuer), _name_key(subject)
    if issuer_key is not None and subject_key is not None:
        return issuer_key == subject_key  # the RFC 5280 §7.1 comparison, normalised once per name
    try:
        return issuer == subject
    except Exception:
        return False


def _describe_issuer(cert: asn1_x509.Certificate) -> str:
    try:
        return cert.issuer.human_friendly
    except Exception:
        return "(unprintable issuer)"


def _describe(cert: asn1_x509.Certificate) -> str:
    try:
        return cert.subject.human_friendly or "(empty subject)"
    except Exception:
        return "(unprintable subject)"


_verified_links: "OrderedDict[tuple[bytes, bytes], bool]" = OrderedDict()


def _signed_by(child: asn1_x509.Certificate, issuer: asn1_x509.Certificate) -> bool:
    # A link that verified once verifies again: vendor intermediates recur in every statement,
    # so their signatures are checked once per process (only successes are remembered).
    link = (child.contents, issuer.contents)
    if link in _verified_links:
        return True
    if not _name_matches(child["tbs_certificate"]["issuer"], issuer["tbs_certificate"]["subject"]):
        return False
    try:
        verify_signature(
            public_key_of(issuer["tbs_certificate"]["subject_public_key_info"]),
            child["signature_value"].native,
            child["tbs_certificate"].dump(),
            child["signature_algorithm"],
        )
    except (UntrustedChain, MalformedStatement):
        return False  # not this issuer; an algorithm we cannot check (UnsupportedFormat) propagates
    with _cache_lock:
        _verified_links[link] = True
        if len(_verified_links) > _CACHE_SIZE:
            _verified_links.popitem(last=False)
    return True


def _valid_at(cert: asn1_x509.Certificate, now: datetime) -> bool:
    validity = cert["tbs_certificate"]["validity"]
    return validity["not_before"].native <= now <= validity["not_after"].native


def _check_validity(cert: asn1_x509.Certificate, now: datetime, role: str) -> None:
    validity = cert["tbs_certificate"]["validity"]
    not_before, not_after = validity["not_before"].native, validity["not_after"].native
    if now < not_before:
        raise ChainExpired(f"{role} certificate {_describe(cert)!r} is not yet valid (notBefore {not_before:%Y-%m-%dT%H:%M:%SZ})")
    if now > not_after:
        raise ChainExpired(f"{role} certificate {_describe(cert)!r} expired at {not_after:%Y-%m-%dT%H:%M:%SZ}")


def _check_issuer_constraints(issuer: asn1_x509.Certificate, below: int, policy: ChainPolicy) -> None:
    constraints = _extension_value(issuer, "2.5.29.19")
    if policy.require_ca_flag and (constraints is None or not constraints["ca"].native):
        raise UntrustedChain(f"issuer {_describe(issuer)!r} is not a CA (basicConstraints cA is not TRUE)")
    if constraints is not None and constraints["path_len_constraint"].native is not None:
        if below > constraints["path_len_constraint"].native:
            raise UntrustedChain(f"issuer {_describe(issuer)!r} path length constraint exceeded")
    key_usage = _extension_value(issuer, "2.5.29.15")
    if key_usage is not None and "key_cert_sign" not in key_usage.native:
        raise UntrustedChain(f"issuer {_describe(issuer)!r} may not sign certificates (keyUsage)")


def _prefer_valid(candidates: list[asn1_x509.Certificate], now: datetime) -> list[asn1_x509.Certificate]:
    """Re-issued roots share key and name (Google's RSA roots): take one valid at `now` first."""
    return sorted(candidates, key=lambda c: not _valid_at(c, now))


@lru_cache(maxsize=_CACHE_SIZE)
def _subject_key(der: bytes) -> str | None:
    """The certificate's subject normalised as RFC 5280 §7.1 compares names (asn1crypto's
    `hashable`), or None when it cannot be normalised; computed once per certificate."""
    return _name_key(parse_certificate(der)["tbs_certificate"]["subject"])


def _name_key(name: asn1_x509.Name) -> str | None:
    try:
        check_name_bounds(name)  # parse_certificate checked already; this guards any other caller
        return _normalised_name(name.dump())
    except MalformedStatement:
        raise
    except Exception:
        return None


@lru_cache(maxsize=_CACHE_SIZE)
def _normalised_name(der: bytes) -> str | None:
    """RFC 5280 §7.1 normalisation (LDAP StringPrep) is slow, and a fleet's leaves all name the
    same few issuers: normalise each distinct encoding once."""
    try:
        return asn1_x509.Name.load(der).hashable
    except Exception:
        return None


class _Candidates:
    """Issuer candidates indexed by subject name. With a few hundred TPM maker intermediates in
    the pool, trying each one's name and signature for every link costs milliseconds; the index
    finds the few of the right name. Certificates of other names are still tried when none of
    those signed, so the index changes the speed of the search, never its outcome."""

    def __init__(self, entries: list[tuple[bytes, asn1_x509.Certificate]]) -> None:
        self.certs = [cert for _der, cert in entries]
        self._by_name: dict[str | None, list[asn1_x509.Certificate]] = {}
        for der, cert in entries:
            self._by_name.setdefault(_subject_key(der), []).append(cert)

    def issuers_of(self, child: asn1_x509.Certificate, exclude) -> list[asn1_x509.Certificate]:
        named = self._by_name.get(_name_key(child["tbs_certificate"]["issuer"]), [])
        found = [c for c in named if c not in exclude and _signed_by(child, c)]
        if found:
            return found
        return [c for c in self.certs if c not in exclude and not any(c is n for n in named) and _signed_by(child, c)]


def verify_chain(
    chain: Sequence[bytes],
    roots: Sequence[bytes],
    now: datetime,
    *,
    intermediates: Sequence[bytes] = (),
    policy: ChainPolicy = ChainPolicy(),
) -> list[asn1_x509.Certificate]:
    """Validate `chain` (leaf first) up to one of `roots`; return the path, leaf first, root last.

    Certificates after the leaf and `intermediates` are candidates only; the path is built
    from the leaf by name and signature. A root that also appears in `chain` is fine.
    """
    if not roots:
        raise UntrustedChain("no trust anchors are configured for this format")
    if not chain:
        raise MalformedStatement("certificate chain is empty")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise MalformedStatement(f"certificate chain has more than {MAX_CHAIN_LENGTH} certificates")
    leaf = parse_certificate(chain[0], "leaf certificate")
    candidates = {bytes(der): f"chain certificate {i}" for i, der in enumerate(chain[1:], 1)}
    for der in intermediates:  # a bundled intermediate the device also sent is one candidate, not two
        candidates.setdefault(bytes(der), "configured intermediate")
    pool = _Candidates([(der, parse_certificate(der, what)) for der, what in candidates.items() if der != bytes(chain[0])])
    anchors = _Candidates([(bytes(der), parse_certificate(der, "trust anchor")) for der in roots])
    anchor_contents = {a.contents for a in anchors.certs}

    path = [leaf]
    current = leaf
    while len(path) <= MAX_CHAIN_LENGTH:
        if len(path) > 1 and current.contents in anchor_contents:
            return _finish(path, now, policy)
        signing_anchors = _prefer_valid(anchors.issuers_of(current, exclude=()), now)
        if signing_anchors:
            path.append(signing_anchors[0])
            return _finish(path, now, policy)
        parents = _prefer_valid(pool.issuers_of(current, exclude=path), now)
        if not parents:
            raise UntrustedChain(
                f"certificate {_describe(current)!r} (issuer {_describe_issuer(current)!r}) "
                "does not chain to a configured root"
            )
        path.append(parents[0])
        current = parents[0]
    raise UntrustedChain("certificate chain is too long")


def _finish(path: list[asn1_x509.Certificate], now: datetime, policy: ChainPolicy) -> list[asn1_x509.Certificate]:
    for depth, cert in enumerate(path):
        role = "leaf" if depth == 0 else ("root" if depth == len(path) - 1 else "intermediate")
        if policy.check_validity:
            _check_validity(cert, now, role)
        if depth == 1 and policy.leaf_issuer_may_be_end_entity and len(path) > 2:
            continue
        if depth > 0:
            _check_issuer_constraints(cert, depth - 1, policy)
    return path
