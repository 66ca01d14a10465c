"""HTTPS transport of the device client: the standard library's http.client, one kept-alive
connection per origin, TLS verification always on unless the user asked for `--insecure`.

The device client is a short-lived command, so a synchronous transport is the simplest correct
one: the TPM calls block anyway. Keep-alive matters because one enrollment makes about fifteen
requests and each new TLS handshake would cost more than the request.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

USER_AGENT = "acmeda-device/1 (python http.client)"  # RFC 8555 §6.1: clients MUST send one


class TransportError(Exception):
    """The CA could not be reached, or TLS refused it: a message for the user, no traceback."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Message
    body: bytes

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise TransportError(f"the CA answered HTTP {self.status} with a body that is not JSON: {exc}") from None


def tls_context(ca_bundle: Path | None, insecure: bool) -> ssl.SSLContext:
    """Verification against the system roots, or against `ca_bundle` (the CA's own TLS root).
    `insecure` turns verification off and says so on stderr every time."""
    if insecure:
        print("acmeda device: WARNING: --insecure: the CA's TLS certificate is NOT verified; "
              "anyone on the path can impersonate the CA. Use --ca-bundle instead.", file=sys.stderr)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot load the CA bundle {ca_bundle}: {exc}") from None


class Http:
    """Requests over kept-alive connections, reconnecting once when the server closed one."""

    def __init__(self, context: ssl.SSLContext, timeout: float = 30.0) -> None:
        self._context = context
        self._timeout = timeout
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

    def request(self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> HttpResponse:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise TransportError(f"{url!r} is not an http(s) URL")
        origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        all_headers = {"User-Agent": USER_AGENT, "Accept-Language": "en", **(headers or {})}
        for attempt in (1, 2):
            reused = origin in self._connections
            connection = self._connection(origin)
            try:
                connection.request(method, target, body=body, headers=all_headers)
                response = connection.getresponse()
                return HttpResponse(response.status, response.headers, response.read())
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise TransportError(
                    f"the TLS certificate of {parts.hostname} does not verify ({exc.verify_message}); "
                    "pass the CA's TLS root with --ca-bundle (acmeda serve prints its path)") from None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop(origin)
                if reused and attempt == 1:
                    continue  # a kept-alive connection the server had closed: one fresh try
                raise TransportError(f"the connection to {parts.hostname} failed: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(origin)
                raise TransportError(f"cannot reach {url}: {exc}") from None
        raise AssertionError("unreachable")

    def _connection(self, origin: tuple[str, str, int]) -> http.client.HTTPConnection:
        if origin not in self._connections:
            scheme, host, port = origin
            if scheme == "https":
                self._connections[origin] = http.client.HTTPSConnection(host, port, timeout=self._timeout, context=self._context)
            else:
                self._connections[origin] = http.client.HTTPConnection(host, port, timeout=self._timeout)
        return self._connections[origin]

    def _drop(self, origin: tuple[str, str, int]) -> None:
        connection = self._connections.pop(origin, None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        for origin in list(self._connections):
            self._drop(origin)
