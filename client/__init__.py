"""The device side of acmeda: TPM key operations, AK enrollment and the ACME device-attest-01 flow."""
