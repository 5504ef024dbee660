"""The real-time benchmark's stage split, its S3 → SQS probe and its uploader.

* :func:`stages`: per upload, from the local Convex server's trace (``CONVEX_LOCAL_TRACE``,
  ``convex_local/trace.ts``): PutObject → the daemon's mutation reaching the server (LocalStack's
  notification, SQS, the daemon's receive, HeadObject and batch), → its execution starting
  (the server's queue), → its commit, → the refresh that pushed the Transition, → each client's
  callback.
* :func:`probe_sqs`: with no daemon running, PutObject → the notification's ``SentTimestamp``
  (LocalStack's S3 → SQS delay) → a long-polling receiver holding it.
* :class:`SignedPut`: PutObject signed with botocore's ``S3SigV4Auth`` and sent on a keep-alive
  connection per thread — what a browser's PUT to a presigned URL costs, not boto3's
  ~2.7 ms of client CPU per call, which on two cores is taken from the servers under test. Like
  a browser's PUT it sends no CRC checksum trailer (boto3 ≥ 1.36 does by default).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

from _report import percentile
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

STAGES = ["put", "s3→server", "server queue", "mutation", "commit→push", "push→callback"]


def _summary(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "n": float(len(values))}


@dataclass
class _Exec:
    queued: float
    start: float
    end: float
    ts: int


def read_trace(path: Path) -> tuple[dict[str, _Exec], list[tuple[int, float, float]]]:
    """key → its first applyEvents execution; refreshes that sent something, as (ts, start, end)."""
    execs: dict[str, _Exec] = {}
    refreshes: list[tuple[int, float, float]] = []
    if not path.exists():
        return execs, refreshes
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["e"] == "exec" and record.get("keys"):
            done = _Exec(record["queued"], record["start"], record["end"], int(record["ts"]))
            for key in record["keys"]:
                execs.setdefault(key, done)
        elif record["e"] == "refresh" and record["sent"] > 0:
            refreshes.append((int(record["ts"]), record["start"], record["end"]))
    refreshes.sort(key=lambda r: r[1])
    return execs, refreshes


def stages(trace: Path, started: dict[str, float], put_done: dict[str, float],
           seen: dict[str, list[float]]) -> dict[str, dict[str, float | None]]:
    """p50/p99 of each stage over the uploads in ``started`` (wall-clock ms throughout)."""
    execs, refreshes = read_trace(trace)
    out: dict[str, list[float]] = {name: [] for name in STAGES}
    for key, t0 in started.items():
        out["put"].append(put_done[key] - t0)
        done = execs.get(key)
        if done is None:
            continue
        out["s3→server"].append(done.queued - t0)
        out["server queue"].append(done.start - done.queued)
        out["mutation"].append(done.end - done.start)
        push = next((end for ts, start, end in refreshes if ts >= done.ts and start >= done.end),
                    None)
        if push is None:
            continue
        out["commit→push"].append(push - done.end)
        out["push→callback"].extend(t - push for t in seen.get(key, []))
    return {name: _summary(values) for name, values in out.items()}


# --- the uploader ---------------------------------------------------------------------------


class SignedPut:
    """``put(key, body)``: a SigV4-signed PutObject on this thread's keep-alive connection."""

    def __init__(self, endpoint: str, bucket: str, region: str, access_key: str,
                 secret_key: str) -> None:
        self.base = f"{endpoint.rstrip('/')}/{bucket}/"
        self.netloc = urlsplit(endpoint).netloc
        self.auth = S3SigV4Auth(Credentials(access_key, secret_key), "s3", region)
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.netloc, timeout=30)
        return conn

    def put(self, key: str, body: bytes, content_type: str) -> None:
        url = self.base + quote(key, safe="/~")
        request = AWSRequest("PUT", url, data=body, headers={"Content-Type": content_type})
        self.auth.add_auth(request)  # signs the body's SHA-256 too (x-amz-content-sha256)
        path = urlsplit(url).path
        try:
            status = self._send(path, body, dict(request.headers.items()))
        except (http.client.HTTPException, OSError):  # a keep-alive connection the server closed
            status = self._send(path, body, dict(request.headers.items()))
        if status != 200:
            raise RuntimeError(f"PutObject {key}: HTTP {status}")

    def _send(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        conn = self._connection()
        try:
            conn.request("PUT", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except (http.client.HTTPException, OSError):
            conn.close()
            self.local.conn = None
            raise
        return response.status


# --- S3 → SQS on its own ------------------------------------------------------------------------


def probe_sqs(sqs: Any, queue_url: str, put: Any, keys: Sequence[str], rate: float,
              run_paced: Any, pollers: int = 4) -> dict[str, dict[str, float | None]]:
    """Upload ``keys`` at ``rate`` with ``pollers`` long-polling receivers of our own (no daemon);
    → p50/p99 of PutObject → SentTimestamp and SentTimestamp → received, in ms."""
    started: dict[str, float] = {}
    got: dict[str, tuple[float, float]] = {}  # key → (SentTimestamp, received)
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set() or len(got) < len(keys):
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1, AttributeNames=["SentTimestamp"]
                                           ).get("Messages", [])
            now = time.time() * 1000
            if not messages:
                if stop.is_set():
                    return
                continue
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
            for message in messages:
                for key in _keys_of(message["Body"]):
                    got[key] = (float(message["Attributes"]["SentTimestamp"]), now)

    threads = [threading.Thread(target=receive, daemon=True) for _ in range(pollers)]
    for thread in threads:
        thread.start()

    def upload(key: str) -> None:
        started[key] = time.time() * 1000
        put(key)

    run_paced(upload, keys, rate, 8)
    deadline = time.monotonic() + 30
    while len(got) < len(keys) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(5)
    to_sqs = [got[k][0] - started[k] for k in keys if k in got]
    to_receiver = [got[k][1] - got[k][0] for k in keys if k in got]
    return {"put→SentTimestamp": _summary(to_sqs), "SentTimestamp→received": _summary(to_receiver)}


def _keys_of(body: str) -> Iterable[str]:
    document = json.loads(body)
    for record in document.get("Records", []):
        yield unquote_plus(record["s3"]["object"]["key"])
