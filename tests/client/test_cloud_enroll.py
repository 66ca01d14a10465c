"""`acmeda device enroll --cloud KIND` end to end: client/cloud.py against the in-process ACME
app (tests/ca/acme_app.py), from new account to a stored certificate, for every cloud kind.

No cloud is reachable here, so the platform is played by tests/support/metadata_server.py:
the metadata services on 127.0.0.1, and the Nitro NSM as a replaced transport. What they
serve are stand-in documents from the test fleets (tests/fleet/*.py), made for exactly what
the client asked (the audience, the nonce, the key) and signed by generated roots that the
CA is configured to trust; the real recorded documents cannot answer a fresh challenge (they
are replayed byte for byte in test_cloud_fetch.py). The CA runs with
device_min_trust_level="cloud", as an operator enrolling cloud machines would.
"""

from __future__ import annotations

from dataclasses import replace

import asyncio
import secrets
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation import assigners
from attestation.evidence import TrustLevel
from attestation.formats import aws_nitro, azure_imds, gcp_iit
from ca.posture import posture_from_certificate
from ca.san import decode_other_name
from client import cloud
from client.acme import AcmeProblem
from client.nsm import Nsm
from tests.ca import acme_app
from tests.fleet import aws_iid as aws_fleet
from tests.fleet import aws_nitro as nitro_fleet
from tests.fleet import azure_imds as azure_fleet
from tests.fleet import gcp_iit as gcp_fleet
from tests.support.metadata_server import MetadataServer, ReplayNsm, azure_body, wrapped_base64

# The in-process app's fixtures (tests/ca/conftest.py does not reach this folder).
start_app, make_config, responder = acme_app.start_app, acme_app.make_config, acme_app.responder


@pytest.fixture
async def metadata():
    server = await MetadataServer().start()
    yield server
    await server.stop()


def gcp_cloud(server: MetadataServer):
    server.gcp_instance_id = gcp_fleet.INSTANCE_ID
    server.gcp_token = lambda audience: gcp_fleet.attest(gcp_fleet.Knobs(claims={"aud": audience})).token
    identifier = f"{gcp_fleet.INSTANCE_ID}/{assigners.GCE_INSTANCE_ID}"
    return {"gcp-iit": gcp_iit.FORMAT}, gcp_fleet.trust(), identifier, None


def azure_cloud(server: MetadataServer):
    server.azure_vm_id = azure_fleet.VM_ID
    server.azure_document = lambda nonce: azure_body(azure_fleet.attest(azure_fleet.Document(nonce=nonce)).att_stmt["signature"])
    identifier = f"{azure_fleet.VM_ID}/{assigners.AZURE_VM_ID}"
    return {"azure-imds": azure_imds.FORMAT}, azure_fleet.pki().trust(), identifier, None


def aws_cloud(server: MetadataServer):
    # A fresh instance id each time: the CA admits an instance once, and the PostgreSQL database outlives a test.
    instance_id = f"i-{secrets.token_hex(9)[:17]}"
    att = aws_fleet.attest("pkcs7-rsa2048", aws_fleet.Document(instance_id=instance_id))
    server.aws_document, server.aws_signatures = att.document, {"rsa2048": wrapped_base64(att.att_stmt["pkcs7"])}
    return {"aws-iid": att.fmt}, att.trust, f"{instance_id}/{assigners.AWS_EC2_INSTANCE_ID}", None


def nitro_cloud(server: MetadataServer):
    def document(request) -> bytes:  # the NSM signs what the enclave asked: its nonce, its key
        binding = aws_nitro.acme_binding("unused", b"unused")
        return nitro_fleet.attest(binding, nonce=request["nonce"], public_key=request["public_key"]).att_doc

    nsm = ReplayNsm(nitro_fleet.MODULE_ID, document)
    attester = cloud.attester_for("aws-nitro", nsm=Nsm(nsm))
    identifier = f"{nitro_fleet.INSTANCE_ID}/{assigners.AWS_EC2_INSTANCE_ID}"
    return {"aws-nitro": aws_nitro.FORMAT}, nitro_fleet.pki().trust(), identifier, attester


CLOUDS = {"gcp": (gcp_cloud, "gcp-iit"), "azure": (azure_cloud, "azure-imds"), "aws": (aws_cloud, "aws-iid"),
          "aws-nitro": (nitro_cloud, "aws-nitro")}


