"""client/cloud.py and client/nsm.py fetch the evidence each cloud format expects.

No cloud is reachable here. The metadata services are emulated on 127.0.0.1 by
tests/support/metadata_server.py, which replays the REAL recorded documents of
../shared/vectors (GCE identity tokens, Azure attested documents, EC2 identity documents and
signatures) and enforces the headers the real services require; the Nitro NSM is replaced
by a transport that replays the REAL recorded attestation documents. Each fetcher must
return the recorded evidence byte for byte, send the required headers, ask for the right
audience / nonce / key, and turn a service's refusal into a message naming it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import cbor2
import pytest
from hypothesis import given, settings, strategies as st

from attestation import assigners
from attestation.formats import azure_imds, gcp_iit
from client import cloud
from client.http import Http, tls_context
from client.nsm import NSM_IOCTL_RAW, Nsm, NsmError, ioctl_transport
from tests import vectors
from tests.fleet import aws_iid as aws_fleet
from tests.fleet import azure_imds as azure_fleet
from tests.support.metadata_server import MetadataServer, ReplayNsm, azure_body, wrapped_base64

DIRECTORY = "https://ca.example.test:8443/directory"
KEY_AUTHORIZATION = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
SPKI = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d03010703420004") + bytes(range(64))
# From ../shared/vectors/MANIFEST.md §4b and §4d (the manifest.json entries do not carry them).
AZURE_RECORDED = {"azure-imds/azure-usgov-virginia-2023-03-08.attested.json": ("20230308-230933", "990878d4-068a-4ac4-9ee9-1231d2218ef2"),
                  "azure-imds/azure-eastus-2026-06-25.attested.json": ("20260626-005645", "dc18de58-292f-4794-9a5d-a4192bad0039")}
AWS_RECORDED = [("aws-ec2-iid/node-us-east-1-2018-01-22", "pkcs7", "i-03ae14c346ba643a1"),
                ("aws-ec2-iid/grail1-us-west-2-2016-09-09", "pkcs7", "i-0269a78c81708088a"),
                ("aws-ec2-iid/coder-us-east-1-2022-03-25", "signature", "i-076e9b91f7c420782")]
NITRO_RECORDED = ["aws-nitro/eternis-2024-09-09.cose.cbor", "aws-nitro/evervault-2023-09-22.cose.cbor"]
GCP_RECORDED = ["gcp-iit/infisical-dev-2024-05-17.jwt", "gcp-iit/ncbi-gold-optics-2020-08-08.jwt"]


@pytest.fixture
async def metadata():
    server = await MetadataServer().start()
    yield server
    await server.stop()


def attester(kind: str, server: MetadataServer, **kwargs) -> cloud.CloudAttester:
    return cloud.attester_for(kind, metadata_url=server.url, sleep=lambda _: None, **kwargs)


def statement(att_obj: bytes, fmt: str) -> dict:
    decoded = cbor2.loads(att_obj)
    assert set(decoded) == {"fmt", "attStmt"} and decoded["fmt"] == fmt
    return decoded["attStmt"]


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# --- GCE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("recorded", GCP_RECORDED)
async def test_gcp_returns_the_recorded_token_for_the_challenge_audience(metadata, recorded):
    token = vectors.read(recorded).decode("ascii")
    metadata.gcp_token = lambda audience: token
    metadata.gcp_instance_id = claims(token)["google"]["compute_engine"]["instance_id"]
    gcp = attester("gcp", metadata)

    identifier = await asyncio.to_thread(gcp.identifier)
    att_obj = await asyncio.to_thread(gcp.attestation_object, KEY_AUTHORIZATION, DIRECTORY, SPKI)

    assert statement(att_obj, "gcp-iit") == {"token": token}
    assert identifier.order_value == f"{metadata.gcp_instance_id}/{assigners.GCE_INSTANCE_ID}"
    (asked,) = metadata.seen("/computeMetadata/v1/instance/service-accounts/default/identity")
    digest = gcp_iit.audience_digest(KEY_AUTHORIZATION.encode())
    assert asked.query == {"audience": f"https://ca.example.test:8443/device-attest-01/{digest}", "format": "full"}
    gcp_iit.audience_ending_with(gcp_iit.acme_binding("t", KEY_AUTHORIZATION.encode()).challenge)(asked.query["audience"])
    assert all(r.headers.get("Metadata-Flavor") == "Google" for r in metadata.requests)


def test_gcp_audience_is_https_on_the_directory_host_whatever_its_scheme():
    audience = cloud.gcp_audience("http://127.0.0.1:4000/directory", KEY_AUTHORIZATION)
    assert audience.startswith("https://127.0.0.1:4000/device-attest-01/")
    assert audience.rpartition("/")[2] == gcp_iit.audience_digest(KEY_AUTHORIZATION.encode())


async def test_gcp_metadata_server_refuses_requests_without_the_flavor_header(metadata):
    """The emulator behaves as GCE does, so the header assertions above mean something."""
    metadata.gcp_instance_id = "1"
    http = Http(tls_context(None, False))
    bare = await asyncio.to_thread(http.request, "GET", f"{metadata.url}/computeMetadata/v1/instance/id")
    forwarded = await asyncio.to_thread(http.request, "GET", f"{metadata.url}/computeMetadata/v1/instance/id", None,
                                        {"Metadata-Flavor": "Google", "X-Forwarded-For": "10.0.0.1"})
    assert bare.status == forwarded.status == 403


# --- Azure -------------------------------------------------------------------------------------


@pytest.mark.parametrize("recorded", sorted(AZURE_RECORDED))
async def test_azure_returns_the_recorded_signature_byte_exact(metadata, recorded):
    nonce, vm_id = AZURE_RECORDED[recorded]
    body = vectors.read(recorded)
    metadata.azure_document = lambda asked: body
    metadata.azure_vm_id = vm_id
    imds = cloud.Metadata(Http(tls_context(None, False)), metadata.url, "Azure", {"Metadata": "true"})

    signature = await asyncio.to_thread(cloud.azure_attested_signature, imds, nonce)
    identifier = await asyncio.to_thread(attester("azure", metadata).identifier)

    assert signature == base64.b64decode(json.loads(body)["signature"])
    assert cloud.attested_nonce(signature) == nonce
    assert identifier.order_value == f"{vm_id}/{assigners.AZURE_VM_ID}"
    (asked,) = metadata.seen("/metadata/attested/document")
    assert asked.query == {"api-version": "2020-09-01", "nonce": nonce} and asked.headers["Metadata"] == "true"
    (named,) = metadata.seen("/metadata/instance/compute/vmId")
    assert named.query == {"api-version": "2021-02-01", "format": "text"} and named.headers["Metadata"] == "true"


async def test_azure_asks_for_the_key_authorization_nonce_and_answers_with_its_document(metadata):
    nonce = azure_imds.nonce_for(KEY_AUTHORIZATION.encode())
    metadata.azure_document = lambda asked: azure_body(azure_fleet.attest(azure_fleet.Document(nonce=asked)).att_stmt["signature"])
    att_obj = await asyncio.to_thread(attester("azure", metadata).attestation_object, KEY_AUTHORIZATION, DIRECTORY, SPKI)
    assert cloud.attested_nonce(statement(att_obj, "azure-imds")["signature"]) == nonce
    assert [r.query["nonce"] for r in metadata.seen("/metadata/attested/document")] == [nonce]


@pytest.mark.parametrize("fresh_after", [1, None], ids=["cached-once", "cached-always"])
async def test_azure_asks_again_when_imds_serves_a_cached_nonce(metadata, fresh_after):
    """A real recorded document plays the cached one: its nonce is IMDS's own timestamp."""
    cached = vectors.read("azure-imds/azure-eastus-2026-06-25.attested.json")
    answers = iter([cached] * (fresh_after or cloud.AZURE_ATTEMPTS))
    metadata.azure_document = lambda asked: next(answers, None) or azure_body(
        azure_fleet.attest(azure_fleet.Document(nonce=asked)).att_stmt["signature"])
    azure = attester("azure", metadata)
    if fresh_after is None:
        with pytest.raises(cloud.CloudError, match="kept serving an attested document with nonce '20260626-005645'"):
            await asyncio.to_thread(azure.attestation_object, KEY_AUTHORIZATION, DIRECTORY, SPKI)
        assert len(metadata.seen("/metadata/attested/document")) == cloud.AZURE_ATTEMPTS
    else:
        att_obj = await asyncio.to_thread(azure.attestation_object, KEY_AUTHORIZATION, DIRECTORY, SPKI)
        assert cloud.attested_nonce(statement(att_obj, "azure-imds")["signature"]) == azure_imds.nonce_for(KEY_AUTHORIZATION.encode())
        assert len(metadata.seen("/metadata/attested/document")) == 2


