"""Real-time benchmark: S3 PutObject → a subscribed Convex client's callback, in one run.

    python bench/realtime_bench.py            # 1/s for 30 s and 100/s for 20 s (~3 min)
    python bench/realtime_bench.py --quick    # 1/s for 10 s and 100/s for 5 s (~2 min)

What it does, all on 127.0.0.1 (see bench/README.md, "Real-time benchmark"):

1. starts LocalStack (host mode, free port, temporary state), the local Convex server with a
   dev JWT issuer (``convex_local.launcher.DevAuth``), provisions bucket + queue + DLQ +
   notification, and runs the daemon (``s3convex run``, default settings) for the whole run;
2. per scenario (rate × subscribers): makes the sessions the uploads go to (``--session-size``
   uploads each, 10 video takes per scene), owned by the viewer (``access:setOwner``; with
   ``--users`` also granted to the other viewers), starts N ``convex/browser`` ConvexClients
   in one Node process (``tests/realtime/subscribe.ts``, one WebSocket each), each subscribed to ``sessions:live``
   of every one of those sessions with the viewer's JWT, waits until every subscription has
   its first result, then uploads on a fixed schedule (PutObject, 8 threads);
3. latency per (upload, client) = the client's callback first showing the asset
   ``available`` − the start of its PutObject (wall clock across processes on one machine);
   the split: S3 → Convex commit (the asset's ``updatedAt``, set by ``assets:applyEvents``)
   and commit → callback;
4. Convex commit → callback on its own: ``bench/convex_local_sync_bench.ts`` (HTTP writes,
   no S3, no daemon), run after the stack is stopped;
5. prints the table and the targets, PASS/FAIL; figures also to
   ``bench/results/realtime_bench.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _stack
import httpx
from _cpu import CpuMeter
from _report import fmt, percentile
from _rt_stages import STAGES, SignedPut, probe_sqs, stages
from _runs import DAEMON, log, run_paced
from _stack import CREDENTIALS, REGION, ROOT, Stack

sys.path.insert(0, str(ROOT))  # convex_local/ (also done by _stack)

from convex_local.launcher import DevAuth, DevToken, LocalConvex, start_local_convex

TSX = ROOT / "node_modules" / ".bin" / "tsx"
SUBSCRIBER = ROOT / "tests" / "realtime" / "subscribe.ts"
SUBSCRIBER_PY = ROOT / "tests" / "realtime" / "subscribe_py.py"
BENCH = ROOT / "bench"
SYNC_BENCH = BENCH / "convex_local_sync_bench.ts"
RESULTS = ROOT / "bench" / "results"

TARGET_S3_P99_MS = 500.0  # at 100 uploads/s with 100 subscribers
TARGET_COMMIT_P99_MS = 50.0


@dataclass
class Scenario:
    rate: float
    seconds: float
    subscribers: int
    users: int = 1  # distinct identities among the subscribers (1: all the same user)

    @property
    def name(self) -> str:
        users = f", {self.users} users" if self.users > 1 else ""
        return f"{self.rate:g}/s, {self.subscribers} sub{users}"

    @property
    def uploads(self) -> int:
        return max(1, round(self.rate * self.seconds))


@dataclass
class Outcome:
    scenario: str
    rate: float
    subscribers: int
    users: int
    uploads: int
    sessions: int
    late_puts: int
    put_ms_p50: float | None
    s3_to_client: dict[str, float | None]  # every (upload, client) pair
    s3_to_last_client: dict[str, float | None]  # per upload, the last of its clients
    s3_to_commit: dict[str, float | None]
    commit_to_client: dict[str, float | None]
    missing: int  # (upload, client) pairs never seen
    cpu_s: dict[str, float] = field(default_factory=dict)
    # CPU ms per upload of each process (load-independent, unlike the latencies)
    cpu_ms_per_upload: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict[str, float | None]] = field(default_factory=dict)  # _rt_stages.stages


def summary(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else None, "n": float(len(values))}


# --- the subscriber process -----------------------------------------------------------------


class Subscribers:
    """N ConvexClients in one Node process; ``seen[key]`` = when each client first saw it."""

    def __init__(self, url: str, tokens: list[str], clients: int, sessions: list[str],
                 log_path: Path, kind: str = "node") -> None:
        self.seen: dict[str, list[float]] = {}
        self.pending: dict[str, list[float | None]] = {}
        self.synced = threading.Event()
        self.closed = threading.Event()
        self.log = log_path.open("a")
        self._synced_count = 0
        self._closed_count = 0
        self._lock = threading.Lock()
        config = {"url": url, "tokens": tokens, "clients": clients, "emit": "keys",
                  "subscriptions": [{"query": "sessions:live", "args": {
                      "sessionId": s, "paginationOpts": {"numItems": 100, "cursor": None}}}
                      for s in sessions]}
        # All the clients in one process (client i uses tokens[i % len(tokens)]): Node's
        # convex/browser ConvexClient, or the PyPI client (--client python).
        argv = ([str(TSX), str(SUBSCRIBER)] if kind == "node" else [sys.executable, str(SUBSCRIBER_PY)])
        self.processes = [subprocess.Popen([*argv, json.dumps(config)],
                                           cwd=ROOT, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=self.log, text=True)]
        for process in self.processes:
            threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            event = json.loads(line)
            with self._lock:
                if event["event"] == "key":
                    self.seen.setdefault(event["key"], []).extend(event["times"])
                elif event["event"] == "synced":
                    self._synced_count += 1
                    if self._synced_count == len(self.processes):
                        self.synced.set()
                elif event["event"] == "closed":
                    for key, times in event["pending"].items():
                        self.pending.setdefault(key, []).extend(times)
        with self._lock:
            self._closed_count += 1
            if self._closed_count == len(self.processes):
                self.closed.set()

    def complete(self, keys: list[str], clients: int) -> bool:
        with self._lock:
            return all(len(self.seen.get(k, ())) == clients for k in keys)

    def close(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.closed.wait(10)
        self.log.close()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]


# --- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, stack: Stack, auth: DevAuth, workdir: Path, args: argparse.Namespace,
                 daemon_pid: int, trace: Path) -> None:
        self.stack = stack
        self.auth = auth
        self.workdir = workdir
        self.args = args
        self.daemon_pid = daemon_pid
        self.trace = trace
        self.uploader = uploader(stack, args.uploader)
        self.http = httpx.Client(timeout=60, headers={
            "Authorization": f"Convex {stack.convex.admin_key}"})
        self.run_id = secrets.token_hex(3)

    def mutation(self, path: str, args: dict[str, Any]) -> Any:
        response = self.http.post(f"{self.stack.convex.url}/api/mutation",
                                  json={"path": path, "args": args, "format": "json"})
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body}")
        return body["value"]

    def run(self, sc: Scenario, index: int) -> Outcome:
        size = self.args.session_size
        sessions = [f"rt-{self.run_id}-{index}-{k}" for k in range(-(-sc.uploads // size))]
        viewers: list[DevToken] = [self.auth.token(f"viewer-{self.run_id}-{index}-{u}")
                                   for u in range(sc.users)]
        for session in sessions:
            self.mutation("access:setOwner", {"sessionId": session,
                                              "ownerId": viewers[0].principal, "actor": "bench"})
            for viewer in viewers[1:]:
                self.mutation("access:grant", {"principal": viewer.principal,
                                               "scope": {"sessionId": session}, "actor": "bench"})
        # A session holds `size` uploads, 10 takes per scene (each a video of version 1).
        keys = [f"sessions/{sessions[i // size]}/scenes/scene-{i % size // 10:02d}/v1/"
                f"take-{i % size:03d}.mp4" for i in range(sc.uploads)]
        log(f"{sc.name}: {sc.uploads} uploads into {len(sessions)} sessions, "
            f"{sc.subscribers} ConvexClients × {len(sessions)} subscriptions")
        subscribers = Subscribers(self.stack.convex.url, [str(v) for v in viewers],
                                  sc.subscribers, sessions,
                                  self.workdir / f"subscribers-{index}.log", self.args.client)
        try:
            if not subscribers.synced.wait(120):
                raise RuntimeError("the subscribers did not get their first results")
            meter = CpuMeter({"localstack": _stack.localstack_pid(self.workdir),
                              "convex": self.stack.convex.process.pid,
                              "daemon": self.daemon_pid,
                              **{f"clients{n}": pid for n, pid in enumerate(subscribers.pids)}})
            meter.start()
            started: dict[str, float] = {}
            put_done: dict[str, float] = {}

            def put(key: str) -> None:
                t0 = time.time() * 1000
                self.uploader(key)
                started[key] = t0
                put_done[key] = time.time() * 1000

            late = run_paced(put, keys, sc.rate, threads=8)
            deadline = time.monotonic() + self.args.settle
            while not subscribers.complete(keys, sc.subscribers) and time.monotonic() < deadline:
                time.sleep(0.05)
            cpu = meter.stop(0.0)
        finally:
            subscribers.close()
        commits = {r["key"]: float(r["updatedAt"])
                   for r in self.stack.records(f"sessions/rt-{self.run_id}-{index}-")}
        each, last, to_commit, commit_to = [], [], [], []
        missing = 0
        for key in keys:
            times = subscribers.seen.get(key, [])
            missing += sc.subscribers - len(times)
            if key in commits:
                to_commit.append(commits[key] - started[key])
                commit_to.extend(t - commits[key] for t in times)
            each.extend(t - started[key] for t in times)
            if len(times) == sc.subscribers:
                last.append(max(times) - started[key])
        clients_cpu = sum(v for k, v in cpu.items() if k.startswith("clients"))
        cpu_s = {k: round(v, 2) for k, v in cpu.items() if not k.startswith("clients")}
        cpu_s["clients"] = round(clients_cpu, 2)
        per_upload = {k: round(v * 1000 / sc.uploads, 2) for k, v in cpu_s.items()
                      if k not in ("other", "machine")}
        put_ms = [put_done[k] - started[k] for k in started]
        if self.args.keep:  # per upload, for looking at when the slow ones happened
            (self.workdir / f"uploads-{index}.json").write_text(json.dumps({
                key: {"start": started.get(key), "put_done": put_done.get(key), "commit": commits.get(key),
                      "seen": subscribers.seen.get(key, [])} for key in keys}))
        return Outcome(sc.name, sc.rate, sc.subscribers, sc.users, sc.uploads, len(sessions),
                       late, percentile(put_ms, 50), summary(each), summary(last),
                       summary(to_commit), summary(commit_to), missing, cpu_s, per_upload,
                       stages(self.trace, started, put_done, subscribers.seen))


def uploader(stack: Stack, kind: str) -> Any:
    """``put(key)``: PutObject of a 512-byte video, signed (``SignedPut``) or through boto3."""
    payload = secrets.token_bytes(512)
    if kind == "boto3":
        return lambda key: stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=payload,
                                               ContentType="video/mp4")
    signed = SignedPut(stack.endpoint, stack.bucket, REGION, CREDENTIALS["AWS_ACCESS_KEY_ID"],
                       CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    return lambda key: signed.put(key, payload, "video/mp4")


def run_probe(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """LocalStack's S3 → SQS delay at 100/s, before the daemon takes the queue."""
    n = round(100 * args.probe_seconds)
    log(f"S3 → SQS probe: {n} uploads at 100/s, 4 long-polling receivers of our own")
    put = uploader(stack, args.uploader)
    keys = [f"probe/{secrets.token_hex(4)}/{i:05d}.bin" for i in range(n)]
    meter = CpuMeter({"localstack": _stack.localstack_pid(stack.workdir)})
    meter.start()
    result: dict[str, Any] = dict(probe_sqs(stack.sqs, stack.queue_url, put, keys, 100, run_paced))
    cpu = meter.stop(0.0)
    result["cpu_ms_per_upload"] = {k: round(cpu[k] * 1000 / n, 2) for k in ("localstack", "bench")}
    return result


