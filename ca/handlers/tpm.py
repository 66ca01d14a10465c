"""TPM AK enrollment over ACME-style POSTs (docs/tpm-enrollment.md): newTpmAk begins a
credential activation, the activation URL takes its answer. Thin: `enroll.tpm_enrollment`
does the work; both requests are signed by an existing account (kid)."""

from __future__ import annotations

from aiohttp import web

from ca.auth import AuthenticatedRequest, AuthMode
from ca.handlers.common import acme_post, json_response
from ca.links import ACME, Links
from ca.problems import Malformed
from ca.services import Services

NEW_AK = f"{ACME}/tpm/new-ak"  # route paths; URLs come from `Links`
ACTIVATION = f"{ACME}/tpm/ak"


def _enrollment(services: Services):
    if services.tpm_enrollment is None:
        raise Malformed("TPM AK enrollment is not available: this CA has no attestation CA", status=404)
    return services.tpm_enrollment


@acme_post(AuthMode.KID)
async def new_ak(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    assert auth.account is not None
    begun = await _enrollment(services).begin(auth.account.id, auth.payload())
    return json_response(begun.to_json(), status=201, headers={"Location": links.tpm_activation(begun.activation.id)})


@acme_post(AuthMode.KID)
async def answer(request: web.Request, auth: AuthenticatedRequest, services: Services, links: Links) -> web.Response:
    assert auth.account is not None
    activated = await _enrollment(services).answer(auth.account.id, request.match_info["activation_id"], auth.payload())
    return json_response(activated.to_json())
