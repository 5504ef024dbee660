"""Helpers shared by the operator-tool tests (``tests/test_ops_*.py``)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
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


async def run_cli_on_a_terminal(stack: Stack, *args: str, env: dict[str, str] | None = None,
                                timeout: float = 120) -> CliResult:
    """``s3convex ARGS`` with stdout on a pseudo-terminal (200 columns), as an operator runs
    it: the commands print tables, not JSON; stdout comes back without escape codes. stderr
    stays a pipe."""
    def run() -> CliResult:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        chunks: list[bytes] = []

        def read() -> None:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the process closed its end
                    return
                if not data:
                    return
                chunks.append(data)

        reader = threading.Thread(target=read, daemon=True)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "s3convex", *args], cwd=ROOT,
                env={**os.environ, **stack.env, "S3CONVEX_REPLAY_WAIT": "0", "NO_COLOR": "1",
                     "COLUMNS": "200", "TERM": "xterm", **(env or {})},
                stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
        finally:
            os.close(slave)
        reader.start()
        _, stderr = process.communicate(timeout=timeout)
        reader.join(timeout)
        os.close(master)
        text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # rich still bolds without colour
        return CliResult(process.returncode, text, stderr.decode(errors="replace"))

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
