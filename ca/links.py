"""The only URL builder for ACME resources, and its inverse for `kid` account URLs."""

from __future__ import annotations

from dataclasses import dataclass

ACME = "/acme"


@dataclass(frozen=True)
class Links:
    base: str  # scheme://host[:port], no trailing slash

    def directory(self) -> str:
        return f"{self.base}/directory"

    def new_nonce(self) -> str:
        return f"{self.base}{ACME}/new-nonce"

    def new_account(self) -> str:
        return f"{self.base}{ACME}/new-account"

    def new_order(self) -> str:
        return f"{self.base}{ACME}/new-order"

    def revoke_cert(self) -> str:
        return f"{self.base}{ACME}/revoke-cert"

    def key_change(self) -> str:
        return f"{self.base}{ACME}/key-change"

    def renewal_info(self, cert_id: str | None = None) -> str:
        return f"{self.base}{ACME}/renewal-info" + (f"/{cert_id}" if cert_id else "")

    def tpm_new_ak(self) -> str:
        return f"{self.base}{ACME}/tpm/new-ak"

    def tpm_activation(self, activation_id: str) -> str:
        return f"{self.base}{ACME}/tpm/ak/{activation_id}"

    def account(self, account_id: str) -> str:
        return f"{self.base}{ACME}/acct/{account_id}"

    def account_orders(self, account_id: str) -> str:
        return f"{self.base}{ACME}/acct/{account_id}/orders"

    def order(self, order_id: str) -> str:
        return f"{self.base}{ACME}/order/{order_id}"

    def finalize(self, order_id: str) -> str:
        return f"{self.base}{ACME}/order/{order_id}/finalize"

    def authorization(self, authz_id: str) -> str:
        return f"{self.base}{ACME}/authz/{authz_id}"

    def challenge(self, challenge_id: str) -> str:
        return f"{self.base}{ACME}/chall/{challenge_id}"

    def certificate(self, serial: str) -> str:
        return f"{self.base}{ACME}/cert/{serial}"

    def account_id_from_url(self, url: str) -> str | None:
        """The account id in a `kid` URL, or None if the URL is not one of this server's account URLs."""
        prefix = f"{self.base}{ACME}/acct/"
        if not url.startswith(prefix):
            return None
        account_id = url[len(prefix):]
        return account_id if account_id and "/" not in account_id else None
