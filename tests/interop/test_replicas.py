"""Two `acmeda serve` replicas share one PostgreSQL database (and the CA's key files): one ACME
flow alternates between them request by request, as behind a load balancer, and a nonce
redeemed on one replica is refused on the other."""

from __future__ import annotations

import json

import pytest
import requests

from tests.acme_client import new_key, sign
from tests.interop.conftest import answering_http01, free_port, issue_ip_certificate, start_ca, stop_ca


class AlternatingClient:
    """Sends each request to the next replica; URLs and JWS `url`s name the shared base URL."""

    def __init__(self, base: str, replicas: list[str], root: str) -> None:
        self.base, self.replicas, self.turn = base, replicas, 0
        self.http = requests.Session()
        self.root = root  # passed per request: a session-level verify loses to REQUESTS_CA_BUNDLE
        self.key, self.kid = new_key(), None
        self.seen: list[str] = []

    def _target(self, url: str) -> str:
        replica = self.replicas[self.turn % len(self.replicas)]
        self.turn += 1
        self.seen.append(replica)
        return replica + url[len(self.base):]

    def nonce(self) -> str:
        return self.http.head(self._target(self.base + "/acme/new-nonce"), verify=self.root).headers["Replay-Nonce"]

    def post(self, url: str, payload=None, *, nonce: str | None = None) -> requests.Response:
        body = sign(payload, key=self.key, url=url, nonce=nonce or self.nonce(), kid=self.kid)
        return self.http.post(self._target(url), data=json.dumps(body), headers={"Content-Type": "application/jose+json"},
                              verify=self.root)


@pytest.fixture
def replicas(tmp_path, dns_server, postgres_url):
    http01 = free_port()
    port_a, port_b = free_port(), free_port()
    base = f"https://127.0.0.1:{port_a}"
    common = ["--database-url", postgres_url, "--base-url", base]
    first = start_ca(tmp_path, http01_port=http01, dns_port=dns_server.port, extra=common, port=port_a)
    second = start_ca(tmp_path, http01_port=http01, dns_port=dns_server.port, extra=common, port=port_b)
    with answering_http01(http01):
        yield base, [f"https://127.0.0.1:{port_a}", f"https://127.0.0.1:{port_b}"], first
    stop_ca(first)
    stop_ca(second)


def test_one_flow_across_two_replicas(replicas):
    base, targets, first = replicas
    client = AlternatingClient(base, targets, str(first.root))
    issue_ip_certificate(client, base + "/acme/new-account", base + "/acme/new-order")
    assert set(client.seen) == set(targets), "both replicas must have served the flow"


def test_nonce_redeemed_on_one_replica_is_refused_on_the_other(replicas):
    base, targets, first = replicas
    client = AlternatingClient(base, targets, str(first.root))
    nonce = client.nonce()  # minted by replica A
    assert client.post(base + "/acme/new-account", {"termsOfServiceAgreed": True}, nonce=nonce).status_code == 201  # redeemed on B
    replay = client.post(base + "/acme/new-account", {}, nonce=nonce)  # offered to A again
    assert replay.status_code == 400
    assert replay.json()["type"] == "urn:ietf:params:acme:error:badNonce"
