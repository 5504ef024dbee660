"""Operator tools benchmark on LocalStack + the local Convex server.

(a) replay throughput: ``Replayer`` (the core of ``s3convex replay replay``, with its audit
    rows) against a raw receive → SendMessageBatch → DeleteMessageBatch loop on the same
    queues, at the same concurrency and alone; target ≥ 0.8× the raw loop;
(b) reconcile of a large bucket: ``s3convex reconcile --json`` as its own process (peak RSS
    from wait4, wall time) against a bare ListObjectsV2 walk of the same bucket, also as its
    own process; targets: 100k objects under 200 MB RSS, time ≤ 2× the bare walk. The local
    Convex server's own ``listByBucket`` walk is timed apart, since it is part of the cost.

    python bench/ops_bench.py                    # 3,000 DLQ messages, 10,000 objects
    python bench/ops_bench.py --objects 100000   # the target size (~10 min here)

Results go to ``bench/results/ops_bench.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from convex_local.launcher import start_local_convex  # noqa: E402
from s3convex.adapters.aws import open_clients  # noqa: E402
from s3convex.adapters.convex import ConvexClient  # noqa: E402
from s3convex.adapters.convex_pages import convex_pages  # noqa: E402
from s3convex.consumer.ops.dlq import Selection  # noqa: E402
from s3convex.consumer.ops.replay import ReplayAudit, Replayer, audited  # noqa: E402
from s3convex.infra.desired import load_infra_settings  # noqa: E402
from s3convex.infra.provision import Provisioner  # noqa: E402

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
RECEIVE = {"MaxNumberOfMessages": 10, "WaitTimeSeconds": 1, "MessageAttributeNames": ["All"],
           "AttributeNames": ["SentTimestamp"]}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def boto(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))


# --- servers -----------------------------------------------------------------------------------

class LocalStack:
    def __init__(self, workdir: Path) -> None:
        self.env = {**os.environ, "LOCALSTACK_PORT": str(free_port()),
                    "LOCALSTACK_STATE_DIR": str(workdir / "localstack"), "S3CONVEX_PROVISION": "0"}

    def __enter__(self) -> str:
        done = subprocess.run([ROOT / "localstack" / "start.sh"], env=self.env, capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"localstack/start.sh failed:\n{done.stderr}")
        return done.stdout.strip().splitlines()[-1]

    def __exit__(self, *exc: object) -> None:
        subprocess.run([ROOT / "localstack" / "stop.sh"], env=self.env, capture_output=True, timeout=60)


# --- (a) replay --------------------------------------------------------------------------------------

def dlq_body(bucket: str, i: int) -> str:
    """A real-sized S3 notification, as a dead-lettered message carries it."""
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
        "eventTime": "2026-11-01T12:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {"x-amz-request-id": f"REQ{i:012d}", "x-amz-id-2": "x" * 64},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "s3convex-sync",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": f"sessions/s-{i % 97}/scenes/sc-{i % 13}/v1/video-{i}.mp4",
                          "size": 1024 + i, "eTag": f"{i:032x}", "sequencer": f"{i:018X}"}}}]})


def dlq_attributes(i: int) -> dict[str, Any]:
    string = lambda v: {"DataType": "String", "StringValue": v}  # noqa: E731
    return {"s3convex.failure-reason": string("permanent: assets:applyEvents: HTTP 401 BadAdminKey"),
            "s3convex.source-message-id": string(f"src-{i:08d}"),
            "s3convex.receive-count": string("1"),
            "s3convex.failed-at": string("2026-11-01T12:00:00.000+00:00")}


def fill(sqs: Any, queue_url: str, bucket: str, count: int) -> None:
    def send(start: int) -> None:
        entries = [{"Id": str(i), "MessageBody": dlq_body(bucket, start + i),
                    "MessageAttributes": dlq_attributes(start + i)} for i in range(min(10, count - start))]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not response.get("Failed"), response["Failed"]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(0, count, 10)))


def depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


async def raw_loop(sqs: Any, dlq_url: str, target_url: str, workers: int) -> int:
    """The floor: receive 10 → send them → delete them, nothing else."""
    moved = 0

    async def one() -> None:
        nonlocal moved
        empty = 0
        while empty < 2:
            messages = (await sqs.receive_message(QueueUrl=dlq_url, **RECEIVE)).get("Messages", [])
            empty = 0 if messages else empty + 1
            if not messages:
                continue
            sent = await sqs.send_message_batch(QueueUrl=target_url, Entries=[
                {"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": {
                    k: {f: v[f] for f in ("DataType", "StringValue") if f in v}
                    for k, v in m.get("MessageAttributes", {}).items()}}
                for i, m in enumerate(messages)])
            ok = {int(s["Id"]) for s in sent.get("Successful", [])}
            await sqs.delete_message_batch(QueueUrl=dlq_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages) if i in ok])
            moved += len(ok)

    await asyncio.gather(*(one() for _ in range(workers)))
    return moved


async def bench_replay(settings: Any, sync_sqs: Any, convex_url: str, admin_key: str, dlq_url: str,
                       count: int, bucket: str, rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {"messages": count, "rounds": rounds, "trials": []}
    async with open_clients(settings.aws, max_pool_connections=64) as aws, \
            ConvexClient(convex_url, SecretStr(admin_key)) as convex:
        plan = [("raw", 1), ("replay", 1), ("raw", 4), ("replay", 4)]
        # Alternate the order each round: LocalStack slows as it holds more, so whoever
        # always ran second would always lose a little.
        for name, workers in [t for r in range(rounds) for t in (plan if r % 2 == 0 else plan[::-1])]:
            target = sync_sqs.create_queue(QueueName=f"bench-{name}-{workers}-{secrets.token_hex(3)}")["QueueUrl"]
            fill(sync_sqs, dlq_url, bucket, count)
            log(f"replay bench: {name} ×{workers} moving {count} messages")
            started = time.perf_counter()
            if name == "raw":
                moved = await raw_loop(aws.sqs, dlq_url, target, workers)
            else:
                replayer = Replayer(aws.sqs, dlq_url, target, selection=Selection(), concurrency=workers,
                                    keep_matching=0)
                await audited(ReplayAudit(convex, operator="bench"), replayer.report, replayer.run)
                moved = replayer.report.moved
            seconds = time.perf_counter() - started
            # Each empty tail costs two 1-s long polls: counted, as an operator waits for them too.
            trial = {"kind": name, "workers": workers, "moved": moved, "seconds": round(seconds, 2),
                     "per_second": round(moved / seconds, 1), "target_depth": depth(sync_sqs, target),
                     "dlq_left": depth(sync_sqs, dlq_url)}
            log(f"  {trial}")
            results["trials"].append(trial)
            sync_sqs.delete_queue(QueueUrl=target)  # keep LocalStack's state the same for every trial
    rate = {(kind, workers): statistics.median(t["per_second"] for t in results["trials"]
                                              if (t["kind"], t["workers"]) == (kind, workers))
            for kind in ("raw", "replay") for workers in (1, 4)}
    results["median_per_second"] = {f"{kind}x{workers}": value for (kind, workers), value in rate.items()}
    results["ratio_same_workers_1"] = round(rate[("replay", 1)] / rate[("raw", 1)], 2)
    results["ratio_same_workers_4"] = round(rate[("replay", 4)] / rate[("raw", 4)], 2)
    results["ratio_default_vs_raw_loop"] = round(rate[("replay", 4)] / rate[("raw", 1)], 2)
    return results


# --- (b) reconcile ------------------------------------------------------------------------------------

BARE_LISTING = """
import asyncio, json, sys, time
from s3convex.adapters.aws import open_clients
from s3convex.settings import load_settings
async def main():
    settings = load_settings()
    started = time.perf_counter()
    count = 0
    after = ""
    async with open_clients(settings.aws) as aws:
        while True:  # continued by StartAfter, as reconcile does (LocalStack's tokens break on non-ASCII)
            page = await aws.s3.list_objects_v2(Bucket=settings.aws.bucket, MaxKeys=1000, StartAfter=after)
            keys = [item["Key"] for item in page.get("Contents", [])]
            count += len(keys)
            if not page.get("IsTruncated") or not keys:
                break
            after = keys[-1]
    print(json.dumps({"objects": count, "seconds": time.perf_counter() - started}))