async def test_azure_imds_refuses_requests_without_the_metadata_header(metadata):
    metadata.azure_vm_id = azure_fleet.VM_ID
    http = Http(tls_context(None, False))
    refused = await asyncio.to_thread(http.request, "GET", f"{metadata.url}/metadata/instance/compute/vmId?api-version=2021-02-01")
    assert refused.status == 400 and "metadata header" in refused.json()["error"]


# --- EC2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("recorded, endpoint, instance_id", AWS_RECORDED, ids=[r[0].split("/")[1] for r in AWS_RECORDED])
async def test_aws_returns_the_recorded_document_and_signature_byte_exact(metadata, recorded, endpoint, instance_id):
    document = vectors.read(f"{recorded}.document.json")
    served = vectors.read(f"{recorded}.{endpoint}.b64")
    metadata.aws_document, metadata.aws_signatures = document, {endpoint: served}
    aws = attester("aws", metadata, aws_signature=endpoint)

    identifier = await asyncio.to_thread(aws.identifier)
    att_obj = aws.attestation_object(KEY_AUTHORIZATION, DIRECTORY, SPKI)

    member = cloud.AWS_SIGNATURES[endpoint]
    assert statement(att_obj, "aws-iid") == {"document": document, member: base64.b64decode(b"".join(served.split()))}
    assert identifier.order_value == f"{instance_id}/{assigners.AWS_EC2_INSTANCE_ID}"
    (put,) = metadata.seen("/latest/api/token")
    assert put.method == "PUT" and put.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "60"
    gets = [r for r in metadata.requests if r.method == "GET"]
    assert [r.path.rsplit("/", 1)[1] for r in gets] == ["document", endpoint], "fetched once, for identifier and answer"
    assert {r.headers["X-aws-ec2-metadata-token"] for r in gets} <= metadata.aws_tokens