async def enroll(start_app, metadata, tmp_path, kind: str, **config):
    """Start a CA for `kind`'s format and run the client's enrollment in a thread (it is synchronous)."""
    formats, trust, identifier, attester = CLOUDS[kind][0](metadata)
    client, _ = await start_app(formats=formats, trust=trust, **{"device_min_trust_level": "cloud", **config})
    options = cloud.CloudOptions(kind=kind, directory=str(client.make_url("/directory")), state_dir=tmp_path / "state",
                                 metadata_url=metadata.url, timeout=30)
    return identifier, options, (lambda: cloud.enroll(options, attester))


@pytest.mark.parametrize("kind", sorted(CLOUDS))
async def test_cloud_machine_enrolls_to_a_certificate(start_app, metadata, tmp_path, kind):
    identifier, options, run = await enroll(start_app, metadata, tmp_path, kind)
    outcome = await asyncio.to_thread(run)

    leaf = outcome.certificate
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(decode_other_name(n).value) for n in san.get_values_for_type(x509.OtherName)] == [identifier]
    assert outcome.identifier.order_value == identifier and identifier in outcome.message
    posture = posture_from_certificate(leaf)
    assert posture.fmt == CLOUDS[kind][1] and posture.trust_level is TrustLevel.CLOUD
    assert posture.posture.key_attested is (kind == "aws-nitro"), "only the NSM document names the certificate key"

    stored = (options.state_dir / "cloud.pem").read_bytes()
    key = serialization.load_pem_private_key(stored, password=None)
    assert key.public_key() == leaf.public_key()
    assert stored.endswith((options.state_dir / "certificate.pem").read_bytes())
    assert x509.load_pem_x509_certificates((options.state_dir / "certificate.pem").read_bytes())[0] == leaf
    for name in ("cloud.pem", "certificate.pem", "account-key.pem"):
        assert stat.S_IMODE((options.state_dir / name).stat().st_mode) == 0o600


async def test_gcp_token_names_the_ca_and_this_challenge(start_app, metadata, tmp_path):
    _identifier, options, run = await enroll(start_app, metadata, tmp_path, "gcp")
    await asyncio.to_thread(run)
    (asked,) = metadata.seen("/computeMetadata/v1/instance/service-accounts/default/identity")
    host = options.directory.split("/")[2]
    assert asked.query["audience"].startswith(f"https://{host}/device-attest-01/") and asked.query["format"] == "full"


async def test_aws_instance_belongs_to_the_first_account_its_document_being_replayable(start_app, metadata, tmp_path):
    """The CA trusts a replayable identifier on first use: the same machine (same account) may
    enroll again, a second account presenting the same document is refused and told why."""
    _identifier, options, run = await enroll(start_app, metadata, tmp_path, "aws")
    await asyncio.to_thread(run)
    await asyncio.to_thread(run)  # re-enrollment (renewal) by the same account
    intruder = replace(options, state_dir=tmp_path / "intruder")  # a new account key
    with pytest.raises(AcmeProblem, match="first enrolled by another account") as refused:
        await asyncio.to_thread(cloud.enroll, intruder)
    assert refused.value.code == "badAttestationStatement"


async def test_default_device_policy_refuses_cloud_evidence_with_a_readable_problem(start_app, metadata, tmp_path):
    _identifier, options, run = await enroll(start_app, metadata, tmp_path, "azure", device_min_trust_level="tee")
    with pytest.raises(AcmeProblem, match="proves cloud") as refused:
        await asyncio.to_thread(run)
    assert refused.value.code == "badAttestationStatement" and "min-trust-level" in refused.value.detail
    assert not (options.state_dir / "cloud.pem").exists()


async def test_enclave_document_for_another_key_is_refused(start_app, metadata, tmp_path):
    """The NSM's public_key must be the CSR key: an NSM stand-in naming another key makes the CA refuse."""
    _identifier, options, _run = await enroll(start_app, metadata, tmp_path, "aws-nitro")
    other = nitro_fleet.spki(nitro_fleet.new_key("p256"))
    nsm = ReplayNsm(nitro_fleet.MODULE_ID, lambda request: nitro_fleet.attest(
        aws_nitro.acme_binding("unused", b"unused"), nonce=request["nonce"], public_key=other).att_doc)
    with pytest.raises(AcmeProblem) as refused:
        await asyncio.to_thread(cloud.enroll, options, cloud.attester_for("aws-nitro", nsm=Nsm(nsm)))
    assert refused.value.code == "badCSR"
