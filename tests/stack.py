"""An end-to-end stack for one test: provisioned S3/SQS resources + the local Convex server.

``stack`` (fixture, in conftest) gives a :class:`Stack`: boto3 clients for uploads and queue
inspection, consumer :class:`Settings` tuned for tests, and helpers to run the daemon in drain
mode in-process or as a subprocess (for signals and ``kill -9``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3convex.adapters.convex import ConvexClient
from s3convex.consumer.daemon import Daemon
from s3convex.settings import Settings, load_settings
from tests.backends import AwsResources

ROOT = Path(__file__).resolve().parent.parent

# Keys that trip naive encoders: spaces, "+", unicode, deep nesting, a literal "%20".
AWKWARD_KEYS = [
    "plain.txt",
    "with space/and more spaces.mp4",
    "plus+sign/a+b=c.py",
    "unicode/ünïcödé – 東京.json",
    "deeply/nested/path/to/scene/v1/video.webm",
    "percent%20literal&amp;.txt",
]

# Small numbers so tests are quick: short polls, fast flushes, a short visibility timeout so a
# crashed daemon's messages come back within seconds.
TEST_TUNING = {
    "CONSUMER_WAIT_SECONDS": "1",
    "CONSUMER_FLUSH_MS": "20",
    "CONSUMER_POLLERS": "2",
    "CONSUMER_GRACE_SECONDS": "10",
    "SQS_VISIBILITY_TIMEOUT": "6",
    "LOG_LEVEL": "INFO",
}


@dataclass
class Stack:
    resources: AwsResources
    env: dict[str, str]
    convex: ConvexClient
    s3: Any
    sqs: Any
    queue_url: str
    dlq_url: str

    @property
    def bucket(self) -> str:
        return self.resources.bucket

    def settings(self, **overrides: Any) -> Settings:
        """The daemon's settings for this stack; ``overrides`` by variable name, any case."""
        return load_settings(**{**self.env, **{k.upper(): v for k, v in overrides.items()}})

    # --- S3 side ---------------------------------------------------------------------------

    def put(self, key: str, body: bytes = b"x", **kwargs: Any) -> dict[str, Any]:
        return self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, **kwargs)

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=key)
        except self.s3.exceptions.ClientError:
            return None

    # --- SQS side --------------------------------------------------------------------------

    def depth(self, queue_url: str | None = None) -> dict[str, int]:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        return {
            "visible": int(attributes["ApproximateNumberOfMessages"]),
            "invisible": int(attributes["ApproximateNumberOfMessagesNotVisible"]),
            "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        }

    async def wait_for_depth(self, at_least: int, timeout: float = 30.0) -> int:
        """S3 → SQS delivery is asynchronous on LocalStack: wait until the queue holds N."""
        deadline = time.monotonic() + timeout
        while True:
            visible = self.depth()["visible"]
            if visible >= at_least or time.monotonic() > deadline:
                return visible
            await asyncio.sleep(0.1)

    def send(self, body: str | dict[str, Any]) -> str:
        text = body if isinstance(body, str) else json.dumps(body)
        return self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=text)["MessageId"]

    def take_all(self, queue_url: str | None = None, *, delete: bool = True) -> list[dict[str, Any]]:
        """Receive every message currently visible on a queue (deleting them by default)."""
        url = queue_url or self.queue_url
        taken: list[dict[str, Any]] = []
        empty = 0
        while empty < 2:
            batch = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                MessageAttributeNames=["All"], AttributeNames=["All"],
            ).get("Messages", [])
            empty = 0 if batch else empty + 1
            taken.extend(batch)
            if delete and batch:
                self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
        return taken

    # --- the daemon --------------------------------------------------------------------------

    async def drain(self, timeout: float = 120.0, **overrides: Any) -> int:
        daemon = Daemon(self.settings(**overrides), drain=True)
        return await asyncio.wait_for(daemon.run(), timeout)

    def spawn(self, *args: str, log_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """``s3convex run`` as a real process (for signals and kill -9); logs go to ``log_path``."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        with log_path.open("a") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "s3convex", "run", *args],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, text=True,
            )

    # --- Convex side -------------------------------------------------------------------------

    async def record(self, key: str) -> dict[str, Any] | None:
        return await self.convex.query("assets:getByKey", {"bucket": self.bucket, "key": key})

    async def history(self, key: str) -> list[dict[str, Any]]:
        return await self.convex.query("assets:history", {"bucket": self.bucket, "key": key})


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a daemon's log file; any other line (a traceback, a partial last
    line) is skipped."""
    lines = []
    for raw in path.read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines
