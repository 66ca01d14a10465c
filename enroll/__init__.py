"""Who may enroll: the fleet registry (enrollment aliases now; devices, approvals and TPM AK
enrollment in later issues). It answers the CA's questions; it never issues certificates."""