async def test_aws_fetches_the_rsa2048_signature_by_default(metadata):
    """No RSA-2048 PKCS#7 was ever published with its document, so a fleet stand-in plays it."""
    att = aws_fleet.attest("pkcs7-rsa2048")
    metadata.aws_document, metadata.aws_signatures = att.document, {"rsa2048": wrapped_base64(att.att_stmt["pkcs7"])}
    att_obj = await asyncio.to_thread(attester("aws", metadata).attestation_object, KEY_AUTHORIZATION, DIRECTORY, SPKI)
    assert statement(att_obj, "aws-iid") == att.att_stmt
    assert metadata.requests[-1].path == "/latest/dynamic/instance-identity/rsa2048"


async def test_aws_imds_refuses_identity_requests_without_a_session_token(metadata):
    metadata.aws_document = b"{}"
    http = Http(tls_context(None, False))
    bare = await asyncio.to_thread(http.request, "GET", f"{metadata.url}/latest/dynamic/instance-identity/document")
    no_ttl = await asyncio.to_thread(http.request, "PUT", f"{metadata.url}/latest/api/token")
    assert bare.status == 401 and no_ttl.status == 400


# --- metadata-service failures, one row per way it goes wrong --------------------------------------


@pytest.mark.parametrize("kind, setup, message", [
    ("gcp", lambda s: s.faults.update({"/computeMetadata/v1/instance/id": (503, "metadata server is restarting")}),
     r"GCE metadata service refused GET /computeMetadata/v1/instance/id: HTTP 503: metadata server is restarting"),
    ("gcp", lambda s: setattr(s, "gcp_instance_id", "<html>captive portal</html>"), "GCE instance id '<html>captive portal</html>' is not a decimal"),
    ("azure", lambda s: s.faults.update({"/metadata/instance/compute/vmId": (429, '{"error":"Too many requests"}')}),
     r"Azure metadata service refused GET /metadata/instance/compute/vmId: HTTP 429: \{\"error\":\"Too many requests\"\}"),
    ("azure", lambda s: setattr(s, "azure_vm_id", "not-a-uuid"), "Azure vmId 'not-a-uuid' is not a UUID"),
    ("aws", lambda s: s.faults.update({"/latest/api/token": (403, "Forbidden")}), r"EC2 metadata service refused PUT /latest/api/token: HTTP 403"),
    ("aws", lambda s: setattr(s, "aws_document", b"{}"), r"EC2 metadata service refused GET /latest/dynamic/instance-identity/rsa2048: HTTP 404"),
    ("aws", lambda s: (setattr(s, "aws_document", b"{}"), s.aws_signatures.update(rsa2048=b"%%%")), "instance identity rsa2048 is not base64"),
    ("aws", lambda s: (setattr(s, "aws_document", b'{"instanceId": "x"}'), s.aws_signatures.update(rsa2048=b"AAAA")),
     "instance identity document is not what EC2 serves"),
], ids=["gcp-503", "gcp-not-an-id", "azure-429", "azure-not-a-uuid", "aws-imdsv2-refused", "aws-no-signature",
        "aws-not-base64", "aws-not-a-document"])
