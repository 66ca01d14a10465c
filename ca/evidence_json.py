"""Attestation `Evidence` to and from JSON, to keep it on the authorization until finalize."""

from __future__ import annotations

import base64
from dataclasses import asdict
from datetime import datetime
from typing import Any

from attestation.evidence import Evidence, HardwareModule, PermanentIdentifier, Posture, TrustLevel


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def evidence_to_json(evidence: Evidence) -> dict[str, Any]:
    """Everything issuance needs; the vendor chain is left out (draft §7.2 keeps no attestation payload)."""
    posture = asdict(evidence.posture)
    posture["extra"] = [list(pair) for pair in evidence.posture.extra]
    return {
        "fmt": evidence.fmt,
        "public_key": _b64(evidence.public_key) if evidence.public_key is not None else None,
        "trust_level": evidence.trust_level.value,
        "permanent_identifiers": [{"value": p.value, "assigner": p.assigner} for p in evidence.permanent_identifiers],
        "hardware_modules": [{"hw_type": h.hw_type, "serial": _b64(h.serial)} for h in evidence.hardware_modules],
        "posture": posture,
        "chain": [],
        "attested_at": evidence.attested_at.isoformat() if evidence.attested_at else None,
        "replayable": evidence.replayable,
    }


def evidence_from_json(doc: dict[str, Any]) -> Evidence:
    posture = dict(doc["posture"])
    posture["extra"] = tuple(tuple(pair) for pair in posture.get("extra", ()))
    return Evidence(
        fmt=doc["fmt"],
        public_key=base64.b64decode(doc["public_key"]) if doc["public_key"] is not None else None,
        trust_level=TrustLevel(doc["trust_level"]),
        permanent_identifiers=tuple(PermanentIdentifier(p["value"], p["assigner"]) for p in doc["permanent_identifiers"]),
        hardware_modules=tuple(HardwareModule(h["hw_type"], base64.b64decode(h["serial"])) for h in doc["hardware_modules"]),
        posture=Posture(**posture),
        chain=tuple(base64.b64decode(c) for c in doc["chain"]),
        attested_at=datetime.fromisoformat(doc["attested_at"]) if doc["attested_at"] else None,
        replayable=bool(doc.get("replayable", False)),  # absent in rows written before it existed
    )
