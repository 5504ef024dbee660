"""LocalStack's GIL switch interval (``LOCALSTACK_SWITCH_INTERVAL``, ``localstack/start.sh``),
A/B under the same load: two LocalStacks side by side, one per interval, each driven like the
real-time benchmark drives it.

    .venv/bin/python bench/localstack_gil_bench.py                 # 0.005 vs 0.001, 15 s each
    .venv/bin/python bench/localstack_gil_bench.py --uploads 500   # shorter

Each side: 100 signed PutObjects/s (8 threads, ``_rt_stages.SignedPut``) into a bucket that
notifies a queue; four long-polling receivers that delete what they get and HEAD each object
(16 threads, signed), as the daemon does. Both sides run at once, so whatever else the machine
does weighs on both alike; run it a few times and compare within a run. Prints one JSON line
per side: PutObject, PutObject → received and HEAD latencies (p50, p99 ms) and LocalStack's
CPU ms per upload.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

import _stack
from _cpu import CpuMeter
from _report import percentile
from _rt_stages import SignedPut, _keys_of
from _runs import run_paced
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from s3convex.infra.desired import load_infra_settings
from s3convex.infra.provision import Provisioner


def side(uploads: int) -> dict[str, object]:
    """One LocalStack (this process's LOCALSTACK_SWITCH_INTERVAL) under the load above."""
    _stack.isolate_aws_environment()
    with tempfile.TemporaryDirectory(prefix="gil-") as tmp, _stack.localstack(Path(tmp)) as endpoint:
        prefix = f"gil-{secrets.token_hex(3)}"
        Provisioner.from_settings(load_infra_settings(
            aws_endpoint_url=endpoint, s3_bucket=f"{prefix}-a", sqs_queue_name=f"{prefix}-q",
            sqs_dlq_name=f"{prefix}-d")).up()
        sqs = _stack.client("sqs", endpoint)
        queue = sqs.get_queue_url(QueueName=f"{prefix}-q")["QueueUrl"]
        keys_in = _stack.CREDENTIALS
        uploader = SignedPut(endpoint, f"{prefix}-a", _stack.REGION, keys_in["AWS_ACCESS_KEY_ID"],
                             keys_in["AWS_SECRET_ACCESS_KEY"])
        signer = S3SigV4Auth(Credentials(keys_in["AWS_ACCESS_KEY_ID"],
                                         keys_in["AWS_SECRET_ACCESS_KEY"]), "s3", _stack.REGION)
        local = threading.local()
        netloc = urlsplit(endpoint).netloc
        payload = secrets.token_bytes(512)
        while sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages"):
            pass  # the s3:TestEvent
        started: dict[str, float] = {}
        put_ms: list[float] = []
        head_ms: list[float] = []
        received: dict[str, float] = {}
        stop = threading.Event()

        def head(key: str) -> None:
            url = uploader.base + quote(key, safe="/~")
            request = AWSRequest("HEAD", url)
            signer.add_auth(request)
            conn = getattr(local, "conn", None) or http.client.HTTPConnection(netloc, timeout=30)
            local.conn = conn
            t0 = time.monotonic()
            conn.request("HEAD", urlsplit(url).path, headers=dict(request.headers.items()))
            conn.getresponse().read()
            head_ms.append((time.monotonic() - t0) * 1000)

        heads = ThreadPoolExecutor(16)

        def receive() -> None:
            while not stop.is_set():
                messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=1).get("Messages", [])
                now = time.time() * 1000
                if messages:
                    sqs.delete_message_batch(QueueUrl=queue, Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)])
                for message in messages:
                    for key in _keys_of(message["Body"]):
                        received[key] = now
                        heads.submit(head, key)

        receivers = [threading.Thread(target=receive, daemon=True) for _ in range(4)]
        for thread in receivers:
            thread.start()

        def put(key: str) -> None:
            t0 = time.time() * 1000
            started[key] = t0
            uploader.put(key, payload, "video/mp4")
            put_ms.append(time.time() * 1000 - t0)

        keys = [f"s/{i:05d}.mp4" for i in range(uploads)]
        meter = CpuMeter({"localstack": _stack.localstack_pid(Path(tmp))})
        meter.start()
        run_paced(put, keys, 100, 8)
        time.sleep(3)
        stop.set()
        cpu = meter.stop(0.0)
        heads.shutdown()
        lag = [received[k] - started[k] for k in keys if k in received]

        def p(values: list[float]) -> list[int | None]:
            return [None if (v := percentile(values, q)) is None else round(v) for q in (50, 99)]

        return {"switch_interval": os.environ.get("LOCALSTACK_SWITCH_INTERVAL"),
                "received": len(lag), "put_ms": p(put_ms), "put_to_received_ms": p(lag),
                "head_ms": p(head_ms),
                "localstack_cpu_ms_per_upload": round(cpu["localstack"] * 1000 / uploads, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=1500)
    parser.add_argument("--intervals", default="0.005,0.001", help="comma-separated, seconds")
    parser.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side(args.uploads)), flush=True)
        return 0
    sides = [subprocess.Popen([sys.executable, __file__, "--side", "--uploads", str(args.uploads)],
                              env={**os.environ, "LOCALSTACK_SWITCH_INTERVAL": interval},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for interval in args.intervals.split(",")]
    for process in sides:
        out, _ = process.communicate()
        print(out.strip().splitlines()[-1] if out.strip() else f"side failed: {process.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
