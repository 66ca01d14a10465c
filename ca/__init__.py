"""acmeda's certificate authority: the ACME front end, challenge validation, the issuing core and storage."""
