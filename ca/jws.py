"""JWS request authentication (RFC 8555 §6.2–6.5): parse, check the protected header, verify.

Only the flattened JSON serialization is accepted, with a protected header and no
unprotected one. Signature algorithms come from an allow-list; `none` and MAC algorithms
are refused here (MACs are only for external account binding, checked in `ca.accounts`).
No header extension is understood, so a header with `crit` or `b64` is refused.
Key parsing and signature verification are josepy's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import josepy as jose
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.nonces import b64url, b64url_decode
from ca.problems import BadPublicKey, BadSignatureAlgorithm, Malformed

SIGNATURE_ALGORITHMS: dict[str, jose.JWASignature] = {
    "RS256": jose.RS256, "RS384": jose.RS384, "RS512": jose.RS512,
    "PS256": jose.PS256, "PS384": jose.PS384, "PS512": jose.PS512,
    "ES256": jose.ES256, "ES384": jose.ES384, "ES512": jose.ES512,
}
MAC_ALGORITHMS: dict[str, jose.JWASignature] = {"HS256": jose.HS256, "HS384": jose.HS384, "HS512": jose.HS512}
_EC_CURVE_FOR_ALG = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 8192
_KEY_MEMBERS = ("kty", "crv", "x", "y", "n", "e")  # the public key members, all strings (RFC 7518 §6)
MAX_BODY = 256 * 1024  # a device-attest-01 answer carries the attObj base64url'd twice (attObj, then the JWS)


@dataclass(frozen=True)
class ParsedJWS:
    protected_b64: str
    payload_b64: str
    signature: bytes
    header: dict[str, Any]
    payload: bytes

    @property
    def signing_input(self) -> bytes:
        return f"{self.protected_b64}.{self.payload_b64}".encode("ascii")


def load_json(data: bytes | str, what: str) -> Any:
    """`json.loads` of untrusted bytes; every failure is `malformed` naming `what`.

    Deep nesting (`[[[[…`) makes the decoder raise RecursionError, which is the client's
    fault as much as a syntax error is, so it must not reach the middleware as a 500.
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise Malformed(f"{what} is not valid JSON: nested too deeply") from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Malformed(f"{what} is not valid JSON") from None


def parse_jws(body: bytes, *, what: str = "JWS") -> ParsedJWS:
    """Parse a flattened JWS; every structural fault is `malformed` naming the member."""
    return parse_flattened(load_json(body, what), what=what)


def parse_flattened(obj: Any, *, what: str = "JWS") -> ParsedJWS:
    """Parse a flattened JWS already decoded from JSON (e.g. a payload's externalAccountBinding)."""
    if not isinstance(obj, dict):
        raise Malformed(f"{what} must be a JSON object (flattened JWS serialization)")
    if "header" in obj:
        raise Malformed(f"{what} must not have an unprotected header")
    if "signatures" in obj:
        raise Malformed(f"{what} must use the flattened serialization with exactly one signature")
    extra = set(obj) - {"protected", "payload", "signature"}
    if extra:
        raise Malformed(f"{what} has unknown members: {', '.join(sorted(extra))}")
    members = {}
    for name in ("protected", "payload", "signature"):
        value = obj.get(name)
        if not isinstance(value, str):
            raise Malformed(f"{what} member {name!r} is missing or not a string")
        try:
            members[name] = b64url_decode(value)
        except ValueError:
            raise Malformed(f"{what} member {name!r} is not unpadded base64url") from None
    header = load_json(members["protected"], f"{what} protected header")
    if not isinstance(header, dict):
        raise Malformed(f"{what} protected header must be a JSON object")
    _check_no_extensions(header, what)
    return ParsedJWS(obj["protected"], obj["payload"], members["signature"], header, members["payload"])


def _check_no_extensions(header: dict[str, Any], what: str) -> None:
    """Refuse header extensions: acmeda understands none, so it must not pretend to."""
    if "crit" in header:
        raise Malformed(f"{what} protected header has crit: no extensions are understood here (RFC 7515 §4.1.11)")
    if "b64" in header:
        raise Malformed(f"{what} protected header has b64: the unencoded payload option must not be used (RFC 8555 §6.2)")


