"""Consumer benchmark (issue 3): our daemon beside a naive consumer and a floor, in one run.

    python bench/consumer_bench.py                      # N=5,000, loopback and wan (~15 min)
    python bench/consumer_bench.py --quick              # small smoke run (~3 min)
    python bench/consumer_bench.py --events 2000 --profiles wan --set CONSUMER_POLLERS=8

What it does, all on 127.0.0.1 (see bench/README.md):

1. starts LocalStack (host mode, free port, temporary state) and the local Convex server,
   provisions a bucket, queue, DLQ and S3 → SQS notification;
2. preloads N real uploads and captures the N notification bodies S3 sent;
3. per profile (``loopback``; ``wan``: 10 ms each way through ``bench/latency_proxy.py`` in
   front of LocalStack and ``latencyMs: 20`` on the Convex server), for each contender — the
   floor, ``s3convex run --drain``, the naive consumer — resets Convex, re-sends the *same*
   captured bodies (SendMessageBatch) and lets the contender drain them;
4. per profile, two steady runs of ``s3convex run`` at 100 events/s: objects uploaded live
   (lag = S3 ``eventTime`` → Convex commit, the whole path) and the captured notifications
   re-sent (lag = SendMessage → Convex commit, the consumer's part alone);
5. our daemon draining 10,000 queued copies, for its peak RSS;
6. prints the table and the targets, PASS/FAIL.

Throughput is events / drain time, drain time running from the contender's process start
to the moment SQS first counts nothing visible, in flight or delayed (sampled every 0.1 s);
``exit s`` adds the contender's own empty-queue detection and shutdown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import _stack
from _cpu import CpuMeter
from _report import Result, describe, fmt, percentile, report
from _runs import (
    CONTENDERS,
    DAEMON,
    Captured,
    Contender,
    empty_queue,
    log,
    send_copies,
    send_paced,
    take_all,
    upload,
    upload_paced,
    wait_for_depth,
)
from _stack import CONVEX_WAN_LATENCY_MS, WAN_DELAY_MS, Stack


def count_problems(lines: list[str]) -> int:
    problems = 0
    for line in lines:
        with contextlib.suppress(ValueError):
            if json.loads(line).get("level") in ("warning", "error", "critical"):
                problems += 1
                continue
        if "Traceback" in line:
            problems += 1
    return problems


class Bench:
    def __init__(self, stack: Stack, args: argparse.Namespace, workdir: Path) -> None:
        self.stack = stack
        self.args = args
        self.workdir = workdir
        self.results: list[Result] = []
        self.tuning = dict(item.split("=", 1) for item in args.set)
        self.cpu_roots = {"localstack": _stack.localstack_pid(workdir),
                          "convex": stack.convex.process.pid}

    # --- drains of the captured events ----------------------------------------------------
    def drain(self, contender: str, profile: str, endpoint: str, events: list[Captured],
              run: str = "drain", round_: int = 1) -> Result:
        stack = self.stack
        empty_queue(stack)
        stack.reset_convex()
        label = f"{run} {profile}/{contender}" + (f" #{round_}" if self.args.repeat > 1 else "")
        log(f"{label}: queueing {len(events):,} copies")
        sent = send_copies(stack, events)
        wait_for_depth(stack, len(events), timeout=30)
        env = stack.consumer_env(endpoint, **self.tuning,
                                 BENCH_FLOOR_POLLERS=str(self.args.floor_pollers))
        argv = [*DAEMON, "--drain"] if contender == "ours" else [*CONTENDERS, contender]
        process = Contender(argv, env, self.workdir,
                            self.workdir / f"{run}-{profile}-{contender}-{round_}.log")
        log(f"{label}: draining")
        meter = CpuMeter(self.cpu_roots)
        meter.start()
        process.start()
        try:
            finished = process.wait(self.args.timeout, drained=lambda: stack.depth() == 0)
        finally:
            process.kill()
        cpu_used = meter.stop(finished.cpu_s)
        result = Result(
            run=run, contender=contender, profile=profile, round=round_, events=len(events),
            committed=None,
            drain_s=finished.drain_s, exit_s=finished.exit_s, exit_code=finished.exit_code,
            peak_rss_mb=finished.peak_rss_mb, cpu_s=finished.cpu_s, cpu_used=cpu_used,
            errors=count_problems(finished.lines),
        )
        if not contender.startswith("floor"):
            records = stack.records()
            result.committed = len(records)
            lags = [(r["updatedAt"] - sent[r["key"]]) / 1000 for r in records if r["key"] in sent]
            result.lag_p50_s, result.lag_p99_s = percentile(lags, 50), percentile(lags, 99)
            result.max_lag_s = max(lags, default=None)
        if finished.exit_code != 0:
            result.note = f"exit {finished.exit_code}; see {finished.log_path}"
        elif stack.depth():
            result.note = "queue not empty at exit"
        log(f"{label}: {describe(result)}")
        self.results.append(result)
        return result

    # --- steady rate --------------------------------------------------------------------------
    def steady(self, profile: str, endpoint: str, events: list[Captured], source: str,
               rate: float) -> Result:
        """``s3convex run`` while events arrive at a steady rate; their lag.

        ``captured``: the captured notifications re-sent with SendMessage on a fixed schedule,
        one message per event as S3 sends them; lag = SendMessage → the Convex commit
        (``updatedAt``), the consumer's part of the path.
        ``live``: real PutObjects on a fixed schedule, straight to LocalStack (the upload is not
        the consumer's round trip); lag = the notification's ``eventTime`` → the commit, the
        whole path, S3's own delivery included.
        """
        stack, args = self.stack, self.args
        empty_queue(stack)
        stack.reset_convex()
        count = int(rate * args.steady_seconds)
        if source == "captured":
            count = min(count, len(events))
        env = stack.consumer_env(endpoint, **self.tuning)
        process = Contender(DAEMON, env, self.workdir, self.workdir / f"steady-{source}-{profile}.log")
        meter = CpuMeter(self.cpu_roots)
        meter.start()
        process.start()
        try:
            time.sleep(3)  # the daemon is up and long-polling before the first event
            log(f"{profile}/steady: {source}, {count:,} events at {rate:g}/s")
            if source == "live":
                keys = [f"steady/{profile}/{i % 16:02d}/asset {i:06d}.bin" for i in range(count)]
                late = upload_paced(stack, keys, rate)
                sent: dict[str, int] | None = None
            else:
                sent, late = send_paced(stack, events[:count], rate)
            deadline = time.monotonic() + 60
            while (done := len(stack.records())) < count and time.monotonic() < deadline:
                time.sleep(0.5)
            process.stop()
            finished = process.wait(60)
        finally:
            process.kill()
        cpu_used = meter.stop(finished.cpu_s)
        records = stack.records()
        if sent is None:
            lags = [(r["updatedAt"] - r["eventTime"]) / 1000 for r in records]
        else:
            lags = [(r["updatedAt"] - sent[r["key"]]) / 1000 for r in records if r["key"] in sent]
        result = Result(
            run=f"steady-{source}", contender="ours", profile=profile, round=1, events=count,
            committed=len(records), max_lag_s=max(lags, default=None),
            drain_s=None, exit_s=finished.exit_s, exit_code=finished.exit_code,
            peak_rss_mb=finished.peak_rss_mb, cpu_s=finished.cpu_s, cpu_used=cpu_used,
            lag_p50_s=percentile(lags, 50), lag_p99_s=percentile(lags, 99),
            errors=count_problems(finished.lines),
            note=(f"{rate:g}/s for {count / rate:g} s, "
                  "max lag " + fmt(max(lags, default=None), ".2f", " s")
                  + (f"; {late} sends >50 ms behind schedule" if late else "")
                  + ("" if done >= count else f"; only {done} committed")),
        )
        log(f"{profile}/steady-{source}: {describe(result)}")
        self.results.append(result)
        return result


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Consumer benchmark: our daemon beside a naive consumer and a floor.")
    parser.add_argument("--events", type=int, default=5000, help="preloaded uploads N (5000)")
    parser.add_argument("--profiles", default="loopback,wan", help="loopback,wan (both)")
    parser.add_argument("--quick", action="store_true",
                        help="small smoke run: 300 events, 1,000 for RSS, 3 s steady")
    parser.add_argument("--contenders", default="floor,floor-botocore,ours,naive",
                        help="floor,floor-botocore,ours,naive")
    parser.add_argument("--rss-events", type=int, default=10_000,
                        help="messages queued for the peak-RSS run (10000; 0 skips it)")
    parser.add_argument("--steady-rate", type=float, default=100.0, help="events/s (100)")
    parser.add_argument("--steady-seconds", type=float, default=30.0, help="(30; 0 skips it)")
    parser.add_argument("--steady-live-rate", type=float, default=100.0,
                        help="uploads/s of the live steady run, lag from S3 eventTime (100; 0 skips it)")
    parser.add_argument("--floor-pollers", type=int, default=8, help="the floor's loops (8)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a daemon setting for every run of ours, e.g. CONSUMER_POLLERS=8")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of floor and ours per profile, alternating (1)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep LocalStack state and every contender's log in DIR")
    parser.add_argument("--timeout", type=float, default=900.0, help="per contender run (900 s)")
    parser.add_argument("--json", type=Path, default=_stack.BENCH / "results" / "consumer_bench.json",
                        help="where the figures also go (bench/results/consumer_bench.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rss_events, args.steady_seconds = 300, min(args.rss_events, 1000), 3.0
    args.profiles = [p for p in args.profiles.split(",") if p]
    args.contenders = [c for c in args.contenders.split(",") if c]
    for name in args.profiles:
        if name not in ("loopback", "wan"):
            parser.error(f"unknown profile {name!r}")
    for name in args.contenders:
        if name not in ("floor", "floor-botocore", "ours", "naive"):
            parser.error(f"unknown contender {name!r}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set wants NAME=VALUE, got {item!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _stack.isolate_aws_environment()
    began = time.monotonic()
    load_start = os.getloadavg()[0]
    with contextlib.ExitStack() as servers:
        workdir = _stack.work_dir(servers, args.keep, "consumer-bench-")
        log(f"starting LocalStack and the local Convex server (work dir {workdir})")
        endpoint = servers.enter_context(_stack.localstack(workdir))
        convex = servers.enter_context(_stack.local_convex())
        stack = _stack.provision(endpoint, convex, workdir)
        bench = Bench(stack, args, workdir)

        log(f"preloading {args.events:,} real uploads")
        started = time.monotonic()
        upload(stack, [f"preload/{i % 64:02d}/asset {i:06d}.bin" for i in range(args.events)])
        upload_rate = args.events / (time.monotonic() - started)
        wait_for_depth(stack, args.events)
        events = sorted(take_all(stack), key=lambda e: e.key)
        log(f"captured {len(events):,} notifications ({upload_rate:.0f} puts/s)")
        if len(events) != args.events:
            log(f"warning: expected {args.events:,} notifications, S3 sent {len(events):,}")
        preload = {"events": len(events), "upload_rate": upload_rate, "load_start": load_start,
                   "localstack": _localstack_version(endpoint)}

        for profile in args.profiles:
            aws = endpoint
            with contextlib.ExitStack() as wan:
                if profile == "wan":
                    proxy = wan.enter_context(_stack.latency_proxy(endpoint, WAN_DELAY_MS))
                    aws = proxy.url
                    bench.cpu_roots["proxy"] = proxy.pid
                    wan.callback(bench.cpu_roots.pop, "proxy")
                    stack.convex_latency(CONVEX_WAN_LATENCY_MS)
                    wan.callback(stack.convex_latency, 0)
                for round_ in range(1, args.repeat + 1):
                    for contender in ("floor", "floor-botocore", "ours"):
                        if contender in args.contenders:
                            bench.drain(contender, profile, aws, events, round_=round_)
                if "naive" in args.contenders:
                    bench.drain("naive", profile, aws, events)
                if args.steady_seconds > 0 and "ours" in args.contenders:
                    if args.steady_live_rate > 0:
                        bench.steady(profile, aws, events, "live", args.steady_live_rate)
                    bench.steady(profile, aws, events, "captured", args.steady_rate)
        if args.rss_events > 0 and "ours" in args.contenders:
            copies = [events[i % len(events)] for i in range(args.rss_events)]
            bench.drain("ours", "loopback", endpoint, copies, run="rss")
            bench.results[-1].note = (f"{args.rss_events:,} queued ({len(events):,} events, "
                                      f"each re-sent {args.rss_events / len(events):g}×)")

    lines = report(bench.results, args, preload)
    print("\n".join(lines))
    log(f"done in {(time.monotonic() - began) / 60:.1f} min")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "preload": preload, "args": {k: str(v) for k, v in vars(args).items()},
            "results": [{**asdict(r), "rate": r.rate} for r in bench.results],
            "report": lines}, indent=2))
    return 0


def _localstack_version(endpoint: str) -> str:
    import httpx

    with contextlib.suppress(Exception):
        return httpx.get(f"{endpoint}/_localstack/health", timeout=5).json().get("version", "?")
    return "?"


if __name__ == "__main__":
    sys.exit(main())
