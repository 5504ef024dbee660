"""The servers a benchmark run needs, started on loopback and stopped whatever happens.

LocalStack (host mode, ``localstack/start.sh``) on a free port with its own temporary state
dir, the local Convex server (``convex_local.launcher``), provisioned resources (``Provisioner``),
and, for the wan profile, a latency proxy (``bench/latency_proxy.py``) in its own process.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from s3convex.infra.desired import load_infra_settings
from s3convex.infra.provision import Provisioner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # convex_local/ is a development tool beside the packages

from convex_local.launcher import LocalConvex, start_local_convex  # noqa: E402

BENCH = Path(__file__).resolve().parent
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
# The wan profile: the latency proxy's delay per direction (so 20 ms per S3/SQS round trip),
# and what the local Convex server adds to every function call.
WAN_DELAY_MS = 10
CONVEX_WAN_LATENCY_MS = 20


def isolate_aws_environment() -> None:
    """Fake credentials for LocalStack, and no developer ~/.aws steering this process or its
    children (profiles, endpoints, addressing)."""
    os.environ.update({**CREDENTIALS, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                       "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                       "AWS_EC2_METADATA_DISABLED": "true"})
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client(service: str, endpoint: str, pool: int = 32) -> Any:
    config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard"},
                    max_pool_connections=pool)
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, config=config)


@dataclass
class Stack:
    endpoint: str  # LocalStack, direct
    convex: LocalConvex
    bucket: str
    queue_name: str
    dlq_name: str
    workdir: Path
    s3: Any = field(init=False)
    sqs: Any = field(init=False)
    queue_url: str = field(init=False)
    dlq_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.s3 = client("s3", self.endpoint)
        self.sqs = client("sqs", self.endpoint)
        self.queue_url = self.sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        self.dlq_url = self.sqs.get_queue_url(QueueName=self.dlq_name)["QueueUrl"]

    def consumer_env(self, aws_endpoint: str, **tuning: str) -> dict[str, str]:
        """The environment a consumer process (ours or a baseline) runs with."""
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CONSUMER_", "SQS_", "S3_"))},
            "AWS_ENDPOINT_URL": aws_endpoint,
            "S3_BUCKET": self.bucket,
            "SQS_QUEUE_NAME": self.queue_name,
            "SQS_DLQ_NAME": self.dlq_name,
            "CONVEX_URL": self.convex.url,
            "CONVEX_DEPLOY_KEY": self.convex.admin_key,
            "LOG_LEVEL": "INFO",
            **tuning,
        }

    # --- queue ---------------------------------------------------------------------------
    def depth(self, queue_url: str | None = None) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return sum(int(v) for v in attributes.values())

    # --- Convex --------------------------------------------------------------------------
    def _local(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.post(f"{self.convex.url}/_local/{path}", json=body or {}, timeout=60,
                              headers={"Authorization": f"Convex {self.convex.admin_key}"})
        response.raise_for_status()
        return response.json()

    def reset_convex(self) -> None:
        self._local("reset")

    def convex_latency(self, ms: int) -> None:
        self._local("faults", {"latencyMs": ms})

    def records(self, prefix: str = "") -> list[dict[str, Any]]:
        """Every asset record of the bucket (under ``prefix``), paged as a client would."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            response = httpx.post(f"{self.convex.url}/api/query", timeout=60, json={
                "path": "assets:listByBucket", "format": "json",
                "args": {"bucket": self.bucket, "prefix": prefix,
                         "paginationOpts": {"numItems": 1000, "cursor": cursor}}},
                headers={"Authorization": f"Convex {self.convex.admin_key}"})
            response.raise_for_status()
            page = response.json()
            if page.get("status") != "success":
                raise RuntimeError(f"assets:listByBucket failed: {page}")
            out.extend(page["value"]["page"])
            if page["value"]["isDone"]:
                return out
            cursor = page["value"]["continueCursor"]


def work_dir(servers: contextlib.ExitStack, keep: Path | None, prefix: str) -> Path:
    """Where a run keeps LocalStack's state and its logs: ``--keep DIR`` (created, kept), or a
    temporary directory removed with ``servers``."""
    if keep is None:
        return Path(servers.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    keep.mkdir(parents=True, exist_ok=True)
    return keep.resolve()


@contextlib.contextmanager
def localstack(workdir: Path) -> Iterator[str]:
    env = {
        **os.environ,
        "LOCALSTACK_PORT": str(free_port()),
        "LOCALSTACK_STATE_DIR": str(workdir / "localstack"),
        "S3CONVEX_PROVISION": "0",
        # One log line per request costs the emulator CPU that every contender would share.
        "LS_LOG": os.environ.get("LS_LOG", "warn"),
    }
    try:
        started = subprocess.run([ROOT / "localstack" / "start.sh"], env=env, capture_output=True,
                                 text=True, timeout=600)
        if started.returncode != 0:
            raise RuntimeError(f"localstack/start.sh failed:\n{started.stderr}")
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([ROOT / "localstack" / "stop.sh"], env=env, capture_output=True, timeout=60)


@contextlib.contextmanager
def local_convex() -> Iterator[LocalConvex]:
    server = start_local_convex(admin_key="bench-" + secrets.token_hex(16))
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Proxy:
    url: str
    pid: int


def localstack_pid(workdir: Path) -> int:
    return int((workdir / "localstack" / "localstack.pid").read_text())


@contextlib.contextmanager
def latency_proxy(target: str, delay_ms: float) -> Iterator[Proxy]:
    """``bench/latency_proxy.py`` in its own process (its CPU is not the bench's or the
    consumer's)."""
    host_port = target.removeprefix("http://").rstrip("/")
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "latency_proxy.py"), "--target", host_port,
         "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        url: list[str] = []
        reader = threading.Thread(target=lambda: url.append(json.loads(process.stdout.readline())["url"]),
                                  daemon=True)
        reader.start()
        reader.join(15)
        if not url:
            raise RuntimeError("latency proxy did not start")
        yield Proxy(url[0], process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def provision(endpoint: str, convex: LocalConvex, workdir: Path) -> Stack:
    prefix = f"bench-{secrets.token_hex(4)}"
    stack = dict(bucket=f"{prefix}-assets", queue_name=f"{prefix}-events", dlq_name=f"{prefix}-dlq")
    settings = load_infra_settings(aws_endpoint_url=endpoint, s3_bucket=stack["bucket"],
                                   sqs_queue_name=stack["queue_name"], sqs_dlq_name=stack["dlq_name"])
    Provisioner.from_settings(settings).up()
    made = Stack(endpoint=endpoint, convex=convex, workdir=workdir, **stack)
    _discard_test_event(made)
    return made


def _discard_test_event(stack: Stack) -> None:
    """S3 sends one ``s3:TestEvent`` when notifications are configured; take it off."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        messages = stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10,
                                             WaitTimeSeconds=1).get("Messages", [])
        for message in messages:
            stack.sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
        if messages and stack.depth() == 0:
            return
