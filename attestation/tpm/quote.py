"""TPM2_Quote verification and boot posture from a quote and its event log (pure, no I/O).

A quote (TPM2_Quote, *TPM 2.0 Library Part 3* §18.4) is a TPMS_ATTEST of type
TPM_ST_ATTEST_QUOTE whose TPMS_QUOTE_INFO names PCR banks and indices (pcrSelect) and
carries pcrDigest = H(the selected PCR values, concatenated in selection order), H being
the hash of the signing scheme; the AK signs it with a TPMT_SIGNATURE. Since the TPM
computed pcrDigest itself, a verified quote turns PCR values sent next to it into values the
TPM held when it signed, and extraData (the verifier's nonce) makes them current.

`verify_quote` checks, in order, each with its own error and `check`:

- the AK: a TpmtPublic must be a restricted signing key (fixedTPM, restricted, sign), else a
  holder of the key could sign a forged TPMS_ATTEST with TPM2_Sign (RequirementFailed,
  `tpm-quote-ak`); an SPKI is taken as vouched for by its caller (an AK certificate);
- the quote parses (`tpm-attest`, `tpm-attest-magic`, `tpm-attest-type`) and is a QUOTE
  (RequirementFailed, `tpm-quote-type`); extraData == expected nonce, compared in constant
  time (ChallengeMismatch, `tpm-quote-nonce`);
- the TPMT_SIGNATURE parses (`tpm-signature`), is RSASSA, RSAPSS or ECDSA fitting the AK
  (and the AK's own scheme when it fixes one) (UnsupportedFormat for another scheme,
  InvalidSignature otherwise; `tpm-quote-sig-alg`) and
  verifies over the quote bytes (InvalidSignature, `tpm-quote-sig`);
- every selected PCR has a supplied value of its bank's digest size (MalformedStatement,
  `tpm-quote-pcrs`) and pcrDigest == H_sig(their concatenation) (RequirementFailed,
  `tpm-quote-pcr-digest`).

`boot_posture` adds the event log (`attestation.tpm.eventlog`): it verifies the quote,
replays the log against the quoted PCRs and returns the boot facts it proves. The wire
format and the security rationale are in docs/tpm-boot-posture.md.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Mapping, Union

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation.errors import (
    ChallengeMismatch, InvalidSignature, MalformedStatement, RequirementFailed, UnsupportedFormat,
    catch_builtins,
)
from attestation.tpm.constants import DIGEST_SIZE, HASHES, Alg, ObjectAttr, St, alg_name
from attestation.tpm.eventlog import BootFacts, boot_facts, parse_event_log, replay
from attestation.tpm.structs import QuoteInfo, TpmsAttest, TpmtPublic, TpmtSignature

AK_ATTRIBUTES = ObjectAttr.FIXED_TPM | ObjectAttr.RESTRICTED | ObjectAttr.SIGN_ENCRYPT
SIGNATURE_SCHEMES = {Alg.RSASSA: rsa.RSAPublicKey, Alg.RSAPSS: rsa.RSAPublicKey, Alg.ECDSA: ec.EllipticCurvePublicKey}
PcrValues = Mapping[int, Mapping[int, bytes]]  # bank (TPM_ALG_ID) -> PCR index -> value


@dataclass(frozen=True)
class QuoteResult:
    """A verified quote: the TPMS_ATTEST, the signature, and the PCR values it attests."""

    attest: TpmsAttest
    signature: TpmtSignature
    pcrs: PcrValues  # only the selected PCRs: values supplied but not quoted are not here

    @property
    def sig_alg_name(self) -> str:
        """`rsassa-sha256`, for posture facts and policy (a SHA-1 quote says `-sha1`)."""
        return f"{Alg(self.signature.sig_alg).name}-{Alg(self.signature.hash_alg).name}".lower()


def _ak_key(ak_public: Union[TpmtPublic, bytes]) -> tuple[Any, TpmtPublic | None]:
    if isinstance(ak_public, TpmtPublic):
        missing = ObjectAttr(AK_ATTRIBUTES & ~ak_public.object_attributes)
        if missing:
            raise RequirementFailed(f"the AK lacks {missing.name}: it is not a restricted TPM signing key", check="tpm-quote-ak")
        return ak_public.public_key(), ak_public
    if isinstance(ak_public, (bytes, bytearray)):
        try:
            return serialization.load_der_public_key(bytes(ak_public)), None
        except (ValueError, TypeError) as exc:
            raise MalformedStatement(f"the AK is not a DER SubjectPublicKeyInfo: {exc}", check="tpm-quote-ak") from exc
    raise MalformedStatement("the AK is neither a TPMT_PUBLIC nor an SPKI", check="tpm-quote-ak")


def normalize_pcrs(pcrs: Mapping[Any, Any]) -> dict[int, dict[int, bytes]]:
    """{bank: {index: value}} from that form or from {(bank, index): value}."""
    if not isinstance(pcrs, Mapping):
        raise MalformedStatement("the PCR values are not a map", check="tpm-quote-pcrs")
    out: dict[int, dict[int, bytes]] = {}
    for key, value in pcrs.items():
        items = [(key, value)] if isinstance(key, tuple) else [((key, i), v) for i, v in _bank_items(key, value)]
        for (bank, index), digest in items:
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (bank, index)) or not isinstance(digest, bytes):
                raise MalformedStatement(f"PCR value {key!r}: banks and indices are integers, values byte strings", check="tpm-quote-pcrs")
            out.setdefault(bank, {})[index] = digest
    return out


def _bank_items(bank: Any, values: Any) -> list[tuple[Any, Any]]:
    if not isinstance(values, Mapping):
        raise MalformedStatement(f"the PCR values of bank {bank!r} are not a map", check="tpm-quote-pcrs")
    return list(values.items())


def _check_scheme(key: Any, signature: TpmtSignature, ak: TpmtPublic | None) -> None:
    key_type = SIGNATURE_SCHEMES.get(signature.sig_alg)
    if key_type is None or signature.hash_alg not in HASHES:
        raise UnsupportedFormat(
            f"the quote signature scheme {alg_name(signature.sig_alg)} with {alg_name(signature.hash_alg)} is not supported "
            "(RSASSA, RSAPSS and ECDSA with SHA-1/2/3)", check="tpm-quote-sig-alg",
        )
    if not isinstance(key, key_type):
        raise InvalidSignature(f"a {alg_name(signature.sig_alg)} signature does not fit the AK's key type", check="tpm-quote-sig-alg")
    scheme = ak.parameters.scheme if ak is not None else None
    if scheme is not None and scheme.scheme != Alg.NULL and (scheme.scheme, scheme.hash_alg) != (signature.sig_alg, signature.hash_alg):
        raise InvalidSignature(
            f"the AK's scheme is {alg_name(scheme.scheme)}/{alg_name(scheme.hash_alg)}, the quote is signed with "
            f"{alg_name(signature.sig_alg)}/{alg_name(signature.hash_alg)}", check="tpm-quote-sig-alg",
        )


def _verify_signature(key: Any, signature: TpmtSignature, quote: bytes) -> None:
    hash_alg = HASHES[signature.hash_alg]()
    try:
        if signature.sig_alg == Alg.ECDSA:
            r, s = (int.from_bytes(part, "big") for part in signature.ecc)
            key.verify(encode_dss_signature(r, s), quote, ec.ECDSA(hash_alg))
        elif signature.sig_alg == Alg.RSAPSS:  # TPMs salt with the digest size, older ones with the maximum
            key.verify(signature.rsa, quote, padding.PSS(padding.MGF1(hash_alg), padding.PSS.AUTO), hash_alg)
        else:
            key.verify(signature.rsa, quote, padding.PKCS1v15(), hash_alg)
    except _CryptoInvalidSignature:
        raise InvalidSignature("the quote signature does not verify with the AK", check="tpm-quote-sig") from None


def _quoted_values(info: QuoteInfo, pcrs: dict[int, dict[int, bytes]]) -> tuple[dict[int, dict[int, bytes]], bytes]:
    """The selected values, and their concatenation in selection order (Part 3 §18.4)."""
    quoted: dict[int, dict[int, bytes]] = {}
    concatenation = b""
    for selection in info.pcr_select:
        bank, size = selection.hash_alg, DIGEST_SIZE[selection.hash_alg]
        for index in selection.pcrs:
            value = pcrs.get(bank, {}).get(index)
            if value is None or len(value) != size:
                state = "missing" if value is None else f"{len(value)} bytes, not {size}"
                raise MalformedStatement(f"quoted PCR {index} of bank {alg_name(bank)}: the supplied value is {state}", check="tpm-quote-pcrs")
            quoted.setdefault(bank, {})[index] = value
            concatenation += value
    return quoted, concatenation


@catch_builtins
def verify_quote(ak_public: Union[TpmtPublic, bytes], quote: bytes, signature: bytes, pcrs: Mapping[Any, Any],
                 expected_nonce: bytes) -> QuoteResult:
    """Verify a TPM2_Quote and the PCR values it attests (see the module docstring)."""
    key, ak = _ak_key(ak_public)
    attest = TpmsAttest.parse(quote)
    if attest.type != St.ATTEST_QUOTE:
        raise RequirementFailed(f"the quote's type is {St(attest.type).name}, not ATTEST_QUOTE", check="tpm-quote-type")
    if not hmac.compare_digest(attest.extra_data, bytes(expected_nonce)):
        raise ChallengeMismatch("the quote's extraData is not the expected nonce", check="tpm-quote-nonce")
    parsed = TpmtSignature.parse(signature)
    _check_scheme(key, parsed, ak)
    _verify_signature(key, parsed, bytes(quote))
    quoted, concatenation = _quoted_values(attest.attested, normalize_pcrs(pcrs))
    expected = hashlib.new(HASHES[parsed.hash_alg].name, concatenation).digest()
    if not hmac.compare_digest(attest.attested.pcr_digest, expected):
        raise RequirementFailed(
            f"the quote's pcrDigest is not the {alg_name(parsed.hash_alg)} of the supplied PCR values", check="tpm-quote-pcr-digest",
        )
    return QuoteResult(attest, parsed, quoted)


# --- boot posture -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QuoteBundle:
    """The optional quote members of a "tpm" attStmt (docs/tpm-boot-posture.md)."""

    quote: bytes
    signature: bytes
    pcrs: PcrValues
    event_log: bytes | None = None

    @classmethod
    def from_att_stmt(cls, att_stmt: Mapping[str, Any]) -> QuoteBundle | None:
        """The bundle, or None when the statement carries no quote (MalformedStatement if partial)."""
        members = ("quote", "quoteSig", "pcrs", "eventLog")
        if not any(member in att_stmt for member in members):
            return None
        for member in ("quote", "quoteSig"):
            if not isinstance(att_stmt.get(member), bytes):
                raise MalformedStatement(f"tpm attStmt.{member} is missing or not a byte string", check="tpm-quote-statement")
        event_log = att_stmt.get("eventLog")
        if event_log is not None and not isinstance(event_log, bytes):
            raise MalformedStatement("tpm attStmt.eventLog is not a byte string", check="tpm-quote-statement")
        return cls(att_stmt["quote"], att_stmt["quoteSig"], normalize_pcrs(att_stmt.get("pcrs")), event_log)


@dataclass(frozen=True)
class BootPosture:
    """What a verified quote and its replayed event log prove."""

    quote: QuoteResult
    facts: BootFacts


@catch_builtins
def boot_posture(ak_public: Union[TpmtPublic, bytes], bundle: QuoteBundle, nonce: bytes) -> BootPosture:
    """Verify the quote, replay the event log against it, derive the boot facts."""
    result = verify_quote(ak_public, bundle.quote, bundle.signature, bundle.pcrs, nonce)
    quote_fact = (("tpm_quote_sig_alg", result.sig_alg_name),)
    if bundle.event_log is None:
        return BootPosture(result, BootFacts(extra=quote_fact))
    log = parse_event_log(bundle.event_log)
    facts = boot_facts(log, replay(log, result.pcrs))
    return BootPosture(result, BootFacts(facts.secure_boot, tuple(sorted(facts.extra + quote_fact))))
