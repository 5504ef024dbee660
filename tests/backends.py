"""S3/SQS backends for the tests: moto in-process (default) or LocalStack in host mode.

Load it with ``pytest_plugins = ["tests.backends"]``; pick the backend for the whole session::

    pytest                        # moto (or S3CONVEX_TEST_BACKEND=moto)
    pytest --backend=localstack   # or S3CONVEX_TEST_BACKEND=localstack

Fixtures
    ``aws_backend``   (session)  ``"moto"`` or ``"localstack"``.
    ``aws_endpoint``  (session)  the endpoint URL. For the whole session the environment
                      holds fake credentials, ``AWS_REGION`` and ``AWS_ENDPOINT_URL`` (which
                      botocore itself honours), and no shared config/credentials files.
    ``aws_resources`` (function) an :class:`AwsResources`: fresh names no other test uses
                      (safe under xdist), the same values exported as environment variables
                      for the test's duration (``S3_BUCKET``, ``SQS_QUEUE_NAME``,
                      ``SQS_DLQ_NAME``, ...), and afterwards every bucket and queue whose name
                      starts with its ``prefix`` is deleted. Nothing is created up front.

moto runs as ``ThreadedMotoServer`` on an ephemeral port. LocalStack is started through
``localstack/start.sh`` (which creates its venv on first use, ~80 s) on a free port with its
own temporary state dir and ``S3_SKIP_SIGNATURE_VALIDATION=0`` (presigned URLs are checked as
on AWS), and stopped at the end. ``S3CONVEX_LOCALSTACK_URL`` reuses a LocalStack already
running instead. Each xdist worker gets its own server.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
# LocalStack derives the account from the access key: "test" → 000000000000.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
BACKENDS = ("moto", "localstack")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("S3CONVEX_TEST_BACKEND", "moto"),
        help="S3/SQS backend for this session (default: $S3CONVEX_TEST_BACKEND or moto)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"s3/sqs backend: {config.getoption('--backend')}"


@dataclass(frozen=True)
class AwsResources:
    """Names reserved for one test, and what a test needs to reach them."""

    endpoint_url: str
    region: str
    prefix: str
    bucket: str
    queue_name: str
    dlq_name: str
    env: dict[str, str] = field(default_factory=dict)

    def name(self, suffix: str) -> str:
        """Another name of this test's own (cleaned up like the others)."""
        return f"{self.prefix}-{suffix}"

    def client(self, service: str) -> Any:
        return make_client(service, self.endpoint_url, self.region)


def make_client(service: str, endpoint_url: str, region: str = REGION) -> Any:
    config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard"})
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region, config=config)


@pytest.fixture(scope="session")
def aws_backend(pytestconfig: pytest.Config) -> str:
    return pytestconfig.getoption("--backend")


@pytest.fixture(scope="session")
def aws_endpoint(aws_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            **CREDENTIALS,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }.items():
            env.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        # The developer's ~/.aws must not steer the tests (profiles, endpoints, addressing).
        env.setenv("AWS_CONFIG_FILE", os.devnull)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        servers = {"moto": _moto, "localstack": _localstack}
        with servers[aws_backend](tmp_path_factory) as endpoint:
            env.setenv("AWS_ENDPOINT_URL", endpoint)
            yield endpoint


@pytest.fixture
def aws_resources(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsResources]:
    prefix = f"s3c-{uuid.uuid4().hex[:12]}"
    resources = AwsResources(
        endpoint_url=aws_endpoint,
        region=REGION,
        prefix=prefix,
        bucket=f"{prefix}-bucket",
        queue_name=f"{prefix}-events",
        dlq_name=f"{prefix}-dlq",
    )
    env = {
        "S3_BUCKET": resources.bucket,
        "SQS_QUEUE_NAME": resources.queue_name,
        "SQS_DLQ_NAME": resources.dlq_name,
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_REGION": REGION,
        **CREDENTIALS,
    }
    resources.env.update(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Settings a developer's shell may hold that would change what these names mean.
    for name in ("SQS_QUEUE_URL", "S3_NOTIFICATION_PREFIX", "S3_NOTIFICATION_SUFFIX"):
        monkeypatch.delenv(name, raising=False)
    yield resources
    _delete_everything_named(resources)


# --- servers -----------------------------------------------------------------------------------


class _moto:
    def __init__(self, _: pytest.TempPathFactory) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def __enter__(self) -> str:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request
        self.server.start()
        host, port = self.server.get_host_and_port()
        return f"http://{host}:{port}"

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()


class _localstack:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.reuse = os.environ.get("S3CONVEX_LOCALSTACK_URL")
        self.env = {
            **os.environ,
            "LOCALSTACK_PORT": str(free_port()),
            "LOCALSTACK_STATE_DIR": str(tmp_path_factory.mktemp("localstack")),
            "S3CONVEX_PROVISION": "0",  # each test provisions its own names
            "S3_SKIP_SIGNATURE_VALIDATION": os.environ.get("S3_SKIP_SIGNATURE_VALIDATION", "0"),
        }

    def __enter__(self) -> str:
        if self.reuse:
            return self.reuse.rstrip("/")
        started = subprocess.run(
            [ROOT / "localstack" / "start.sh"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if started.returncode != 0:
            self.__exit__()
            pytest.fail(f"localstack/start.sh failed:\n{started.stderr}", pytrace=False)
        return started.stdout.strip().splitlines()[-1]

    def __exit__(self, *exc_info: object) -> None:
        if not self.reuse:
            subprocess.run(
                [ROOT / "localstack" / "stop.sh"], env=self.env, capture_output=True, timeout=60
            )


@contextmanager
def iam_enforcing_moto(log_dir: Path) -> Iterator[str]:
    """A moto server of its own (its URL) that enforces IAM once three actions have run
    unauthenticated: moto reads ``INITIAL_NO_AUTH_ACTION_COUNT`` at import, so the shared moto of
    the suite cannot. The three are the caller's: create a user, its key, and its policy."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (log_dir / "moto.log").open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}, stdout=log,
            stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline and server.poll() is None, (
                        "moto server did not start")
                    time.sleep(0.1)
            yield url
        finally:
            server.terminate()
            server.wait(10)


def free_port() -> int:
    """A port the OS says is free on loopback; the tiny window before a server binds it is
    acceptable for tests."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- cleanup -----------------------------------------------------------------------------------


def _delete_everything_named(resources: AwsResources) -> None:
    """Delete this test's queues and buckets (by prefix), whatever state the test left."""
    sqs, s3 = resources.client("sqs"), resources.client("s3")
    for url in sqs.list_queues(QueueNamePrefix=resources.prefix).get("QueueUrls", []):
        _ignore_missing(sqs.delete_queue, QueueUrl=url)
    for bucket in s3.list_buckets().get("Buckets", []):
        if bucket["Name"].startswith(resources.prefix):
            _empty_and_delete_bucket(s3, bucket["Name"])


def _empty_and_delete_bucket(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        objects = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in (*page.get("Versions", []), *page.get("DeleteMarkers", []))
        ]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    _ignore_missing(s3.delete_bucket, Bucket=bucket)


def _ignore_missing(call: Any, **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] != 404 and "NonExistent" not in str(
            exc.response["Error"].get("Code")
        ):
            raise
