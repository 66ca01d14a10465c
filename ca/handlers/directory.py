"""The directory (§7.1.1) and newNonce (§7.2)."""

from __future__ import annotations

from aiohttp import web

from ca.appkeys import SERVICES
from ca.handlers.common import json_response
from ca.middleware import links_for


async def directory(request: web.Request) -> web.Response:
    config = request.app[SERVICES].config
    links = links_for(request)
    meta: dict = {"externalAccountRequired": config.require_eab}
    if config.terms_of_service:
        meta["termsOfService"] = config.terms_of_service
    if config.website:
        meta["website"] = config.website
    body = {
        "newNonce": links.new_nonce(),
        "newAccount": links.new_account(),
        "newOrder": links.new_order(),
        "revokeCert": links.revoke_cert(),
        "keyChange": links.key_change(),
        "renewalInfo": links.renewal_info(),
    }
    if request.app[SERVICES].tpm_enrollment is not None:
        body["newTpmAk"] = links.tpm_new_ak()  # TPM AK enrollment (docs/tpm-enrollment.md)
    return json_response({**body, "meta": meta})


async def new_nonce(request: web.Request) -> web.Response:
    # The middleware adds the Replay-Nonce; HEAD answers 200 and GET 204 (§7.2).
    return web.Response(status=200 if request.method == "HEAD" else 204)
