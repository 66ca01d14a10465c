"""Every object identifier acmeda allocates, in one place.

The project's private arc is a UUID-derived OID (ITU-T X.667 | ISO/IEC 9834-8, arc
`2.25`): it needs no registration and no other party can collide with it. Sub-arcs:

    ARC.1     certificate extensions
    ARC.1.1     device posture extension (DevicePosture, `ca/posture.py`)
    ARC.1.2     agent delegation extension (reserved)
    ARC.2     attestation-format / trust-level registrations (reserved; none allocated)
    ARC.3     PermanentIdentifier assigners (RFC 4043 `assigner`)
    ARC.3.1     acmeda TPM EK hash
    ARC.3.2     cloud instance id (reserved)

An OID once published is never reused or given a new meaning; a retired one stays listed
here as retired. `docs/certificate-profile.md` carries the same table with the ASN.1.
The values are dotted strings so that any layer (asn1crypto, `cryptography`, the
`attestation` package's `PermanentIdentifier.assigner`) can use them without conversion.
"""

from __future__ import annotations

# Root of the private arc: 2.25 + the UUID 29c3e34b-9324-42c1-8e5d-d619976e7d2c as an integer.
ARC = "2.25.55515455809226192695543010104513035564"

# .1: X.509 certificate extensions.
EXTENSIONS = f"{ARC}.1"
# .1.1: DevicePosture, the non-critical device posture extension of device certificates.
DEVICE_POSTURE = f"{EXTENSIONS}.1"
# .1.2: reserved for the agent delegation extension of agent certificates.
AGENT_DELEGATION = f"{EXTENSIONS}.2"

# .2: reserved for attestation-format and trust-level registrations. Nothing is allocated:
# DevicePosture names formats by string and trust levels by ENUMERATED.
REGISTRATIONS = f"{ARC}.2"

# .3: assigners of RFC 4043 PermanentIdentifier values that no one else names.
ASSIGNERS = f"{ARC}.3"
# .3.1: the identifier is acmeda's hash of the device's TPM endorsement key.
ASSIGNER_TPM_EK_HASH = f"{ASSIGNERS}.1"
# .3.2: reserved for a cloud provider's instance id.
ASSIGNER_CLOUD_INSTANCE_ID = f"{ASSIGNERS}.2"

# name -> OID of every allocated or reserved OID, for docs and tests.
ALL: dict[str, str] = {
    "ARC": ARC,
    "EXTENSIONS": EXTENSIONS,
    "DEVICE_POSTURE": DEVICE_POSTURE,
    "AGENT_DELEGATION": AGENT_DELEGATION,
    "REGISTRATIONS": REGISTRATIONS,
    "ASSIGNERS": ASSIGNERS,
    "ASSIGNER_TPM_EK_HASH": ASSIGNER_TPM_EK_HASH,
    "ASSIGNER_CLOUD_INSTANCE_ID": ASSIGNER_CLOUD_INSTANCE_ID,
}
