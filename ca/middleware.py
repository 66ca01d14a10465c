"""Response policy for every ACME response, in one place.

- Any `AcmeProblem` becomes an `application/problem+json` document (RFC 7807).
- aiohttp's own HTTP errors (unknown path, wrong method, body too large) become problems too.
- Anything else is a `serverInternal` problem without internal detail; the detail is logged.
- Every response carries a fresh `Replay-Nonce`, `Link: <directory>;rel="index"` and
  `Cache-Control: no-store` (RFC 8555 §6.5, §7.1).
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from ca.appkeys import SERVICES
from ca.links import Links
from ca.problems import AcmeProblem, Malformed, ServerInternal, not_found

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def links_for(request: web.Request) -> Links:
    config = request.app[SERVICES].config
    if config.base_url:
        return Links(config.base_url.rstrip("/"))
    return Links(f"{request.scheme}://{request.host}")


def problem_response(problem: AcmeProblem) -> web.Response:
    response = web.Response(status=problem.status, text=json.dumps(problem.to_json()), content_type=PROBLEM_JSON)
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


def _from_http_exception(exc: web.HTTPException) -> AcmeProblem:
    if exc.status == 404:
        return not_found("the requested resource")
    if exc.status == 405:
        return Malformed(f"method not allowed; allowed: {exc.headers.get('Allow', '')}", status=405,
                         headers={"Allow": exc.headers.get("Allow", "")})
    if exc.status == 413:
        return Malformed("request body is too large", status=413)
    return Malformed(exc.reason or "bad request", status=exc.status if 400 <= exc.status < 500 else 400)


@web.middleware
async def acme_responses(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except AcmeProblem as problem:
        response = problem_response(problem)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem_response(_from_http_exception(exc))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = problem_response(ServerInternal("the server failed to handle the request; the error is logged"))
    services = request.app[SERVICES]
    response.headers["Replay-Nonce"] = services.nonces.issue()
    response.headers.add("Link", f'<{links_for(request).directory()}>;rel="index"')
    response.headers.setdefault("Cache-Control", "no-store")
    return response
