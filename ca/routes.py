"""The route table: every ACME endpoint, its method, and (in its handler's decorator) its auth mode."""

from __future__ import annotations

from aiohttp import web

from ca.handlers import account, authz, certificate, directory, order, tpm
from ca.links import ACME


def add_routes(app: web.Application) -> None:
    app.router.add_routes([
        web.get("/directory", directory.directory),
        web.head(f"{ACME}/new-nonce", directory.new_nonce),
        web.get(f"{ACME}/new-nonce", directory.new_nonce, allow_head=False),
        web.post(f"{ACME}/new-account", account.new_account),
        web.post(f"{ACME}/acct/{{account_id}}", account.account),
        web.post(f"{ACME}/acct/{{account_id}}/orders", account.account_orders),
        web.post(f"{ACME}/key-change", account.key_change),
        web.post(f"{ACME}/new-order", order.new_order),
        web.post(f"{ACME}/order/{{order_id}}", order.order),
        web.post(f"{ACME}/order/{{order_id}}/finalize", order.finalize),
        web.post(f"{ACME}/authz/{{authz_id}}", authz.authorization),
        web.post(f"{ACME}/chall/{{challenge_id}}", authz.challenge),
        web.post(f"{ACME}/cert/{{serial}}", certificate.certificate),
        web.post(f"{ACME}/revoke-cert", certificate.revoke),
        web.get(f"{ACME}/renewal-info/{{cert_id}}", certificate.renewal_info),
        web.post(tpm.NEW_AK, tpm.new_ak),
        web.post(f"{tpm.ACTIVATION}/{{activation_id}}", tpm.answer),
    ])
