"""Scale-out benchmark: 1, 2 and 4 daemons draining the same events from one queue, in one run.

    python bench/scaleout_bench.py                 # N=5,000, 1/2/4 replicas (~5 min)
    python bench/scaleout_bench.py --quick         # N=500 smoke run (~1.5 min)
    python bench/scaleout_bench.py --replicas 1,2,4,8 --set CONSUMER_MAX_CONCURRENT_FLUSHES=4

What it does, all on 127.0.0.1 (bench/README.md, "Scale-out benchmark"):

1. starts LocalStack and the local Convex server, provisions bucket, queue, DLQ, notification
   (``_stack.py``); preloads N real uploads and captures the N notification bodies;
2. per replica count R: resets Convex, re-sends the same N bodies (SendMessageBatch), starts R
   ``s3convex run --drain`` processes at once and waits until SQS counts nothing visible, in
   flight or delayed, and every process has exited;
3. checks Convex equals S3: one record per key, ``available``, with S3's ETag (ListObjectsV2),
   no record of a key S3 does not hold, nothing on the DLQ;
4. prints events/s overall and per replica, each replica's share of the events (from its
   ``flush`` log lines), CPU per replica and LocalStack's CPU.

On a 2-core machine the replicas share the cores with LocalStack and the Convex server, so the
total cannot grow with R the way it would on separate nodes: the per-replica figure is what one
replica delivers while the emulator is the bottleneck, not the capacity of a pod.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import _stack
from _cpu import CpuMeter
from _runs import (
    DAEMON,
    Captured,
    Contender,
    Finished,
    empty_queue,
    log,
    send_copies,
    take_all,
    upload,
    wait_for_depth,
)
from _stack import WAN_DELAY_MS, Stack


@dataclass
class Round:
    replicas: int
    profile: str
    events: int
    drain_s: float | None
    exit_s: float
    exit_codes: list[int]
    events_by_replica: list[int]
    cpu_s_by_replica: list[float]
    peak_rss_mb_by_replica: list[float]
    cpu_used: dict[str, float] = field(default_factory=dict)
    correct: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.events / self.drain_s if self.drain_s else None

    @property
    def rate_per_replica(self) -> float | None:
        return self.rate / self.replicas if self.rate else None


def flushed_events(lines: list[str]) -> int:
    """Events this daemon committed: the sum of its ``flush`` log lines' ``events``."""
    total = 0
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("msg") == "flush":
                total += int(record.get("events", 0))
    return total


def compare(stack: Stack, events: list[Captured]) -> list[str]:
    """What differs between Convex and S3 (empty: they are equal)."""
    etags: dict[str, str] = {}
    for page in stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket):
        etags.update({o["Key"]: o["ETag"].strip('"') for o in page.get("Contents", [])})
    records = {r["key"]: r for r in stack.records()}
    problems = []
    for key in sorted({e.key for e in events}):
        record = records.get(key)
        if record is None:
            problems.append(f"{key}: no record")
        elif record["status"] != "available" or record["etag"] != etags.get(key):
            problems.append(f"{key}: {record['status']} etag {record['etag']} (S3: {etags.get(key)})")
    problems += [f"{key}: a record of a key S3 does not hold" for key in sorted(set(records) - set(etags))]
    if dead := stack.depth(stack.dlq_url):
        problems.append(f"{dead} message(s) on the DLQ")
    return problems


def drain_with(stack: Stack, replicas: int, profile: str, endpoint: str, events: list[Captured],
               args: argparse.Namespace, workdir: Path, cpu_roots: dict[str, int]) -> Round:
    empty_queue(stack)
    stack.reset_convex()
    log(f"{profile}/{replicas} replica(s): queueing {len(events):,} copies")
    send_copies(stack, events)
    wait_for_depth(stack, len(events), timeout=60)
    env = stack.consumer_env(endpoint, **dict(item.split("=", 1) for item in args.set))
    daemons = [Contender([*DAEMON, "--drain"], env, workdir,
                         workdir / f"scaleout-{profile}-{replicas}-{i}.log") for i in range(replicas)]
    finished: list[Finished | None] = [None] * replicas

    def wait(i: int) -> None:
        finished[i] = daemons[i].wait(args.timeout)

    meter = CpuMeter(cpu_roots)
    meter.start()
    started = time.monotonic()
    for daemon in daemons:
        daemon.start()
    waiters = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(replicas)]
    for waiter in waiters:
        waiter.start()
    drained_at = None
    try:
        while any(w.is_alive() for w in waiters):
            if drained_at is None and stack.depth() == 0:
                drained_at = time.monotonic()
            time.sleep(0.1)
    finally:
        for daemon in daemons:
            daemon.kill()
    ended = time.monotonic()
    done = [f for f in finished if f is not None]
    cpu_used = meter.stop(sum(f.cpu_s for f in done))
    result = Round(
        replicas=replicas, profile=profile, events=len(events),
        drain_s=None if drained_at is None else drained_at - started, exit_s=ended - started,
        exit_codes=[f.exit_code for f in done],
        events_by_replica=[flushed_events(f.lines) for f in done],
        cpu_s_by_replica=[round(f.cpu_s, 2) for f in done],
        peak_rss_mb_by_replica=[round(f.peak_rss_mb, 1) for f in done], cpu_used=cpu_used)
    result.problems = compare(stack, events)
    if any(code != 0 for code in result.exit_codes) or len(done) != replicas:
        result.problems.append(f"exit codes {result.exit_codes}; logs in {workdir}")
    result.correct = not result.problems
    log(f"{profile}/{replicas}: {describe(result)}")
    return result


