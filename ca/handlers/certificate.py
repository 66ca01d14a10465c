"""Certificates: download (§7.4.2), revokeCert (§7.6), renewalInfo (RFC 9773)."""

from __future__ import annotations

from aiohttp import web

from ca import certificates
from ca.appkeys import SERVICES
from ca.auth import AuthenticatedRequest, AuthMode
from ca.handlers.common import acme_post, json_response
from ca.links import Links
from ca.messages import rfc3339
from ca.services import Services

PEM_CHAIN = "application/pem-certificate-chain"


@acme_post(AuthMode.KID)
async def certificate(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    assert auth.account is not None
    chain = await certificates.certificate_chain(services, request.match_info["serial"], auth.account)
    return web.Response(body=chain, headers={"Content-Type": PEM_CHAIN})


@acme_post(AuthMode.JWK_OR_KID)
async def revoke(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    await certificates.revoke(services, auth)
    return web.Response(status=200)


async def renewal_info(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    window = await certificates.renewal_info(services, request.match_info["cert_id"])
    body = {"suggestedWindow": {"start": rfc3339(window.start), "end": rfc3339(window.end)}}
    return json_response(body, headers={"Retry-After": str(int(window.retry_after.total_seconds()))})
