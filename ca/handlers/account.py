"""Accounts: newAccount (§7.3), account URL (update, deactivate), orders list (§7.1.2.1), keyChange (§7.3.5)."""

from __future__ import annotations

from aiohttp import web

from ca import accounts
from ca.auth import AuthenticatedRequest, AuthMode
from ca.handlers.common import acme_post, json_response
from ca.links import Links
from ca.messages import account_json
from ca.problems import Unauthorized
from ca.services import Services
from ca.storage import repository as repo

ORDERS_PAGE = 100


@acme_post(AuthMode.JWK)
async def new_account(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    result = await accounts.new_account(services, links, auth)
    return json_response(account_json(result.account, links), status=201 if result.created else 200,
                         headers={"Location": links.account(result.account.id)})


@acme_post(AuthMode.KID)
async def account(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    row = await accounts.update_account(services, auth, request.match_info["account_id"])
    return json_response(account_json(row, links), headers={"Location": links.account(row.id)})


@acme_post(AuthMode.KID)
async def account_orders(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    account_id = request.match_info["account_id"]
    if auth.account is None or auth.account.id != account_id:
        raise Unauthorized("only the account itself may list its orders")
    after = request.query.get("cursor")
    async with services.store.read() as tx:
        orders = await repo.orders_of_account(tx, account_id, after=after, limit=ORDERS_PAGE + 1)
    page, more = orders[:ORDERS_PAGE], len(orders) > ORDERS_PAGE
    response = json_response({"orders": [links.order(o.id) for o in page]})
    if more:
        response.headers.add("Link", f'<{links.account_orders(account_id)}?cursor={page[-1].id}>;rel="next"')
    return response


@acme_post(AuthMode.KID)
async def key_change(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    row = await accounts.change_key(services, links, auth)
    return json_response(account_json(row, links), headers={"Location": links.account(row.id)})
