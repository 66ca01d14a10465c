"""The cloud side of a VM or an enclave, for the device client's tests: the GCE, Azure and EC2
metadata services on 127.0.0.1 (an ephemeral port), and a stand-in for the Nitro NSM.

No cloud is reachable here, so `MetadataServer` emulates the three services' endpoints the
client uses, with the request rules the real ones enforce:

- GCE (metadata.google.internal): every request needs `Metadata-Flavor: Google` and must not
  carry X-Forwarded-For (403 otherwise); answers carry `Metadata-Flavor: Google`; the identity
  endpoint needs a non-empty `audience` (400).
- Azure IMDS (169.254.169.254): every request needs `Metadata: true` and an `api-version`
  (400 with a JSON error otherwise), and must not carry X-Forwarded-For.
- EC2 IMDSv2 (169.254.169.254): PUT /latest/api/token needs a TTL header of 1..21600 seconds
  (400) and no X-Forwarded-For (403); every GET needs a token it issued (401).

What it serves is configured per test: the real recorded documents of ../shared/vectors (the
fetch tests check the client returns them byte for byte), or stand-ins from the test fleets
bound to what the client asked (`gcp_token(audience)`, `azure_signature(nonce)`), for whole
ACME flows. Every request is recorded in `requests`; `faults` makes a path answer an error.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import cbor2
from aiohttp import web


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]


@dataclass
class MetadataServer:
    gcp_instance_id: str | None = None
    gcp_token: Callable[[str], str] | None = None  # audience -> compact JWT
    azure_vm_id: str | None = None
    azure_document: Callable[[str], bytes] | None = None  # nonce -> the JSON body of /metadata/attested/document
    aws_document: bytes | None = None
    aws_signatures: dict[str, bytes] = field(default_factory=dict)  # "pkcs7" / "rsa2048" / "signature" -> body
    faults: dict[str, tuple[int, str]] = field(default_factory=dict)  # path -> (status, body)
    requests: list[Seen] = field(default_factory=list)
    aws_tokens: set[str] = field(default_factory=set)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> MetadataServer:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/computeMetadata/v1/instance/id", self._gcp_instance_id)
        app.router.add_get("/computeMetadata/v1/instance/service-accounts/default/identity", self._gcp_identity)
        app.router.add_get("/metadata/instance/compute/vmId", self._azure_vm_id)
        app.router.add_get("/metadata/attested/document", self._azure_attested)
        app.router.add_put("/latest/api/token", self._aws_token)
        app.router.add_get("/latest/dynamic/instance-identity/{name}", self._aws_identity)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    @web.middleware
    async def _record(self, request: web.Request, handler):
        self.requests.append(Seen(request.method, request.path, dict(request.query), dict(request.headers)))
        if request.path in self.faults:
            status, body = self.faults[request.path]
            return web.Response(status=status, text=body)
        return await handler(request)

    # -- GCE --

    def _gcp_check(self, request: web.Request) -> None:
        if request.headers.get("Metadata-Flavor") != "Google" or "X-Forwarded-For" in request.headers:
            raise web.HTTPForbidden(text="Missing Metadata-Flavor:Google header.", headers={"Metadata-Flavor": "Google"})

    async def _gcp_instance_id(self, request: web.Request) -> web.Response:
        self._gcp_check(request)
        return _served(self.gcp_instance_id, lambda v: v.encode(), {"Metadata-Flavor": "Google"})

    async def _gcp_identity(self, request: web.Request) -> web.Response:
        self._gcp_check(request)
        if not request.query.get("audience"):
            raise web.HTTPBadRequest(text="non-empty audience parameter required", headers={"Metadata-Flavor": "Google"})
        return _served(self.gcp_token, lambda make: make(request.query["audience"]).encode(), {"Metadata-Flavor": "Google"})

    # -- Azure --

    def _azure_check(self, request: web.Request) -> None:
        if request.headers.get("Metadata") != "true" or "X-Forwarded-For" in request.headers:
            raise _azure_error("Bad request. Required metadata header not specified")
        if not request.query.get("api-version"):
            raise _azure_error("Bad request. api-version was not specified in the request.")

    async def _azure_vm_id(self, request: web.Request) -> web.Response:
        self._azure_check(request)
        return _served(self.azure_vm_id, lambda v: v.encode())

    async def _azure_attested(self, request: web.Request) -> web.Response:
        self._azure_check(request)
        body = _served(self.azure_document, lambda make: make(request.query.get("nonce", "")))
        body.content_type = "application/json"
        return body

    # -- EC2 IMDSv2 --

    async def _aws_token(self, request: web.Request) -> web.Response:
        if "X-Forwarded-For" in request.headers:
            raise web.HTTPForbidden()
        ttl = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            raise web.HTTPBadRequest()
        token = base64.b64encode(secrets.token_bytes(40)).decode()
        self.aws_tokens.add(token)
        return web.Response(text=token, headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl})

    async def _aws_identity(self, request: web.Request) -> web.Response:
        if request.headers.get("X-aws-ec2-metadata-token") not in self.aws_tokens:
            raise web.HTTPUnauthorized()
        name = request.match_info["name"]
        if name == "document":
            return _served(self.aws_document, lambda v: v)
        return _served(self.aws_signatures.get(name), lambda v: v)


def _served(value: Any, render: Callable[[Any], bytes], headers: Mapping[str, str] | None = None) -> web.Response:
    """The configured value rendered as a text/plain body, or a 404 when this test configured none."""
    if value is None:
        raise web.HTTPNotFound(headers=headers)
    return web.Response(body=render(value), content_type="text/plain", headers=headers)


def _azure_error(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def azure_body(signature: bytes) -> bytes:
    """The JSON IMDS answers for an attested document: {"encoding": "pkcs7", "signature": base64}."""
    return json.dumps({"encoding": "pkcs7", "signature": base64.b64encode(signature).decode()}).encode()


def wrapped_base64(data: bytes, width: int = 64) -> bytes:
    """Base64 over lines of `width`, as IMDS serves the PKCS#7 signatures."""
    text = base64.b64encode(data)
    return b"\n".join(text[i:i + width] for i in range(0, len(text), width))


# --- the Nitro Secure Module --------------------------------------------------------------------


class ReplayNsm:
    """A `client.nsm.Transport` standing in for /dev/nsm (no NSM is reachable outside an enclave).

    It decodes each CBOR request as the NSM would, records it in `requests`, and answers
    DescribeNSM with `module_id`, Attestation with `document(request fields)`: a recorded
    document replayed as is, or a fleet document made for the request's nonce and key.
    """

    def __init__(self, module_id: str, document: Callable[[Mapping[str, Any]], bytes]) -> None:
        self.module_id, self.document = module_id, document
        self.requests: list[Any] = []
        self.raw_requests: list[bytes] = []

    def __call__(self, request: bytes) -> bytes:
        self.raw_requests.append(request)
        decoded = cbor2.loads(request)
        self.requests.append(decoded)
        if decoded == "DescribeNSM":
            return cbor2.dumps({"DescribeNSM": {"version_major": 1, "version_minor": 0, "version_patch": 0,
                                                "module_id": self.module_id, "max_pcrs": 32,
                                                "locked_pcrs": list(range(16)), "digest": "SHA384"}})
        if isinstance(decoded, dict) and "Attestation" in decoded:
            return cbor2.dumps({"Attestation": {"document": self.document(decoded["Attestation"])}})
        return cbor2.dumps({"Error": "InvalidOperation"})
