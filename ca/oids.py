"""Every object identifier acmeda allocates, in one place.

The project's private arc is a UUID-derived OID (ITU-T X.667 | ISO/IEC 9834-8, arc
`2.25`): it needs no registration and no other party can collide with it. Sub-arcs:

    ARC.1     certificate extensions
    ARC.1.1     device posture extension (DevicePosture, `ca/posture.py`)
    ARC.1.2     agent delegation extension (reserved)
    ARC.2     attestation-format / trust-level registrations (reserved; none allocated)
    ARC.3     PermanentIdentifier assigners (RFC 4043 `assigner`)
    ARC.3.1     acmeda TPM EK hash
    ARC.3.2     cloud instance ids: .1 AWS EC2, .2 Google Compute Engine, .3 Azure VM
    ARC.3.3     AWS Nitro Enclave image measurement (PCR0)

An OID once published is never reused or given a new meaning; a retired one stays listed
here as retired. `docs/certificate-profile.md` carries the same table with the ASN.1.
The values are dotted strings so that any layer (asn1crypto, `cryptography`, the
`attestation` package's `PermanentIdentifier.assigner`) can use them without conversion.
"""

from __future__ import annotations

from attestation.assigners import (  # the assigners live with the formats that name them
    ARC, ASSIGNERS, AWS_EC2_INSTANCE_ID, AZURE_VM_ID, CLOUD_INSTANCE_ID, GCE_INSTANCE_ID,
    NITRO_ENCLAVE_IMAGE, TPM_EK_HASH,
)

# .1: X.509 certificate extensions.
EXTENSIONS = f"{ARC}.1"
# .1.1: DevicePosture, the non-critical device posture extension of device certificates.
DEVICE_POSTURE = f"{EXTENSIONS}.1"
# .1.2: reserved for the agent delegation extension of agent certificates.
AGENT_DELEGATION = f"{EXTENSIONS}.2"

# .2: reserved for attestation-format and trust-level registrations. Nothing is allocated:
# DevicePosture names formats by string and trust levels by ENUMERATED.
REGISTRATIONS = f"{ARC}.2"

# .3: assigners of RFC 4043 PermanentIdentifier values that no one else names
# (attestation/assigners.py defines them).
ASSIGNER_TPM_EK_HASH = TPM_EK_HASH
ASSIGNER_CLOUD_INSTANCE_ID = CLOUD_INSTANCE_ID

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
    "ASSIGNER_AWS_EC2_INSTANCE_ID": AWS_EC2_INSTANCE_ID,
    "ASSIGNER_GCE_INSTANCE_ID": GCE_INSTANCE_ID,
    "ASSIGNER_AZURE_VM_ID": AZURE_VM_ID,
    "ASSIGNER_NITRO_ENCLAVE_IMAGE": NITRO_ENCLAVE_IMAGE,
}
