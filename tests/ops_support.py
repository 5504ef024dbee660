"""Helpers shared by the operator-tool tests (``tests/test_ops_*.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from tests.stack import ROOT, Stack


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


async def run_cli(stack: Stack, *args: str, env: dict[str, str] | None = None,
                  timeout: float = 120) -> CliResult:
    """``s3convex ARGS`` as a real process with the stack's settings (stdout is a pipe, so
    the commands print JSON)."""
    def run() -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "s3convex", *args], cwd=ROOT,
            env={**os.environ, **stack.env, "S3CONVEX_REPLAY_WAIT": "0", **(env or {})},
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return await asyncio.to_thread(run)


def s3_event(bucket: str, key: str, *, name: str = "ObjectCreated:Put", size: int = 1,
             etag: str = "c4ca4238a0b923820dcc509a6f75849b",
             time: str = "2026-11-01T12:00:00.000Z") -> dict[str, Any]:
    """An S3 notification as AWS sends it (``tests/fixtures/events/s3-put.json``), re-aimed."""
    document = json.loads((Path(__file__).parent / "fixtures" / "events" / "s3-put.json").read_text())
    record = document["Records"][0]
    record["eventName"] = name
    record["eventTime"] = time
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["object"].update(key=quote_plus(key, safe="/"), size=size, eTag=etag)
    record["s3"]["object"].pop("versionId")
    return document


def release_all(stack: Stack, queue_url: str, messages: list[dict[str, Any]]) -> None:
    """Make messages received by :meth:`Stack.take_all` (``delete=False``) visible again."""
    for start in range(0, len(messages), 10):
        chunk = messages[start:start + 10]
        stack.sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(chunk)])