def describe(r: Round) -> str:
    rate = f"{r.rate:.0f} events/s" if r.rate else "not drained"
    per = f"{r.rate_per_replica:.0f}/replica" if r.rate_per_replica else "-"
    return (f"{rate} ({per}), drain {r.drain_s or 0:.1f} s, exit {r.exit_s:.1f} s, "
            f"shares {r.events_by_replica}, {'Convex = S3' if r.correct else r.problems[:3]}")


def report(rounds: list[Round], args: argparse.Namespace, load_start: float) -> list[str]:
    header = (f"{'profile':8} {'replicas':>8} {'events':>7} {'drain s':>8} {'exit s':>7} {'events/s':>9} "
              f"{'/replica':>9} {'×1':>5} │ {'events per replica':24} {'CPU s per replica':24} "
              f"{'RSS MB':>7} │ {'LS CPU s':>8} {'Cvx':>5} {'other':>6} │ correct")
    lines = [f"scale-out: {args.events:,} events, replicas {args.replicas}, load average "
             f"{load_start:.1f} → {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs", "", header,
             "-" * len(header)]
    single = {r.profile: r.rate for r in rounds if r.replicas == 1}
    for r in rounds:
        base = single.get(r.profile)
        ratio = f"{r.rate / base:.2f}" if r.rate and base else "-"
        lines.append(
            f"{r.profile:8} {r.replicas:>8} {r.events:>7,} {r.drain_s or 0:>8.1f} {r.exit_s:>7.1f} "
            f"{r.rate or 0:>9.0f} {r.rate_per_replica or 0:>9.0f} {ratio:>5} │ "
            f"{','.join(map(str, r.events_by_replica)):24} "
            f"{','.join(f'{c:.1f}' for c in r.cpu_s_by_replica):24} "
            f"{max(r.peak_rss_mb_by_replica, default=0):>7.0f} │ "
            f"{r.cpu_used.get('localstack', 0):>8.1f} {r.cpu_used.get('convex', 0):>5.1f} "
            f"{r.cpu_used.get('other', 0):>6.1f} │ {'yes' if r.correct else 'NO: ' + '; '.join(r.problems[:2])}")
    lines.append("")
    lines.append("correct = every key's record in Convex is `available` with S3's ETag, no extra "
                 "record, nothing on the DLQ, every daemon exited 0.")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="1, 2, 4 daemons draining the same events.")
    parser.add_argument("--events", type=int, default=5000, help="preloaded uploads N (5000)")
    parser.add_argument("--replicas", default="1,2,4", help="replica counts (1,2,4)")
    parser.add_argument("--profiles", default="loopback",
                        help="loopback and/or wan (+20 ms per S3/SQS round trip, +20 ms per Convex call)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 events")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a daemon setting for every replica, e.g. CONSUMER_POLLERS=8")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep LocalStack state and the logs in DIR")
    parser.add_argument("--timeout", type=float, default=900.0, help="per round (900 s)")
    parser.add_argument("--json", type=Path, default=_stack.BENCH / "results" / "scaleout_bench.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.events = 500
    args.replicas = [int(r) for r in args.replicas.split(",") if r]
    args.profiles = [p for p in args.profiles.split(",") if p]
    if not args.replicas or min(args.replicas) < 1:
        parser.error("--replicas wants positive counts, e.g. 1,2,4")
    for name in args.profiles:
        if name not in ("loopback", "wan"):
            parser.error(f"unknown profile {name!r}")
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set wants NAME=VALUE, got {item!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _stack.isolate_aws_environment()
    load_start = os.getloadavg()[0]
    began = time.monotonic()
    rounds: list[Round] = []
    with contextlib.ExitStack() as servers:
        workdir = _stack.work_dir(servers, args.keep, "scaleout-bench-")
        log(f"starting LocalStack and the local Convex server (work dir {workdir})")
        endpoint = servers.enter_context(_stack.localstack(workdir))
        convex = servers.enter_context(_stack.local_convex())
        stack = _stack.provision(endpoint, convex, workdir)
        cpu_roots = {"localstack": _stack.localstack_pid(workdir), "convex": convex.process.pid}
        log(f"preloading {args.events:,} real uploads")
        upload(stack, [f"scaleout/{i % 64:02d}/asset {i:06d}.bin" for i in range(args.events)])
        wait_for_depth(stack, args.events)
        events = sorted(take_all(stack), key=lambda e: e.key)
        log(f"captured {len(events):,} notifications")
        for profile in args.profiles:
            with contextlib.ExitStack() as wan:
                aws = endpoint
                if profile == "wan":
                    proxy = wan.enter_context(_stack.latency_proxy(endpoint, WAN_DELAY_MS))
                    aws = proxy.url
                    stack.convex_latency(_stack.CONVEX_WAN_LATENCY_MS)
                    wan.callback(stack.convex_latency, 0)
                for replicas in args.replicas:
                    rounds.append(drain_with(stack, replicas, profile, aws, events, args, workdir, cpu_roots))
    lines = report(rounds, args, load_start)
    print("\n".join(lines))
    log(f"done in {(time.monotonic() - began) / 60:.1f} min")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()}, "load_start": load_start,
            "rounds": [{**asdict(r), "rate": r.rate, "rate_per_replica": r.rate_per_replica} for r in rounds],
            "report": lines}, indent=2, default=str))
    return 0 if all(r.correct for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
