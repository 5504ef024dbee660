"""Cleanup benchmark (issue 12): the cleanup worker beside a bare DeleteObjects loop, in one run.

    python bench/cleanup_bench.py            # 10,000 objects
    python bench/cleanup_bench.py --quick    # 1,000 objects (~1 min)

All on 127.0.0.1: LocalStack (host mode) and the local Convex server. The same number of
objects is uploaded twice under two sessions (their records applied to Convex as the daemon
would). Then:

- **bare**: ``DeleteObjects`` with 1,000 keys per call, one call after another, over the first
  session's keys (aiobotocore, keys known in advance: no Convex at all);
- **ours**: ``lifecycle:deleteSession`` (grace 0) for the second session, then one
  ``CleanupWorker.run_once`` — paging due records from Convex, the guards, ``DeleteObjects``,
  ``markDeleted`` tombstones and history rows — in its own process, whose peak RSS is read.

Target: ours ≥ 0.8 × bare's objects/s, peak RSS ≤ 150 MB; everything gone from S3 and every
record ``deleted``. Prints the table, the CPU each process used during ours, and PASS/FAIL;
writes ``bench/results/cleanup_bench.json`` (``--quick``: ``cleanup_bench_quick.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack
from _cpu import CpuMeter
from _stack import ROOT, client, isolate_aws_environment, local_convex, localstack

RESULTS = ROOT / "bench" / "results" / "cleanup_bench.json"
QUICK_RESULTS = ROOT / "bench" / "results" / "cleanup_bench_quick.json"  # never over the full figures
BUCKET = "cleanup-bench"
TARGET_RATIO = 0.8
TARGET_RSS_MB = 150


def upload(endpoint: str, keys: list[str]) -> None:
    s3 = client("s3", endpoint, pool=32)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=b"x" * 64), keys))


async def seed_convex(url: str, admin_key: str, session: str, keys: list[str]) -> None:
    from pydantic import SecretStr

    from s3convex.adapters.convex import ConvexClient

    async with ConvexClient(url, SecretStr(admin_key)) as convex:
        now = int(time.time() * 1000)
        for i in range(0, len(keys), 500):
            await convex.mutation("assets:applyEvents", {"events": [{
                "type": "created", "bucket": BUCKET, "key": k, "eventName": "ObjectCreated:Put",
                "eventTime": now, "size": 64, "sessionId": session, "kind": "other"}
                for k in keys[i:i + 500]]})
        await convex.mutation("lifecycle:deleteSession", {
            "sessionId": session, "actor": "bench", "graceSeconds": 0})
        for _ in range(600):  # marking continues in scheduled mutations: wait for the last
            if (await convex.query("lifecycle:progress", {"sessionId": session}))["state"] != "marking":
                break
            await asyncio.sleep(0.2)


async def bare(endpoint: str, keys: list[str]) -> float:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(s3={"addressing_style": "path"}, retries={"mode": "standard"})
    async with get_session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                           config=config) as s3:
        started = time.perf_counter()
        for i in range(0, len(keys), 1000):
            answer = await s3.delete_objects(Bucket=BUCKET, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": False})
            assert not answer.get("Errors"), answer["Errors"][:3]
        return time.perf_counter() - started


def child(endpoint: str, url: str, admin_key: str, session: str) -> None:
    """Ours, in this process: one pass of the worker, timed inside (clients already open)."""
    import os

    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "S3_BUCKET": BUCKET, "CONVEX_URL": url,
                       "CONVEX_DEPLOY_KEY": admin_key})
    from s3convex.adapters.aws import open_clients
    from s3convex.adapters.convex import ConvexClient
    from s3convex.consumer.cleanup import CleanupWorker
    from s3convex.settings import AwsSettings, CleanupSettings, ConvexSettings, load

    calls: dict[str, list[float]] = {}  # where the time goes: call → [count, seconds]

    def timed(name: str, call: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            finally:
                slot = calls.setdefault(name if name != "convex" else args[0], [0, 0.0])
                slot[0] += 1
                slot[1] += time.perf_counter() - started
        return wrapper

    async def main() -> dict[str, Any]:
        aws = load(AwsSettings)
        async with (open_clients(aws, max_pool_connections=8) as opened,
                    ConvexClient.from_settings(load(ConvexSettings)) as convex):
            convex.query = timed("convex", convex.query)  # type: ignore[method-assign]
            convex.mutation = timed("convex", convex.mutation)  # type: ignore[method-assign]
            s3 = opened.s3
            s3.delete_objects = timed("s3:DeleteObjects", s3.delete_objects)
            worker = CleanupWorker(convex, s3, bucket=BUCKET, layout=aws.key_layout,
                                   settings=load(CleanupSettings), operator="bench")
            cpu = time.process_time()
            started = time.perf_counter()
            report = await worker.run_once(session=session)
            seconds = time.perf_counter() - started
            return {"seconds": seconds, "pythonCpuSeconds": round(time.process_time() - cpu, 3),
                    "calls": {k: {"count": c, "seconds": round(t, 3)} for k, (c, t) in calls.items()},
                    **report.to_dict()}

    print(json.dumps(asyncio.run(main())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 objects instead of 10,000")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    count = 1_000 if args.quick else 10_000
    isolate_aws_environment()
    with tempfile.TemporaryDirectory() as workdir, localstack(Path(workdir)) as endpoint, \
            local_convex() as convex:
        client("s3", endpoint).create_bucket(Bucket=BUCKET)
        bare_keys = [f"sessions/bare/f{i:05d}.bin" for i in range(count)]
        our_keys = [f"sessions/ours/f{i:05d}.bin" for i in range(count)]
        upload(endpoint, bare_keys + our_keys)
        asyncio.run(seed_convex(convex.url, convex.admin_key, "ours", our_keys))

        bare_s = asyncio.run(bare(endpoint, bare_keys))
        # CPU of each process during ours: the worker is Convex-bound when Convex's CPU ≈ its wall.
        meter = CpuMeter({"localstack": _stack.localstack_pid(Path(workdir)),
                          "convex": convex.process.pid})
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        meter.start()
        done = subprocess.run([sys.executable, __file__, "--child", endpoint, convex.url,
                               convex.admin_key, "ours"], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        ours = json.loads(done.stdout.strip().splitlines()[-1])
        now_reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = meter.stop(now_reaped.ru_utime + now_reaped.ru_stime - reaped.ru_utime - reaped.ru_stime)
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        left = client("s3", endpoint).list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)

    ratio = bare_s / ours["seconds"]
    result = {
        "objects": count, "bare": {"seconds": round(bare_s, 2), "perSecond": round(count / bare_s)},
        "ours": {"seconds": round(ours["seconds"], 2), "perSecond": round(count / ours["seconds"]),
                 "deleted": ours["deleted"], "failed": ours["failed"], "peakRssMb": round(rss_mb, 1),
                 "pythonCpuSeconds": ours["pythonCpuSeconds"], "calls": ours["calls"],
                 # whole child process (imports and setup too), so a little above the pass alone
                 "cpuSeconds": {k: round(cpu[k], 2) for k in ("convex", "localstack", "other")}},
        "ratio": round(ratio, 3), "leftInS3": left,
        "pass": {"ratio": ratio >= TARGET_RATIO, "rss": rss_mb <= TARGET_RSS_MB,
                 "complete": ours["deleted"] == count and left == 0},
    }
    print(f"{'':6} {'seconds':>8} {'objects/s':>10}")
    print(f"{'bare':6} {bare_s:8.2f} {count / bare_s:10.0f}")
    print(f"{'ours':6} {ours['seconds']:8.2f} {count / ours['seconds']:10.0f}   peak RSS {rss_mb:.0f} MB")
    print(f"  CPU s during ours: worker {ours['pythonCpuSeconds']:.2f} (the pass), "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["ours"]["cpuSeconds"].items()))
    print("  calls (count, wall s, overlapping):")
    for name, figures in sorted(ours["calls"].items(), key=lambda kv: -kv[1]["seconds"]):
        print(f"    {name:32} {figures['count']:5} {figures['seconds']:8.3f}")
    for name, ok in result["pass"].items():
        print(f"{name:9} {'PASS' if ok else 'FAIL'}")
    print(f"ratio {ratio:.2f} (target ≥ {TARGET_RATIO}), RSS target ≤ {TARGET_RSS_MB} MB")
    results = QUICK_RESULTS if args.quick else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(result["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
