"""One contender of the upload benchmark, uploading one directory, in its own process.

    python bench/_upload_contenders.py ours|s3transfer|naive --dir D --bucket B --endpoint URL
        --prefix P [--concurrency 10] [--part-size BYTES] [--convex-url URL --convex-key KEY]

Every contender first uploads a 1 KB object, untimed (:func:`warm_up_file`). Prints one JSON
line: bytes and files sent, the upload's wall seconds, this process's CPU seconds over the
upload (user + system, every thread), its resident set before the upload and its peak (``VmHWM`` from ``/proc/self/status``: the kernel's high-water mark, so no sampling
can miss a peak). Each contender runs in a fresh process so its peak is its own.

- **ours**: ``S3Storage.upload_dir`` (default settings but the part size and concurrency),
  status into the local Convex server through the sink the storage would make itself
  (``ConvexStatusSink``), timed on the way; the session is created before the clock starts.
- **s3transfer**: boto3's ``TransferManager`` (the engine behind ``upload_file``), the same
  threshold, part size and requests in flight, stock checksums; uploads only, no Convex.
- **naive**: one ``put_object`` after another, the file object as the body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import mimetypes
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig as BotoTransferConfig
from botocore.config import Config
from s3transfer.manager import TransferManager

from s3convex.adapters.convex import ConvexClient
from s3convex.settings import AwsSettings, ConvexSettings, UploadSettings, load
from s3convex.storage import (
    ConvexStatusSink,
    FailedFile,
    ManifestRef,
    S3Storage,
    SessionProgress,
    StatusUpdate,
    UploadedFile,
    UploadSubscriber,
)
from s3convex.storage.plan import MANIFEST_NAME
from s3convex.storage.status import (
    CREATE_SESSION,
    MAX_MANIFESTS_PER_REPORT,
    MAX_UPDATES_PER_REPORT,
    REPORT,
    SET_MANIFEST,
)

REGION = "us-east-1"


def memory_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process, in MB."""
    values: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def warm_up_file(args: argparse.Namespace) -> Path:
    """1 KB sent before the clock starts by every contender: connections open, the client's
    first-call costs paid, as in a worker that uploads one scene after another."""
    path = args.dir.parent / f".warm-up-{args.contender}"
    path.write_bytes(os.urandom(1024))
    return path


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def boto_client(endpoint: str, pool: int) -> Any:
    config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard"},
                    max_pool_connections=pool)
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, config=config)


# --- the contenders: each returns what it measured around its upload alone ----------------------


def run_s3transfer(args: argparse.Namespace, files: list[Path]) -> dict[str, Any]:
    client = boto_client(args.endpoint, args.concurrency + 4)
    config = BotoTransferConfig(multipart_threshold=args.part_size, multipart_chunksize=args.part_size,
                                max_concurrency=args.concurrency, use_threads=True)
    with TransferManager(client, config) as manager:
        manager.upload(str(warm_up_file(args)), args.bucket, f"{args.prefix}/warm-up").result()
        started = measure_start()
        futures = [manager.upload(str(path), args.bucket, f"{args.prefix}/{path.name}",
                                  extra_args={"ContentType": content_type(path)}) for path in files]
        for future in futures:
            future.result()
        return measure_stop(started)


def run_naive(args: argparse.Namespace, files: list[Path]) -> dict[str, Any]:
    client = boto_client(args.endpoint, 1)
    client.put_object(Bucket=args.bucket, Key=f"{args.prefix}/warm-up",
                      Body=warm_up_file(args).read_bytes())
    started = measure_start()
    for path in files:
        with path.open("rb") as body:
            client.put_object(Bucket=args.bucket, Key=f"{args.prefix}/{path.name}", Body=body,
                              ContentType=content_type(path))
    return measure_stop(started)


