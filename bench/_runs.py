"""Moving events around (preload, capture, copies) and running one contender process.

Every contender is a child process, so its peak RSS (VmHWM) and CPU time (``wait4``'s rusage)
are its own, and its start-up cost counts the same for all of them.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote_plus

from _stack import BENCH, Stack

DAEMON = [sys.executable, "-m", "s3convex", "run"]
CONTENDERS = [sys.executable, str(BENCH / "_contenders.py")]
T = TypeVar("T")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Captured:
    key: str
    body: str


# --- preload ----------------------------------------------------------------------------------


def upload(stack: Stack, keys: Sequence[str], threads: int = 16) -> None:
    """Real uploads (PutObject), concurrently; S3 notifies the queue for each."""
    payload = secrets.token_bytes(512)

    def put(key: str) -> None:
        stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=payload,
                            ContentType="application/octet-stream")

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(put, keys):
            pass


def wait_for_depth(stack: Stack, wanted: int, timeout: float = 120.0) -> int:
    """S3 → SQS delivery is asynchronous: wait until the queue holds ``wanted`` messages."""
    deadline = time.monotonic() + timeout
    while (depth := stack.depth()) < wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    return depth


def take_all(stack: Stack, threads: int = 4) -> list[Captured]:
    """Receive and delete every message on the queue; keep the S3 notification bodies."""
    taken: list[Captured] = []
    lock = threading.Lock()

    def drain() -> None:
        empty = 0
        while empty < 2:
            batch = stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10,
                                              WaitTimeSeconds=1).get("Messages", [])
            if not batch:
                empty += 1
                continue
            empty = 0
            stack.sqs.delete_message_batch(QueueUrl=stack.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
            found = [Captured(_key_of(m["Body"]), m["Body"]) for m in batch if '"Records"' in m["Body"]]
            with lock:
                taken.extend(found)

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda _: drain(), range(threads)):
            pass
    return taken


def _key_of(body: str) -> str:
    return unquote_plus(json.loads(body)["Records"][0]["s3"]["object"]["key"])


def send_copies(stack: Stack, events: Sequence[Captured], threads: int = 8) -> dict[str, int]:
    """SendMessageBatch the captured bodies, unchanged; → key → when its copy was enqueued."""
    sent: dict[str, int] = {}

    def send(chunk: Sequence[Captured]) -> None:
        response = stack.sqs.send_message_batch(QueueUrl=stack.queue_url, Entries=[
            {"Id": str(i), "MessageBody": e.body} for i, e in enumerate(chunk)])
        if response.get("Failed"):
            raise RuntimeError(f"SendMessageBatch failed: {response['Failed'][:3]}")
        at = now_ms()
        for event in chunk:
            sent.setdefault(event.key, at)

    chunks = [events[i : i + 10] for i in range(0, len(events), 10)]
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(send, chunks):
            pass
    return sent


def send_paced(stack: Stack, events: Sequence[Captured], rate: float,
               threads: int = 4) -> tuple[dict[str, int], int]:
    """SendMessage each body on a fixed schedule (``rate`` per second), one message per event
    as S3 sends them; → (key → when SQS accepted it, how many sends started >50 ms late)."""
    sent: dict[str, int] = {}

    def send(event: Captured) -> None:
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=event.body)
        sent[event.key] = now_ms()

    return sent, run_paced(send, events, rate, threads)


def upload_paced(stack: Stack, keys: Sequence[str], rate: float, threads: int = 8) -> int:
    """PutObject each key on a fixed schedule (``rate`` per second); → how many uploads
    started >50 ms behind schedule."""
    payload = secrets.token_bytes(512)

    def put(key: str) -> None:
        stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=payload,
                            ContentType="application/octet-stream")

    return run_paced(put, keys, rate, threads)


def run_paced(call: Callable[[T], None], items: Sequence[T], rate: float, threads: int) -> int:
    """``call(item)`` for each item on a fixed schedule, on a thread pool; → how many calls
    started >50 ms behind schedule."""
    late = 0
    with ThreadPoolExecutor(threads) as pool:
        futures = []
        for item, due in zip(items, paced(rate, len(items)), strict=True):
            late += time.monotonic() - due > 0.05
            futures.append(pool.submit(call, item))
        for future in futures:
            future.result()
    return late


def empty_queue(stack: Stack) -> None:
    if stack.depth():
        take_all(stack)


# --- one contender ----------------------------------------------------------------------------


@dataclass
class Finished:
    started: float  # monotonic
    drained_at: float | None  # first time SQS counted nothing left (monotonic)
    exited_at: float
    exit_code: int
    peak_rss_mb: float
    cpu_s: float
    log_path: Path
    stdout: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def drain_s(self) -> float | None:
        return None if self.drained_at is None else self.drained_at - self.started

    @property
    def exit_s(self) -> float:
        return self.exited_at - self.started


class Contender:
    """A child process: started, watched (optional queue depth), stopped, measured."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.argv, self.env, self.cwd, self.log_path = argv, env, cwd, log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.started = time.monotonic()
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=log_file, start_new_session=True)

    def wait(self, timeout: float, *, drained: Callable[[], bool] | None = None,
             poll: float = 0.1) -> Finished:
        """Wait for exit (SIGTERM ``timeout`` s from now, SIGKILL 30 s later); meanwhile
        note when ``drained()`` first holds."""
        assert self.process is not None
        pid, deadline, drained_at, signalled = self.process.pid, time.monotonic() + timeout, None, 0
        output: list[bytes] = []
        peak_kb = 0
        reader = threading.Thread(target=lambda: output.append(self.process.stdout.read()), daemon=True)
        reader.start()
        while True:
            waited, status, usage = os.wait4(pid, os.WNOHANG)
            if waited == pid:
                exited_at = time.monotonic()
                break
            peak_kb = max(peak_kb, _high_water_kb(pid))
            if drained is not None and drained_at is None:
                probe = time.monotonic()
                if drained():
                    drained_at = probe
            if time.monotonic() > deadline and signalled < 2:
                log(f"  {self.argv[-1]}: timeout, stopping pid {pid}")
                os.kill(pid, signal.SIGTERM if signalled == 0 else signal.SIGKILL)
                signalled += 1
                deadline = time.monotonic() + 30
            time.sleep(poll)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        reader.join(5)
        return Finished(
            started=self.started, drained_at=drained_at, exited_at=exited_at,
            exit_code=self.process.returncode, peak_rss_mb=peak_kb / 1024,
            cpu_s=usage.ru_utime + usage.ru_stime, log_path=self.log_path,
            stdout=b"".join(output).decode(errors="replace"),
            lines=self.log_path.read_text(errors="replace").splitlines(),
        )

    def stop(self) -> None:
        """SIGTERM (graceful: the daemon finishes or releases in-flight work)."""
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGTERM)  # an exited child stays a zombie until wait

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                os.kill(self.process.pid, signal.SIGKILL)
                os.waitpid(self.process.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _high_water_kb(pid: int) -> int:
    """The process's peak RSS so far (VmHWM). Not wait4's ru_maxrss: exec records the old
    address space's peak there, so a child would report at least the bench's own RSS."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # exited (a zombie has no address space left)


def paced(rate: float, count: int) -> Iterator[float]:
    """Yield ``count`` moments ``1/rate`` apart (monotonic), sleeping until each."""
    start = time.monotonic()
    for i in range(count):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield due