def run_sync_bench(writes: int) -> dict[str, Any] | None:
    """``bench/convex_local_sync_bench.ts``: HTTP commit → ConvexClient callback, no S3."""
    log(f"convex_local_sync_bench.ts with BENCH_WRITES={writes}")
    done = subprocess.run([str(TSX), str(SYNC_BENCH)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "BENCH_WRITES": str(writes)}, timeout=600)
    if done.returncode != 0:
        log(f"convex_local_sync_bench.ts failed: {done.stderr[-2000:]}")
        return None
    sys.stderr.write(done.stdout)
    return json.loads((RESULTS / "convex_local_sync_bench.json").read_text())


# --- report ----------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return fmt(value, ".0f")


def report(outcomes: list[Outcome], sync: dict[str, Any] | None, args: argparse.Namespace,
           load_start: float, probe: dict[str, Any] | None = None) -> list[str]:
    lines = [
        "",
        f"real-time benchmark — LocalStack + local Convex server + s3convex run (default "
        f"settings), {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}, load average "
        f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
        f"clients: convex/browser ConvexClient (Node, ws), one WebSocket each, all in one Node "
        f"process; each subscribed to sessions:live of every session of its scenario "
        f"({args.session_size} uploads per session)",
        "CPU s over the upload window (+ settle): per process tree; 'other' = what the machine "
        "spent outside them (other jobs); 2 cores give at most 2 CPU-s per second",
        "latencies in ms; 'S3→client' from the start of PutObject to the client's callback "
        "showing the asset available (every upload × client; 'last' = per upload, its last "
        "client); 'S3→commit' to assets:applyEvents' updatedAt; 'commit→cb' from there",
        "",
    ]
    header = (f"{'scenario':<24}{'uploads':>8}{'late':>5}{'put p50':>8} │{'S3→client p50':>14}"
              f"{'p99':>6}{'max':>6} │{'last p99':>9} │{'S3→commit p50':>14}{'p99':>6} │"
              f"{'commit→cb p50':>14}{'p99':>6} │{'lost':>5} │ CPU s: LS / Cvx / daemon / "
              f"clients / bench / other / machine")
    lines += [header, "-" * len(header)]
    for o in outcomes:
        c = o.cpu_s
        lines.append(
            f"{o.scenario:<24}{o.uploads:>8}{o.late_puts:>5}{ms(o.put_ms_p50):>8} │"
            f"{ms(o.s3_to_client['p50']):>14}{ms(o.s3_to_client['p99']):>6}"
            f"{ms(o.s3_to_client['max']):>6} │{ms(o.s3_to_last_client['p99']):>9} │"
            f"{ms(o.s3_to_commit['p50']):>14}{ms(o.s3_to_commit['p99']):>6} │"
            f"{ms(o.commit_to_client['p50']):>14}{ms(o.commit_to_client['p99']):>6} │"
            f"{o.missing:>5} │ {c.get('localstack', 0):.1f} / {c.get('convex', 0):.1f} / "
            f"{c.get('daemon', 0):.1f} / {c.get('clients', 0):.1f} / {c.get('bench', 0):.1f} / "
            f"{c.get('other', 0):.1f} / {c.get('machine', 0):.1f}")
    lines += ["", "stages, p50 / p99 ms (from the local Convex server's trace; 's3→server' = "
                  "PutObject start → the daemon's applyEvents reaching the server), and CPU ms "
                  "per upload per process:"]
    for o in outcomes:
        parts = [f"{name} {ms(o.stages[name]['p50'])}/{ms(o.stages[name]['p99'])}"
                 for name in STAGES if name in o.stages]
        cpu = " ".join(f"{k} {v:.2f}" for k, v in o.cpu_ms_per_upload.items())
        lines += [f"  {o.scenario:<24} " + " | ".join(parts), f"  {'':<24} CPU ms/upload: {cpu}"]
    if probe is not None:
        a, b = probe["put→SentTimestamp"], probe["SentTimestamp→received"]
        lines += ["", f"S3 → SQS alone (no daemon, 100/s, 4 long-polling receivers): PutObject → "
                      f"SentTimestamp p50/p99 {ms(a['p50'])}/{ms(a['p99'])} ms, → received "
                      f"{ms(b['p50'])}/{ms(b['p99'])} ms; CPU ms/upload LocalStack "
                      f"{probe['cpu_ms_per_upload']['localstack']:.2f}, uploader "
                      f"{probe['cpu_ms_per_upload']['bench']:.2f}"]
    if sync is not None:
        lines += ["", f"Convex commit → callback alone (bench/convex_local_sync_bench.ts, "
                      f"{sync['writes']} sequential HTTP writes per scenario, no S3/daemon):"]
        for r in sync["results"]:
            each, every = r.get("callbackMsEach"), r.get("callbackMsAll")
            lines.append(
                f"  {r['scenario']:<11} write p50/p99 {r['writeMs']['p50']:.1f} / "
                f"{r['writeMs']['p99']:.1f} ms"
                + (f" | commit→callback p50/p99 {each['p50']:.1f} / {each['p99']:.1f} ms "
                   f"(last client {every['p50']:.1f} / {every['p99']:.1f})" if each else "")
                + f" | server CPU {r['serverCpuMsPerWrite']} ms/write")

    lines += ["", "targets:"]

    def target(label: str, value: float | None, limit: float, lost: int = 0) -> None:
        if value is None:
            lines.append(f"  {label}: not measured")
            return
        ok = value < limit and lost == 0
        extra = f", {lost} callbacks lost" if lost else ""
        lines.append(f"  {label}: {value:.0f} ms < {limit:.0f} ms{extra} → "
                     f"{'PASS' if ok else 'FAIL'}")

    for o in outcomes:
        if o.rate >= 100 and o.subscribers >= 100:
            who = "one user" if o.users == 1 else f"{o.users} users"
            target(f"p99 S3 → client at {o.rate:g}/s, {o.subscribers} subscribers ({who}), "
                   f"every callback", o.s3_to_client["p99"], TARGET_S3_P99_MS, o.missing)
            target(f"p99 S3 → client at {o.rate:g}/s, {o.subscribers} subscribers ({who}), "
                   f"last client per upload", o.s3_to_last_client["p99"], TARGET_S3_P99_MS,
                   o.missing)
    if sync is not None:
        for r in sync["results"]:
            if r.get("callbackMsAll"):
                target(f"p99 commit → callback, {r['scenario']} (last client)",
                       r["callbackMsAll"]["p99"], TARGET_COMMIT_P99_MS)
    lines += ["", "for reference (no target): commit → callback inside the runs above, where the "
                  "daemon's mutations, LocalStack and the clients share the cores:"]
    lines += [f"  {o.scenario:<24} p50 {ms(o.commit_to_client['p50'])} / p99 "
              f"{ms(o.commit_to_client['p99'])} ms" for o in outcomes]
    return lines