def run_ours(args: argparse.Namespace, files: list[Path]) -> dict[str, Any]:
    overrides = {"S3_BUCKET": args.bucket, "AWS_ENDPOINT_URL": args.endpoint,
                 "AWS_REGION": REGION, "S3_UPLOAD_CONCURRENCY": str(args.concurrency),
                 "S3_UPLOAD_PART_SIZE": str(args.part_size),
                 "S3_UPLOAD_MULTIPART_THRESHOLD": str(args.part_size), "_env_file": None}
    aws, upload = load(AwsSettings, **overrides), load(UploadSettings, **overrides)
    convex = load(ConvexSettings, CONVEX_URL=args.convex_url, CONVEX_DEPLOY_KEY=args.convex_key,
                  _env_file=None)
    session = args.prefix.replace("/", "-")
    clock = LastFileClock()

    async def main() -> dict[str, Any]:
        async with ConvexClient.from_settings(convex) as client:
            # The sink S3Storage makes for itself from these settings, timed on the way through.
            sink = TimedSink(ConvexStatusSink(client))
            async with S3Storage(aws, upload, sink=sink, subscribers=[clock]) as storage:
                await storage.create_session(session, owner="bench")
                await storage.upload_file(warm_up_file(args), session=session, scene="warm-up",
                                          version=1, name="warm-up.bin")
                await asyncio.sleep(upload.status_interval_ms / 1000)  # its report's rate gate
                started = measure_start()
                result = await storage.upload_dir(args.dir, session, "scene", 1)
                measured = measure_stop(started)
        measured["files_seconds"] = clock.last - started[0]
        measured["calls"] = [(fn, at - started[0]) for fn, at in sink.calls]
        measured["failed"] = [f"{f.file.name}: {f.error}" for f in result.failed]
        measured["status_errors"] = [str(e) for e in result.status_errors]
        measured["manifest"] = result.manifest is not None
        return measured

    return asyncio.run(main())


class TimedSink:
    """A StatusSink passing every call on, keeping when each was made: which of the mutations
    the Convex server counted fall in the timed window, and how close together the reports
    came (the bench checks that its counts match the server's)."""

    def __init__(self, inner: ConvexStatusSink) -> None:
        self.inner = inner
        self.calls: list[tuple[str, float]] = []

    async def create_session(self, session_id: str, owner_id: str, run_id: str | None) -> bool:
        self.calls.append((CREATE_SESSION, time.monotonic()))
        return await self.inner.create_session(session_id, owner_id, run_id)

    async def report(self, session_id: str, run_id: str, updates: Sequence[StatusUpdate],
                     manifests: Sequence[ManifestRef] = ()) -> SessionProgress | None:
        # One uploads:report per MAX_UPDATES_PER_REPORT updates, the first references with the
        # last of them, any more in calls of their own (ConvexStatusSink.report).
        calls = math.ceil(len(updates) / MAX_UPDATES_PER_REPORT) + max(
            0, math.ceil(len(manifests) / MAX_MANIFESTS_PER_REPORT) - (1 if updates else 0))
        for _ in range(calls):
            self.calls.append((REPORT, time.monotonic()))
        return await self.inner.report(session_id, run_id, updates, manifests)

    async def set_manifest(self, manifest: ManifestRef) -> None:
        self.calls.append((SET_MANIFEST, time.monotonic()))
        await self.inner.set_manifest(manifest)


class LastFileClock(UploadSubscriber):
    """When the last of the directory's files (not the manifest) was in S3: what follows is
    the manifest and the status's last flush."""

    last = 0.0

    def on_done(self, outcome: UploadedFile | FailedFile) -> None:
        if outcome.file.name != MANIFEST_NAME:
            self.last = max(self.last, time.monotonic())


def measure_start() -> tuple[float, float, float]:
    return time.monotonic(), cpu_seconds(), memory_mb()[0]


def measure_stop(started: tuple[float, float, float]) -> dict[str, Any]:
    wall, cpu, rss_before = started
    return {"seconds": time.monotonic() - wall, "cpu_s": cpu_seconds() - cpu,
            "rss_before_mb": rss_before, "peak_rss_mb": memory_mb()[1]}


CONTENDERS = {"ours": run_ours, "s3transfer": run_s3transfer, "naive": run_naive}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("contender", choices=sorted(CONTENDERS))
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--part-size", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--convex-url")
    parser.add_argument("--convex-key")
    args = parser.parse_args(argv)
    files = files_of(args.dir)
    measured = CONTENDERS[args.contender](args, files)
    measured.update(contender=args.contender, files=len(files),
                    bytes=sum(p.stat().st_size for p in files))
    print(json.dumps(measured), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
