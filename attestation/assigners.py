"""The RFC 4043 PermanentIdentifier assigners acmeda allocates under its private arc.

They live here, in the pure library, because the formats name them in `Evidence`;
`ca/oids.py` re-exports them with the rest of the arc and documents the whole tree.

    ARC.3       PermanentIdentifier assigners
    ARC.3.1       acmeda's hash of a TPM endorsement key (hex SHA-256 of the EK SPKI DER)
    ARC.3.2       cloud instance ids, one arc per provider:
    ARC.3.2.1       AWS EC2 instance id ("i-0123…"), from aws-iid / aws-nitro
    ARC.3.2.2       Google Compute Engine instance id (decimal), from gcp-iit / GCE vTPM
    ARC.3.2.3       Azure VM id (vmId UUID), from azure-imds
    ARC.3.3       AWS Nitro Enclave image measurement (PCR0, lowercase hex)
"""

from __future__ import annotations

# Root of the private arc: 2.25 + the UUID 29c3e34b-9324-42c1-8e5d-d619976e7d2c as an integer.
ARC = "2.25.55515455809226192695543010104513035564"

ASSIGNERS = f"{ARC}.3"
TPM_EK_HASH = f"{ASSIGNERS}.1"
CLOUD_INSTANCE_ID = f"{ASSIGNERS}.2"
AWS_EC2_INSTANCE_ID = f"{CLOUD_INSTANCE_ID}.1"
GCE_INSTANCE_ID = f"{CLOUD_INSTANCE_ID}.2"
AZURE_VM_ID = f"{CLOUD_INSTANCE_ID}.3"
NITRO_ENCLAVE_IMAGE = f"{ASSIGNERS}.3"