asyncio.run(main())
"""


# Peak RSS is the child's own VmHWM, read at exit: wait4's ru_maxrss would include the
# bench's own memory, which a forked child counts as its high-water mark until exec.
MEASURED = """
import atexit, os, runpy, sys
def record_peak():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["OPS_BENCH_PEAK_FILE"], "w") as out:
        out.write(peak)
atexit.register(record_peak)
kind, target, *rest = sys.argv[1:]
sys.argv = [target, *rest]
if kind == "module":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
"""


def run_measured(kind: str, target: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``python -m target args`` (kind "module") or a code string; wall time, peak RSS."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r") as peak:
        done = subprocess.run([sys.executable, "-c", MEASURED, kind, target, *args], cwd=ROOT,
                              env={**env, "OPS_BENCH_PEAK_FILE": peak.name}, stdout=out, stderr=err)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        peak_kb = int(peak.read() or 0)
    return {"exit": done.returncode, "wall_seconds": round(wall, 2),
            "peak_rss_mb": round(peak_kb / 1024, 1), "stdout": stdout, "stderr": stderr[-2000:]}


def parse_stdout(run: dict[str, Any]) -> Any:
    try:
        return json.loads(run.pop("stdout"))
    except ValueError:
        raise SystemExit(f"child failed (exit {run['exit']}):\n{run['stderr']}") from None


def upload(s3: Any, bucket: str, count: int) -> dict[str, tuple[int, str]]:
    def put(i: int) -> tuple[str, int, str]:
        key = f"sessions/s-{i % 997:03d}/scenes/sc-{i % 7}/v1/{i:07d}-ü.mp4"
        body = f"object {i}".encode()
        return key, len(body), s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')

    with ThreadPoolExecutor(16) as pool:
        return {key: (size, etag) for key, size, etag in pool.map(put, range(count), chunksize=64)}


async def seed_convex(convex: ConvexClient, bucket: str, objects: dict[str, tuple[int, str]]) -> dict[str, int]:
    """Records for the bucket with drift: 1% missing, 0.5% changed, 0.5% gone."""
    drift = {"missing": 0, "changed": 0, "gone": 0}
    events: list[dict[str, Any]] = []
    t0 = 1_790_000_000_000

    async def flush() -> None:
        for start in range(0, len(events), 500):
            await convex.mutation("assets:applyEvents", {"events": events[start:start + 500]})
        events.clear()

    for i, (key, (size, etag)) in enumerate(sorted(objects.items())):
        if i % 100 == 0:
            drift["missing"] += 1
            continue
        changed = i % 200 == 1
        drift["changed"] += changed
        events.append({"type": "created", "bucket": bucket, "key": key, "eventName": "ObjectCreated:Put",
                       "eventTime": t0 + i, "size": size + changed, "etag": etag, "etagKind": "md5",
                       "url": f"https://cdn.example/{key}"})
        if i % 200 == 2:
            drift["gone"] += 1
            events.append({"type": "created", "bucket": bucket, "key": key + ".gone",
                           "eventName": "ObjectCreated:Put", "eventTime": t0 + i, "size": 1})
        if len(events) >= 5000:
            await flush()
    await flush()
    return drift


async def convex_walk(convex: ConvexClient, bucket: str, page_size: int) -> dict[str, Any]:
    started = time.perf_counter()
    count, pages = 0, 0
    async for page in convex_pages(convex, "assets:listByBucket", {"bucket": bucket},
                                   page_size=page_size):
        count, pages = count + len(page.items), pages + 1
    seconds = time.perf_counter() - started
    return {"records": count, "pages": pages, "seconds": round(seconds, 2),
            "ms_per_page": round(seconds * 1000 / pages, 1)}


async def bench_reconcile(endpoint: str, convex_url: str, admin_key: str, count: int) -> dict[str, Any]:
    bucket = f"bench-reconcile-{secrets.token_hex(4)}"
    s3 = boto("s3", endpoint)
    s3.create_bucket(Bucket=bucket)  # no notifications: the bench fills it behind the consumer's back
    log(f"reconcile bench: uploading {count} objects")
    started = time.perf_counter()
    objects = upload(s3, bucket, count)
    upload_s = time.perf_counter() - started
    log(f"  uploaded in {upload_s:.0f} s; seeding Convex")
    started = time.perf_counter()
    async with ConvexClient(convex_url, SecretStr(admin_key), timeout=120) as convex:
        drift = await seed_convex(convex, bucket, objects)
        seed_s = time.perf_counter() - started
        del objects
        log(f"  seeded in {seed_s:.0f} s; expected drift {drift}")
        walk = await convex_walk(convex, bucket, 500)
    log(f"  Convex listByBucket walk alone: {walk}")

    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION,
           "S3_BUCKET": bucket, "CONVEX_URL": convex_url, "CONVEX_DEPLOY_KEY": admin_key,
           "PYTHONPATH": str(ROOT)}
    idle = run_measured("code", "import consumer.cli", [], env)
    bares, reconciles = [], []
    for _ in range(2):  # interleaved: LocalStack answers a listing faster once it has made one
        bare = run_measured("code", BARE_LISTING, [], env)
        bare["result"] = parse_stdout(bare)
        log(f"  bare ListObjectsV2 walk: {bare['wall_seconds']} s wall, {bare['peak_rss_mb']} MB")
        bares.append(bare)
        reconcile = run_measured("module", "s3convex", ["reconcile", "--json", "--show", "20"], env)
        report = parse_stdout(reconcile)
        reconcile["summary"] = {k: report[k] for k in ("objects", "records", "missing", "gone", "changed",
                                                       "seconds", "consistent")}
        log(f"  reconcile: {reconcile['wall_seconds']} s wall, {reconcile['peak_rss_mb']} MB, "
            f"{reconcile['summary']}")
        reconciles.append(reconcile)
    found = reconciles[-1]["summary"]
    bare_s = statistics.median(b["result"]["seconds"] for b in bares)
    bare_wall = statistics.median(b["wall_seconds"] for b in bares)
    peak = max(r["peak_rss_mb"] for r in reconciles)
    return {
        "objects": count, "upload_seconds": round(upload_s, 1), "seed_seconds": round(seed_s, 1),
        "expected_drift": drift, "convex_listByBucket_walk": walk,
        "python_cli_import_only": {k: idle[k] for k in ("wall_seconds", "peak_rss_mb")},
        "bare_listing": bares, "reconcile": reconciles,
        "drift_found_matches": (found["missing"], found["changed"], found["gone"])
        == (drift["missing"], drift["changed"], drift["gone"]),
        "time_ratio_wall": round(statistics.median(r["wall_seconds"] for r in reconciles) / bare_wall, 2),
        "time_ratio_work": round(statistics.median(r["summary"]["seconds"] for r in reconciles) / bare_s, 2),
        # Round by round (the first listing of a bucket is slower on LocalStack than the next).
        "time_ratio_work_per_round": [round(r["summary"]["seconds"] / b["result"]["seconds"], 2)
                                      for b, r in zip(bares, reconciles, strict=True)],
        "reconcile_peak_rss_mb": peak, "rss_target_mb": 200, "rss_ok": peak < 200,
    }


# --- main --------------------------------------------------------------------------------------------

async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="DLQ messages per replay trial")
    parser.add_argument("--rounds", type=int, default=3, help="replay trials per configuration")
    parser.add_argument("--objects", type=int, default=10_000, help="objects in the reconcile bucket")
    parser.add_argument("--skip-replay", action="store_true")
    parser.add_argument("--skip-reconcile", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ops_bench.json")
    args = parser.parse_args()

    os.environ.update({**CREDENTIALS, "AWS_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
                       "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"})
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    admin_key = "bench-" + secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="ops-bench-") as tmp, LocalStack(Path(tmp)) as endpoint:
        convex = start_local_convex(admin_key)
        try:
            log(f"LocalStack {endpoint}, Convex {convex.url}")
            if not args.skip_replay:
                env = {"AWS_ENDPOINT_URL": endpoint, "S3_BUCKET": f"bench-replay-{secrets.token_hex(4)}",
                       "SQS_QUEUE_NAME": "bench-events", "SQS_DLQ_NAME": "bench-events-dlq",
                       "CONVEX_URL": convex.url, "CONVEX_DEPLOY_KEY": admin_key}
                os.environ.update(env)
                settings = load_infra_settings()
                Provisioner.from_settings(settings).up()
                sqs = boto("sqs", endpoint)
                dlq_url = sqs.get_queue_url(QueueName="bench-events-dlq")["QueueUrl"]
                results["replay"] = await bench_replay(settings, sqs, convex.url, admin_key, dlq_url,
                                                       args.messages, env["S3_BUCKET"], args.rounds)
            if not args.skip_reconcile:
                results["reconcile"] = await bench_reconcile(endpoint, convex.url, admin_key, args.objects)
        finally:
            convex.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
