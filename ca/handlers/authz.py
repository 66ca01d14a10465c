"""Authorizations (§7.5) and challenges (§7.5.1)."""

from __future__ import annotations

from aiohttp import web

from ca import orders, validation
from ca.auth import AuthenticatedRequest, AuthMode
from ca.handlers.common import acme_post, json_response, up_link
from ca.links import Links
from ca.messages import authorization_json, challenge_json
from ca.problems import Malformed
from ca.services import Services


@acme_post(AuthMode.KID)
async def authorization(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    assert auth.account is not None
    authz_id = request.match_info["authz_id"]
    if auth.is_post_as_get:
        view = await orders.load_authorization(services, authz_id, auth.account)
    else:
        payload = auth.payload()
        if payload != {"status": "deactivated"}:
            raise Malformed('an authorization update must be exactly {"status": "deactivated"}')
        view = await orders.deactivate_authorization(services, authz_id, auth.account)
    return json_response(authorization_json(view.authz, view.status, view.challenges, links))


@acme_post(AuthMode.KID)
async def challenge(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    assert auth.account is not None
    payload = None if auth.is_post_as_get else auth.payload()
    row, authz_id = await validation.respond(services, request.match_info["challenge_id"], auth.account, payload)
    response = json_response(challenge_json(row, links))
    up_link(response, links.authorization(authz_id))
    if row.status == "processing":
        response.headers["Retry-After"] = "1"
    return response
