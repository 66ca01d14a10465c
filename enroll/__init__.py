"""Who may enroll: the fleet registry (enrollment aliases, operator-registered and pinned TPM
EKs), trust on first use for replayable cloud evidence, and TPM AK enrollment by credential
activation. It answers the CA's questions and certifies TPM AKs; device certificates are the
CA's (`ca/`)."""
