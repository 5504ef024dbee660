"""HeadObject: the signed aiohttp path answers exactly as aiobotocore does, or hands over.

Runs on both tiers (moto and LocalStack): every object is read through the full aiobotocore
client and through :class:`SignedHead`, and the two :class:`ObjectHead` must be equal. The
hand-over cases use real loopback servers: a port nobody listens on, and a small aiohttp app
answering the statuses S3 uses for "not for this request" (redirect, 400 with the bucket's
region, 403, 500, 503).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import httpx
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioCredentials
from aiobotocore.session import get_session
from aiohttp import web

from s3convex.adapters.aws import open_clients
from s3convex.adapters.s3_store import S3ObjectStore
from s3convex.adapters.signed_head import GONE, PROBE_KEY, SignedHead
from tests.stack import AWKWARD_KEYS, Stack

pytestmark = pytest.mark.e2e
# A client of its own, as consumer.aws.open_clients makes them, needing nothing from the test
# session's environment.
LOCAL_CLIENT = {"region_name": "us-east-1", "aws_access_key_id": "test", "aws_secret_access_key": "test",
                "config": AioConfig(signature_version="s3v4")}

KEYS = [
    *AWKWARD_KEYS,
    "tilde~and'quote(1).py",
    "a/../dots/./x",  # sent as is: no client-side dot-segment normalisation
    "a//double",
]


async def test_signed_head_answers_every_key_exactly_as_aiobotocore(stack: Stack) -> None:
    for key in KEYS:
        stack.put(key, key.encode(), ContentType="video/mp4", Metadata={"scene": "3", "Owner": "ada"})
    async with open_clients(stack.settings().aws) as aws:
        assert aws.signed_head is not None  # on by default
        slow, fast = S3ObjectStore(aws.s3), S3ObjectStore(aws.s3, aws.signed_head)
        for key in KEYS:
            answer = await aws.signed_head.head(stack.bucket, key)
            assert isinstance(answer, dict), f"{key!r} was handed over: {answer!r}"
            expected = await slow.head(stack.bucket, key)
            assert expected is not None and expected.size == len(key.encode())
            assert await fast.head(stack.bucket, key) == expected, key
        assert await aws.signed_head.head(stack.bucket, "never/uploaded") == GONE
        assert await fast.head(stack.bucket, "never/uploaded") is None


async def test_signed_head_reads_checksums_encryption_storage_class_and_versions(stack: Stack) -> None:
    body = b"scene video bytes"
    stack.s3.put_bucket_versioning(Bucket=stack.bucket, VersioningConfiguration={"Status": "Enabled"})
    first = stack.put("v/clip.mp4", b"first version")
    stack.put("v/clip.mp4", body, ChecksumAlgorithm="SHA256", ServerSideEncryption="AES256",
              StorageClass="STANDARD_IA")
    async with open_clients(stack.settings().aws) as aws:
        slow, fast = S3ObjectStore(aws.s3), S3ObjectStore(aws.s3, aws.signed_head)
        latest = await fast.head(stack.bucket, "v/clip.mp4")
        assert latest == await slow.head(stack.bucket, "v/clip.mp4")
        assert latest is not None
        assert latest.checksums is not None
        assert latest.checksums.sha256 == base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert latest.encryption is not None and latest.encryption.sse == "AES256"
        assert latest.storage_class == "STANDARD_IA"

        older = await fast.head(stack.bucket, "v/clip.mp4", first["VersionId"])
        assert older == await slow.head(stack.bucket, "v/clip.mp4", first["VersionId"])
        assert older is not None and older.size == len(b"first version")
        assert older.version_id == first["VersionId"] != latest.version_id


async def test_without_credentials_or_when_switched_off_everything_goes_through_the_client(
    stack: Stack,
) -> None:
    stack.put("k.txt", b"abc")
    async with open_clients(stack.settings().aws, signed_head=False) as aws:
        assert aws.signed_head is None
        head = await S3ObjectStore(aws.s3, aws.signed_head).head(stack.bucket, "k.txt")
        assert head is not None and head.size == 3


async def test_a_network_error_hands_over_to_the_client(stack: Stack) -> None:
    stack.put("k.txt", b"abc")
    dead = f"http://127.0.0.1:{_unused_port()}"
    async with (
        open_clients(stack.settings().aws) as aws,
        get_session().create_client("s3", endpoint_url=dead, **LOCAL_CLIENT) as nowhere,
        aiohttp.ClientSession() as http,
    ):
        attempts: list[str] = []
        nowhere.meta.events.register("before-send.s3.HeadObject", lambda request, **_: attempts.append(request.url))
        signed = SignedHead(nowhere, AioCredentials("test", "test"), http)
        assert await signed.head(stack.bucket, "k.txt") is None
        head = await S3ObjectStore(aws.s3, signed).head(stack.bucket, "k.txt")
        assert head is not None and head.size == 3
        # The failed probe is not repeated per event: the next hand-over sends nothing.
        tried = len(attempts)
        assert tried >= 1
        assert await signed.head(stack.bucket, "other.txt") is None
        assert len(attempts) == tried


@pytest.mark.parametrize(
    ("status", "headers", "declines_bucket"),
    [
        (301, {"x-amz-bucket-region": "eu-west-1"}, True),
        (307, {"Location": "http://elsewhere/"}, True),
        (400, {"x-amz-bucket-region": "eu-west-1"}, True),
        (400, {}, False),
        (400, {"x-amz-bucket-region": "us-east-1"}, False),  # ours: e.g. a malformed version id
        (403, {}, False),
        (500, {}, False),
        (503, {"Retry-After": "1"}, False),
    ],
)
async def test_any_other_status_is_left_to_the_client(
    status: int, headers: dict[str, str], declines_bucket: bool,
) -> None:
    async with (
        _answering(status, headers) as (endpoint, hits),
        get_session().create_client("s3", endpoint_url=endpoint, **LOCAL_CLIENT) as s3,
        aiohttp.ClientSession() as http,
    ):
        signed = SignedHead(s3, AioCredentials("AKIDEXAMPLE", "secret"), http)
        assert await signed.head("bucket", "a b/c.mp4") is None
        assert await signed.head("bucket", "a b/c.mp4") is None
    probes = [hit for hit in hits if hit["probe"]]
    sent = [hit for hit in hits if not hit["probe"]]
    # One HeadObject through the client taught the address; ours went to the same place, signed,
    # asking for checksums.
    assert len(probes) == 1 and probes[0]["path"] == f"/bucket/{PROBE_KEY}"
    assert sent[0]["path"] == "/bucket/a%20b/c.mp4"
    assert sent[0]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/s3/aws4_request" in sent[0]["authorization"]
    assert sent[0]["checksum_mode"] == "ENABLED"
    # A bucket S3 says lives elsewhere is left to the client from then on (it follows redirects).
    assert len(sent) == (1 if declines_bucket else 2)


async def test_temporary_credentials_sign_with_their_session_token() -> None:
    async with (
        _answering(200, {"Content-Length": "3", "ETag": '"abc"'}) as (endpoint, hits),
        get_session().create_client("s3", endpoint_url=endpoint, **LOCAL_CLIENT) as s3,
        aiohttp.ClientSession() as http,
    ):
        signed = SignedHead(s3, AioCredentials("ASIAEXAMPLE", "secret", "the-session-token"), http)
        answer = await signed.head("bucket", "k.txt")
    assert isinstance(answer, dict) and answer["ContentLength"] == 3 and answer["ETag"] == '"abc"'
    sent = next(hit for hit in hits if not hit["probe"])
    assert sent["security_token"] == "the-session-token"
    assert "x-amz-security-token" in sent["authorization"]  # a signed header, not just sent


async def test_signs_for_the_region_botocore_was_redirected_to() -> None:
    # The bucket lives in eu-west-1: S3 answers the client's first try with a 301 naming the
    # region; botocore re-signs for it and retries. Our requests are signed for it from the start.
    async with (
        _answering(200, {"Content-Length": "1", "ETag": '"e"'}, bucket_region="eu-west-1") as (endpoint, hits),
        get_session().create_client("s3", endpoint_url=endpoint, **LOCAL_CLIENT) as s3,
        aiohttp.ClientSession() as http,
    ):
        signed = SignedHead(s3, AioCredentials("AKIDEXAMPLE", "secret"), http)
        assert isinstance(await signed.head("bucket", "k.txt"), dict)
    sent = next(hit for hit in hits if not hit["probe"])
    assert "/eu-west-1/s3/aws4_request" in sent["authorization"]


@contextlib.asynccontextmanager
async def _answering(status: int, headers: dict[str, str], *, bucket_region: str = "us-east-1",
                     ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback stand-in for S3: the probe key is not there (404); every other HEAD gets
    ``status`` and ``headers``; a request signed for another region than ``bucket_region``
    gets S3's 301 naming it."""
    hits: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        hits.append({
            "probe": request.raw_path.endswith(PROBE_KEY),
            "path": request.raw_path,
            "authorization": authorization,
            "checksum_mode": request.headers.get("x-amz-checksum-mode", ""),
            "security_token": request.headers.get("x-amz-security-token", ""),
        })
        if f"/{bucket_region}/s3/aws4_request" not in authorization:
            return web.Response(status=301, headers={"x-amz-bucket-region": bucket_region})
        if request.raw_path.endswith(PROBE_KEY):
            return web.Response(status=404)
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_route("HEAD", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_presigned_gets_are_made_as_the_client_makes_them_and_download(stack: Stack) -> None:
    key = "scene 1/vidéo+final.mp4"
    stack.put(key, b"the video")
    async with open_clients(stack.settings().aws) as aws, httpx.AsyncClient() as http:
        assert aws.signed_head is not None
        direct = await aws.signed_head.presign_get(stack.bucket, key, 600)
        stock = await aws.s3.generate_presigned_url(
            "get_object", Params={"Bucket": stack.bucket, "Key": key}, ExpiresIn=600)
        assert direct is not None
        ours, theirs = urlsplit(direct), urlsplit(stock)
        assert (ours.scheme, ours.netloc, ours.path) == (theirs.scheme, theirs.netloc, theirs.path)
        ours_query, their_query = parse_qs(ours.query), parse_qs(theirs.query)
        assert ours_query.keys() == their_query.keys()
        for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Expires", "X-Amz-SignedHeaders"):
            assert ours_query[name] == their_query[name], name
        response = await http.get(direct)
        assert response.status_code == 200 and response.content == b"the video"