def signature_algorithm(header: dict[str, Any]) -> jose.JWASignature:
    alg = header.get("alg")
    if isinstance(alg, str) and alg in SIGNATURE_ALGORITHMS:
        return SIGNATURE_ALGORITHMS[alg]
    raise BadSignatureAlgorithm(
        f"JWS algorithm {alg!r} is not accepted" + (" (MAC algorithms are only for external account binding)" if isinstance(alg, str) and alg in MAC_ALGORITHMS else ""),
        fields={"algorithms": sorted(SIGNATURE_ALGORITHMS)},
    )


def parse_account_key(jwk_obj: Any) -> jose.JWK:
    """Load a public JWK and enforce the key policy for account keys."""
    if not isinstance(jwk_obj, dict):
        raise Malformed("jwk must be a JSON object")
    if any(private in jwk_obj for private in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise BadPublicKey("jwk contains private key material")
    for name in _KEY_MEMBERS:
        if name in jwk_obj and not isinstance(jwk_obj[name], str):
            raise BadPublicKey(f"jwk member {name!r} must be a string")
    try:
        jwk = jose.JWK.from_json(jwk_obj)
    # josepy calls str methods on members without checking their type (AttributeError)
    except (jose.errors.DeserializationError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadPublicKey(f"jwk cannot be parsed: {exc}") from None
    key = jwk.key._wrapped if hasattr(jwk.key, "_wrapped") else jwk.key
    if isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise BadPublicKey(f"RSA account keys must be {MIN_RSA_BITS} to {MAX_RSA_BITS} bits, not {key.key_size}")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _EC_CURVE_FOR_ALG.values():
            raise BadPublicKey(f"EC curve {key.curve.name} is not accepted for account keys")
    else:
        raise BadPublicKey("account keys must be RSA or ECDSA public keys")
    return jwk


def check_key_matches_alg(jwk: jose.JWK, alg: jose.JWASignature) -> None:
    key = jwk.key._wrapped if hasattr(jwk.key, "_wrapped") else jwk.key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if _EC_CURVE_FOR_ALG.get(alg.name) != key.curve.name:
            raise BadSignatureAlgorithm(
                f"JWS algorithm {alg.name} does not fit an EC key on {key.curve.name}",
                fields={"algorithms": sorted(SIGNATURE_ALGORITHMS)},
            )
    elif not alg.name.startswith(("RS", "PS")):
        raise BadSignatureAlgorithm(
            f"JWS algorithm {alg.name} does not fit an RSA key", fields={"algorithms": sorted(SIGNATURE_ALGORITHMS)}
        )


def verify_signature(parsed: ParsedJWS, jwk: jose.JWK, alg: jose.JWASignature, *, what: str = "JWS") -> None:
    check_key_matches_alg(jwk, alg)
    try:
        ok = alg.verify(jwk.key, parsed.signing_input, parsed.signature)
    except Exception:  # josepy raises on malformed signature bytes (e.g. wrong ECDSA length)
        ok = False
    if not ok:
        raise Malformed(f"{what} signature does not verify")


def thumbprint(jwk: jose.JWK) -> str:
    """RFC 7638 JWK thumbprint, base64url (the account key's identity and key authorization suffix)."""
    return b64url(jwk.thumbprint())


def payload_json(parsed: ParsedJWS, *, what: str = "payload") -> dict[str, Any]:
    obj = load_json(parsed.payload, what)
    if not isinstance(obj, dict):
        raise Malformed(f"{what} must be a JSON object")
    return obj


def thumbprint_of_json(jwk_obj: dict[str, Any]) -> str | None:
    """Thumbprint of a JWK given as JSON, or None if it is not a usable public key."""
    try:
        return thumbprint(jose.JWK.from_json(jwk_obj))
    except Exception:
        return None
