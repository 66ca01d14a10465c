"""A `tpm` statement that carries a PCR quote and the event log (docs/tpm-boot-posture.md):
the quote must be made by the statement's AK for the same challenge, and the boot facts it
proves reach the evidence. Generated with the TPM fleet (its AK signs both the certification
and the quote) and the simulated measured boot of tests/fleet/tpm_quote.py."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from attestation.errors import AttestationError, ChallengeMismatch, InvalidSignature
from attestation.formats import tpm
from attestation.format import key_authorization_binding
from attestation.tpm.constants import Alg
from tests.fleet import tpm as tpm_fleet, tpm_quote

KEYAUTH = b"token.thumbprint"


def _statement(*, secure_boot: bytes = b"\x01", nonce: bytes | None = None, signer_slot: int = 2) -> tuple[dict, object]:
    sample = tpm_fleet.make(replace(tpm_fleet.Knobs(), alg=-257), key_authorization_binding("token", KEYAUTH))
    knobs = replace(tpm_quote.Knobs(), secure_boot=secure_boot,
                    extra_data=hashlib.sha256(KEYAUTH).digest() if nonce is None else nonce)
    measurements = tpm_quote.boot(knobs.secure_boot)
    pcrs = {bank: tpm_quote._pcr_bank(knobs, bank, measurements) for bank in (Alg.SHA1, Alg.SHA256)}
    message = tpm_quote.quote(knobs, pcrs)
    signature = tpm_quote.sign(knobs, tpm_fleet.private_key("rsa", slot=signer_slot), message)
    stmt = {**sample.att_stmt, "quote": message, "quoteSig": signature, "pcrs": pcrs,
            "eventLog": tpm_quote.event_log(knobs, measurements)}
    return stmt, sample.ctx


@pytest.mark.parametrize("value, state", [(b"\x01", "enabled"), (b"\x00", "disabled")])
def test_quote_adds_the_secure_boot_state(value, state):
    stmt, ctx = _statement(secure_boot=value)
    evidence = tpm.verify(stmt, ctx)
    assert evidence.posture.secure_boot == state
    facts = dict(evidence.posture.extra)
    assert facts["tpm_quote_sig_alg"] and facts["tpm_model"], "boot facts join the TPM's own facts"


def test_statement_without_quote_proves_no_boot_state():
    stmt, ctx = _statement()
    for member in ("quote", "quoteSig", "pcrs", "eventLog"):
        del stmt[member]
    assert tpm.verify(stmt, ctx).posture.secure_boot is None


@pytest.mark.parametrize("knobs, error, check", [
    (dict(nonce=b"\x90\x09"), ChallengeMismatch, "tpm-quote-nonce"),
    (dict(signer_slot=7), InvalidSignature, None),
], ids=["quote for another challenge", "quote by another key than the AK"])
def test_quote_must_come_from_the_ak_for_this_challenge(knobs, error, check):
    stmt, ctx = _statement(**knobs)
    with pytest.raises(error) as info:
        tpm.verify(stmt, ctx)
    assert check is None or info.value.check == check


def test_partial_quote_is_malformed():
    stmt, ctx = _statement()
    del stmt["quoteSig"]
    with pytest.raises(AttestationError, match="quoteSig"):
        tpm.verify(stmt, ctx)
