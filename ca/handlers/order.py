"""Orders: newOrder (§7.4), order URL, finalize."""

from __future__ import annotations

from aiohttp import web

from ca import certificates, orders
from ca.auth import AuthenticatedRequest, AuthMode
from ca.handlers.common import acme_post, json_response
from ca.links import Links
from ca.messages import order_json
from ca.model import Status
from ca.orders import OrderView
from ca.services import Services


def _order_response(view: OrderView, links: Links, *, status: int = 200) -> web.Response:
    headers = {"Location": links.order(view.order.id)}
    if view.status is Status.PROCESSING:
        headers["Retry-After"] = "1"
    return json_response(order_json(view.order, view.status, view.authz_ids, links), status=status, headers=headers)


@acme_post(AuthMode.KID)
async def new_order(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    assert auth.account is not None
    view = await orders.new_order(services, auth.account, auth.payload())
    return _order_response(view, links, status=201)


@acme_post(AuthMode.KID)
async def order(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    assert auth.account is not None
    view = await orders.load_order(services, request.match_info["order_id"], auth.account)
    return _order_response(view, links)


@acme_post(AuthMode.KID)
async def finalize(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    assert auth.account is not None
    view = await certificates.finalize(services, request.match_info["order_id"], auth.account, auth.payload())
    return _order_response(view, links)