async def test_metadata_failures_are_reported_naming_the_service_and_request(metadata, kind, setup, message):
    setup(metadata)
    with pytest.raises(cloud.CloudError, match=message):
        await asyncio.to_thread(attester(kind, metadata).identifier)


async def test_an_unreachable_metadata_service_says_where_it_looked():
    server = await MetadataServer().start()
    await server.stop()  # nothing listens on its port any more
    with pytest.raises(cloud.CloudError, match=rf"GCE metadata service at {server.url} cannot be reached .*--metadata-url"):
        await asyncio.to_thread(attester("gcp", server).identifier)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown cloud 'oracle'"):
        cloud.attester_for("oracle")


# --- Nitro NSM -----------------------------------------------------------------------------------


def _recorded_nitro(recorded: str) -> tuple[bytes, str]:
    document = vectors.read(recorded)
    sign1 = cbor2.loads(document)
    return document, cbor2.loads((sign1.value if isinstance(sign1, cbor2.CBORTag) else sign1)[2])["module_id"]


@pytest.mark.parametrize("recorded", NITRO_RECORDED)
def test_nitro_asks_the_nsm_for_the_challenge_nonce_and_key_and_sends_its_document_as_is(recorded):
    """The transport replays the recorded document: no NSM exists outside an enclave."""
    document, module_id = _recorded_nitro(recorded)
    nsm = ReplayNsm(module_id, lambda request: document)
    nitro = cloud.attester_for("aws-nitro", nsm=Nsm(nsm))

    identifier = nitro.identifier()
    att_obj = nitro.attestation_object(KEY_AUTHORIZATION, DIRECTORY, SPKI)

    assert statement(att_obj, "aws-nitro") == {"attDoc": document}
    assert identifier.order_value == f"{module_id.split('-enc')[0]}/{assigners.AWS_EC2_INSTANCE_ID}"
    nonce = hashlib.sha256(KEY_AUTHORIZATION.encode()).digest()
    assert nsm.raw_requests[0] == cbor2.dumps("DescribeNSM")
    # serde's encoding of Request::Attestation: a one-entry map, fields in declaration order.
    assert nsm.raw_requests[1] == cbor2.dumps({"Attestation": {"user_data": None, "nonce": nonce, "public_key": SPKI}})


@pytest.mark.parametrize("answer, message", [
    ({"Error": "InvalidArgument"}, "the NSM refused Attestation: InvalidArgument"),
    ({"DescribePCR": {"lock": True, "data": b""}}, "answered Attestation with a map of \\['DescribePCR'\\]"),
    ({"Attestation": {"document": b""}}, "Attestation answer has no document"),
    ("Attestation", "answered Attestation with a str"),
], ids=["nsm-error", "other-variant", "empty-document", "not-a-map"])
def test_nsm_refusals_and_odd_answers_are_reported(answer, message):
    nsm = Nsm(lambda request: cbor2.dumps(answer))
    with pytest.raises(NsmError, match=message):
        nsm.attestation(nonce=b"n", public_key=SPKI)


def test_nitro_module_id_that_is_not_an_enclave_id_is_refused():
    nitro = cloud.attester_for("aws-nitro", nsm=Nsm(ReplayNsm("i-123-not-hex", lambda r: b"")))
    with pytest.raises(cloud.CloudError, match="module_id 'i-123-not-hex' is not"):
        nitro.identifier()


def test_nsm_ioctl_is_the_kernel_nsm_raw_request(tmp_path):
    assert NSM_IOCTL_RAW == 0xC0200A00  # _IOWR(0x0A, 0, struct nsm_raw of two 16-octet iovecs)
    with pytest.raises(NsmError, match="cannot open the Nitro Secure Module .*inside a Nitro enclave"):
        ioctl_transport(str(tmp_path / "nsm"))(b"\x6bDescribeNSM")
    with pytest.raises(NsmError, match="the NSM request on /dev/null failed"):
        ioctl_transport("/dev/null")(b"\x6bDescribeNSM")  # a real ioctl, refused by a device that is no NSM


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_nsm_answers_of_any_bytes_raise_only_nsm_error(answer):
    nsm = Nsm(lambda request: answer)
    for call in (nsm.describe, lambda: nsm.attestation(nonce=None, public_key=None)):
        try:
            call()
        except NsmError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_attested_nonce_of_any_bytes_raises_only_cloud_error(signature):
    try:
        cloud.attested_nonce(signature)
    except cloud.CloudError:
        pass
