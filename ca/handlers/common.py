"""What every handler shares: JSON responses and the authenticated-POST wrapper."""

from __future__ import annotations

import functools
import json
from typing import Any, Awaitable, Callable

from aiohttp import web

from ca.appkeys import SERVICES
from ca.auth import AuthenticatedRequest, AuthMode, authenticate
from ca.jws import MAX_BODY
from ca.links import Links
from ca.middleware import links_for
from ca.problems import Malformed
from ca.services import Services

JOSE_JSON = "application/jose+json"
Handler = Callable[[web.Request, AuthenticatedRequest, Services, Links], Awaitable[web.StreamResponse]]


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def up_link(response: web.StreamResponse, url: str) -> None:
    response.headers.add("Link", f'<{url}>;rel="up"')


def acme_post(mode: AuthMode) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Authenticate a POST in `mode` (RFC 8555 §6.2) and hand the handler the verified request."""

    def wrap(handler: Handler):
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            if request.content_type != JOSE_JSON:
                raise Malformed(f"Content-Type must be {JOSE_JSON}", status=415)
            if request.content_length is not None and request.content_length > MAX_BODY:
                raise Malformed("request body is too large", status=413)
            body = await request.read()
            services = request.app[SERVICES]
            links = links_for(request)
            url = str(links.base) + request.path_qs
            auth = await authenticate(services, links, url, body, mode)
            return await handler(request, auth, services, links)

        wrapper.acme_mode = mode  # type: ignore[attr-defined]
        return wrapper

    return wrap