# --- main ------------------------------------------------------------------------------------


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    slow, fast = (10.0, 5.0) if args.quick else (30.0, 20.0)
    slow = args.slow_seconds or slow
    fast = args.fast_seconds or fast
    out = [Scenario(1, slow, 1), Scenario(1, slow, 100), Scenario(100, fast, 1),
           Scenario(100, fast, 100)]
    if args.users > 1:
        out.append(Scenario(100, fast, 100, users=args.users))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s at 1/s, 5 s at 100/s")
    parser.add_argument("--slow-seconds", type=float, default=0, help="length of the 1/s runs")
    parser.add_argument("--fast-seconds", type=float, default=0, help="length of the 100/s runs")
    parser.add_argument("--session-size", type=int, default=50,
                        help="uploads per session (each subscriber watches every session)")
    parser.add_argument("--users", type=int, default=10,
                        help="an extra 100/s, 100-subscriber run with this many distinct users "
                             "(1 skips it)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds to wait after the last upload for every callback")
    parser.add_argument("--sync-writes", type=int, default=0,
                        help="BENCH_WRITES for convex_local_sync_bench.ts (0: 50 quick, 200 full)")
    parser.add_argument("--keep", type=Path, help="keep the logs in this directory")
    parser.add_argument("--uploader", choices=["signed", "boto3"], default="signed",
                        help="PutObject signed by botocore's signer on a keep-alive connection "
                             "(a browser's cost), or through boto3 (~2.7 ms of client CPU each)")
    parser.add_argument("--probe-seconds", type=float, default=5.0,
                        help="before the daemon starts: uploads at 100/s this long with our own "
                             "SQS receivers, for LocalStack's S3 → SQS delay (0 skips)")
    parser.add_argument("--client", choices=["node", "python"], default="node",
                        help="the subscribers: convex/browser ConvexClients in one Node process, "
                             "or PyPI convex ConvexClients in one Python process")
    parser.add_argument("--daemon-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the daemon (e.g. CONSUMER_POLLERS=2); repeatable. "
                             "Without it the daemon runs with the defaults")
    parser.add_argument("--only", action="append", default=[],
                        help="run only this scenario, RATExSUBSCRIBERSxUSERS (e.g. 100x100x1); "
                             "repeatable")
    parser.add_argument("--daemon-profile", type=Path, metavar="PATH",
                        help="run the daemon under cProfile and write its stats to PATH "
                             "(it costs the daemon CPU: for call counts and hot spots, not figures)")
    parser.add_argument("--server-profile", type=Path, metavar="DIR",
                        help="run the local Convex server with V8's --cpu-prof, profiles into DIR")
    parser.add_argument("--json", type=Path, default=RESULTS / "realtime_bench.json")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    _stack.isolate_aws_environment()
    outcomes: list[Outcome] = []
    with contextlib.ExitStack() as exit_stack:
        workdir = _stack.work_dir(exit_stack, args.keep, "rt-")
        log("starting LocalStack and the local Convex server")
        endpoint = exit_stack.enter_context(_stack.localstack(workdir))
        auth = DevAuth.generate()
        trace = workdir / "convex-trace.jsonl"
        convex: LocalConvex = start_local_convex("bench-" + secrets.token_hex(16), env={
            **auth.env(), "CONVEX_LOCAL_TRACE": str(trace),
            **({"NODE_OPTIONS": f"--require {BENCH / '_cpu_profile.cjs'}",
                "CPU_PROFILE_DIR": str(args.server_profile.resolve())} if args.server_profile else {})})
        exit_stack.callback(convex.stop)
        stack = _stack.provision(endpoint, convex, workdir)
        probe = run_probe(stack, args) if args.probe_seconds > 0 else None
        daemon_log = (workdir / "daemon.log").open("a")
        exit_stack.callback(daemon_log.close)
        tuning = dict(item.split("=", 1) for item in args.daemon_env)
        command = DAEMON
        if args.daemon_profile:  # python -m cProfile -o PATH -m s3convex run
            command = [DAEMON[0], "-m", "cProfile", "-o", str(args.daemon_profile.resolve()), *DAEMON[1:]]
        daemon = subprocess.Popen(command, cwd=ROOT, env=stack.consumer_env(endpoint, **tuning),
                                  stdin=subprocess.DEVNULL, stdout=daemon_log, stderr=daemon_log)

        def stop_daemon() -> None:
            daemon.terminate()
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()

        exit_stack.callback(stop_daemon)
        bench = Bench(stack, auth, workdir, args, daemon.pid, trace)
        log("warm-up: 20 uploads at 20/s, 1 subscriber")
        bench.run(Scenario(20, 1, 1), 0)
        for index, sc in enumerate(scenarios(args), start=1):
            if args.only and f"{sc.rate:g}x{sc.subscribers}x{sc.users}" not in args.only:
                continue
            outcome = bench.run(sc, index)
            outcomes.append(outcome)
            log(f"  S3→client p50 {ms(outcome.s3_to_client['p50'])} p99 "
                f"{ms(outcome.s3_to_client['p99'])} ms, lost {outcome.missing}")
    sync = run_sync_bench(args.sync_writes or (50 if args.quick else 200))
    lines = report(outcomes, sync, args, load_start, probe)
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick,
        "session_size": args.session_size, "load_start": load_start,
        "load_end": os.getloadavg()[0], "uploader": args.uploader, "client": args.client, "daemon_env": args.daemon_env,
        "sqs_probe": probe,
        "outcomes": [asdict(o) for o in outcomes], "sync": sync}, indent=2) + "\n")
    failed = any(line.endswith("→ FAIL") for line in lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
