"""``s3convex health``: is everything the consumer depends on there and reachable?

Checks, run concurrently, each under a timeout:

- ``s3``: the bucket answers HeadBucket;
- ``queue`` / ``dlq``: both exist, with their depths; the queue redrives to the DLQ; a DLQ
  holding messages is a warning (someone should look: ``s3convex replay list``);
- ``notification``: the bucket notifies the queue exactly as ``infra up`` configures it;
- ``convex``: the deployment answers with this key and the functions the service calls exist;
- ``consistency``: a sample of objects agrees with Convex (skipped if S3 or Convex failed).
  Objects changed in the last minute (``--settle``) are left out (their events may be in flight); a
  difference is a warning, not a failure — ``s3convex reconcile`` says more.

Status per check: ok, warn, fail (or skipped). Exit 0 unless a check failed.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from s3convex.adapters.aws import AwsClients
from s3convex.adapters.convex import ConvexClient, FunctionKind
from s3convex.adapters.sqs_batch import queue_depth
from s3convex.consumer.ops.clients import clients
from s3convex.consumer.ops.output import JsonOption, console, emit
from s3convex.consumer.ops.reconcile import S3Object, judge, s3_pages
from s3convex.core.errors import ConvexFunctionError, NotFound, SyncError
from s3convex.settings import Settings

Status = Literal["ok", "warn", "fail", "skipped"]

# What the service calls, each with harmless arguments: a query that finds nothing, a
# mutation given no events. An absent function fails with ConvexFunctionError.
_PROBE_BUCKET = "s3convex-health-probe"
FUNCTION_PROBES: tuple[tuple[FunctionKind, str, dict[str, Any]], ...] = (
    ("mutation", "assets:applyEvents", {"events": []}),
    ("query", "assets:getByKey", {"bucket": _PROBE_BUCKET, "key": "probe"}),
    ("query", "assets:history", {"bucket": _PROBE_BUCKET, "key": "probe", "limit": 1}),
    ("query", "assets:listByBucket", {"bucket": _PROBE_BUCKET,
                                      "paginationOpts": {"numItems": 1, "cursor": None}}),
    ("query", "operations:listReplayRuns", {"limit": 1}),
    # The daemon records each DLQ episode and `s3convex trace` reads them (convex/trace.ts):
    # a deployment that predates them fails here, not at the first dead letter.
    ("mutation", "trace:recordDeadLetters", {"rows": []}),
    ("query", "trace:deadLetters", {"bucket": _PROBE_BUCKET, "key": "probe", "limit": 1}),
)


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
    ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "data": self.data, "ms": self.ms}


@dataclass
class HealthReport:
    checks: list[Check]

    @property
    def healthy(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "checks": [c.to_dict() for c in self.checks]}


class HealthChecker:
    def __init__(self, settings: Settings, aws: AwsClients, convex: ConvexClient, *,
                 sample: int = 20, sample_scan: int = 5000, settle_seconds: float = 60.0,
                 timeout: float = 15.0, rng: random.Random | None = None) -> None:
        self._s = settings
        self._aws = aws
        self._convex = convex
        self._sample = sample
        self._sample_scan = sample_scan
        self._settle_ms = settle_seconds * 1000
        self._timeout = timeout
        self._rng = rng or random.Random()
        self._queue_arn: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def run(self) -> HealthReport:
        s3, convex = (asyncio.create_task(self._timed("s3", self._check_s3)),
                      asyncio.create_task(self._timed("convex", self._check_convex)))
        queue = asyncio.create_task(self._timed("queue", self._check_queue))
        dlq = asyncio.create_task(self._timed("dlq", self._check_dlq))
        notification = asyncio.create_task(self._timed("notification", self._check_notification))
        cleanup = asyncio.create_task(self._timed("cleanup", self._check_cleanup))
        first = await asyncio.gather(s3, queue, dlq, notification, convex)
        if first[0].status == "fail" or first[4].status == "fail":
            sample = Check("consistency", "skipped", "needs S3 and Convex")
        elif self._sample == 0:
            sample = Check("consistency", "skipped", "--sample 0")
        else:
            sample = await self._timed("consistency", self._check_sample)
        lifecycle = await cleanup
        # Shown when there is something to see, or when it could not be looked at.
        return HealthReport([*first, sample, *([lifecycle] if lifecycle.status != "ok" else [])])

    async def _timed(self, name: str, check: Callable[[], Awaitable[Check]]) -> Check:
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(check(), self._timeout)
        except TimeoutError:
            result = Check(name, "fail", f"no answer within {self._timeout:.0f} s")
        except SyncError as exc:
            result = Check(name, "fail", str(exc))
        except Exception as exc:  # a check must report, never crash the others
            result = Check(name, "fail", f"{type(exc).__name__}: {exc}")
        result.ms = round((time.monotonic() - started) * 1000, 1)
        if name == "queue" and not self._queue_arn.done():
            self._queue_arn.set_result(None)
        return result

    async def _check_s3(self) -> Check:
        try:
            await self._aws.s3.head_bucket(Bucket=self._s.aws.bucket)
        except SyncError as exc:
            return Check("s3", "fail", str(exc))
        return Check("s3", "ok", f"bucket {self._s.aws.bucket} reachable")

    async def _queue_url(self, name: str, url: str | None = None) -> str | None:
        if url:
            return url
        try:
            return (await self._aws.sqs.get_queue_url(QueueName=name))["QueueUrl"]
        except NotFound:  # SQS said so; any other answer fails the check with what SQS said
            return None

    async def _check_queue(self) -> Check:
        s = self._s
        name = s.sqs.queue_name
        url = await self._queue_url(name, str(s.sqs.queue_url) if s.sqs.queue_url else None)
        if url is None:
            return Check("queue", "fail", f"queue {name} not found — run `s3convex infra up`")
        try:
            attributes = (await self._aws.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"]))["Attributes"]
        except SyncError as exc:
            return Check("queue", "fail", str(exc))
        self._queue_arn.set_result(attributes.get("QueueArn"))
        depth = await queue_depth(self._aws.sqs, url)
        try:
            target = json.loads(attributes.get("RedrivePolicy") or "{}").get("deadLetterTargetArn", "")
        except ValueError:
            target = ""
        if str(target).rsplit(":", 1)[-1] != s.sqs.dlq_name:
            return Check("queue", "warn", f"{name}: no redrive policy to {s.sqs.dlq_name}", depth)
        return Check("queue", "ok", f"{name}: {depth['visible']} waiting, {depth['inFlight']} in flight",
                     depth)

    async def _check_dlq(self) -> Check:
        name = self._s.sqs.dlq_name
        url = await self._queue_url(name)
        if url is None:
            return Check("dlq", "fail", f"queue {name} not found — run `s3convex infra up`")
        depth = await queue_depth(self._aws.sqs, url)
        if depth["visible"] or depth["inFlight"]:
            count = depth["visible"] + depth["inFlight"]
            return Check("dlq", "warn", f"{name}: {count} dead-lettered (`s3convex replay list`)", depth)
        return Check("dlq", "ok", f"{name}: empty", depth)

    async def _check_notification(self) -> Check:
        from s3convex.infra.desired import NOTIFICATION_ID, Desired, normalize_notification

        queue_arn = await self._queue_arn
        try:
            config = await self._aws.s3.get_bucket_notification_configuration(Bucket=self._s.aws.bucket)
        except SyncError as exc:
            return Check("notification", "fail", str(exc))
        ours = next((c for c in config.get("QueueConfigurations", []) if c.get("Id") == NOTIFICATION_ID), None)
        if ours is None:
            return Check("notification", "fail",
                         f"bucket has no {NOTIFICATION_ID} notification — run `s3convex infra up`")
        if queue_arn is None:
            return Check("notification", "fail", f"{NOTIFICATION_ID} targets {ours.get('QueueArn')}, "
                                                 "but the queue's ARN is unknown (see the queue check)")
        desired = Desired.from_settings(self._s.aws, self._s.sqs).notification(queue_arn)
        if normalize_notification(ours) != normalize_notification(desired):
            return Check("notification", "warn", f"{NOTIFICATION_ID} differs from what `infra up` sets",
                         {"current": normalize_notification(ours), "desired": normalize_notification(desired)})
        return Check("notification", "ok", f"{NOTIFICATION_ID} → {queue_arn.rsplit(':', 1)[-1]}")

    async def _check_convex(self) -> Check:
        missing = []
        for kind, path, args in FUNCTION_PROBES:
            try:
                await self._convex.call(kind, path, args)
            except ConvexFunctionError as exc:
                missing.append(f"{path} ({exc.error_message[:120]})")
        if missing:
            return Check("convex", "fail", "functions missing or failing: " + "; ".join(missing))
        return Check("convex", "ok", f"{self._s.convex.base_url}: {len(FUNCTION_PROBES)} functions answer")

    async def _check_cleanup(self) -> Check:
        """The lifecycle backlog (convex/LIFECYCLE.md): given-up removals warn."""
        backlog = dict(await self._convex.query("lifecycle:backlog", {"bucket": self._s.aws.bucket}))
        more = "+" if backlog.get("more") else ""
        failed, pending, due = (int(backlog[k]) for k in ("failed", "pending", "due"))
        detail = f"{pending}{more} pending ({due} due), {failed}{more} cleanup_failed"
        if failed:
            return Check("cleanup", "warn", detail + " (`s3convex assets list --status "
                                                     "cleanup_failed`, `s3convex cleanup --retry-failed`)",
                         backlog)
        return Check("cleanup", "ok", detail, backlog)

    async def _check_sample(self) -> Check:
        """Reservoir-sample objects among the first ``sample_scan`` listed (under the
        notification prefix), then compare each with its record."""
        chosen: list[S3Object] = []
        scanned, recent = 0, 0
        now = int(time.time() * 1000)
        async for page in s3_pages(self._aws.s3, self._s.aws.bucket, self._s.aws.notification_prefix, 1000):
            for obj in page:
                if not obj.key.endswith(self._s.aws.notification_suffix):
                    continue
                if now - obj.last_modified_ms < self._settle_ms:
                    recent += 1
                    continue
                scanned += 1
                if len(chosen) < self._sample:
                    chosen.append(obj)
                elif (slot := self._rng.randrange(scanned)) < self._sample:
                    chosen[slot] = obj
            if scanned >= self._sample_scan:
                break
        records = await asyncio.gather(*(self._convex.query(
            "assets:getByKey", {"bucket": self._s.aws.bucket, "key": o.key}) for o in chosen))
        drift = [d for d in (judge(o, r) for o, r in zip(chosen, records, strict=True)) if d]
        data = {"sampled": len(chosen), "scanned": scanned, "skippedRecent": recent,
                "drift": [d.to_dict() for d in drift]}
        if not chosen:
            return Check("consistency", "ok", "no objects old enough to sample", data)
        if drift:
            return Check("consistency", "warn", f"{len(drift)} of {len(chosen)} sampled objects differ "
                                                "from Convex (`s3convex reconcile`)", data)
        return Check("consistency", "ok", f"{len(chosen)} sampled objects agree with Convex", data)


def health_command(
    sample: Annotated[int, typer.Option("--sample", envvar="S3CONVEX_HEALTH_SAMPLE", min=0,
                                        help="Objects to compare with Convex.")] = 20,
    sample_scan: Annotated[int, typer.Option("--sample-scan", min=1,
                                             help="Sample among this many listed objects.")] = 5000,
    settle: Annotated[float, typer.Option("--settle", min=0,
                                          help="Leave out objects changed this recently (s).")] = 60.0,
    timeout: Annotated[float, typer.Option("--timeout", envvar="S3CONVEX_HEALTH_TIMEOUT", min=1,
                                           help="Seconds per check.")] = 15.0,
    json_output: JsonOption = False,
) -> None:
    """Check S3, both queues, the notification, Convex and a sample; exit 0 healthy, 1 not."""
    from s3convex.settings import load_settings

    settings = load_settings()

    async def run() -> HealthReport:
        async with clients(aws=settings.aws, convex=settings.convex, max_pool_connections=32,
                           convex_timeout=min(settings.convex.timeout, timeout),
                           convex_attempts=2) as opened:
            return await HealthChecker(settings, opened.aws, opened.convex, sample=sample,
                                       sample_scan=sample_scan, settle_seconds=settle,
                                       timeout=timeout).run()

    report = asyncio.run(run())
    emit(report.to_dict(), json_output=json_output, render=_print_report)
    raise typer.Exit(0 if report.healthy else 1)


def _print_report(document: dict[str, Any]) -> None:
    style = {"ok": "green", "warn": "yellow", "fail": "red", "skipped": "dim"}
    table = Table(show_header=True, header_style="bold")
    for column in ("Check", "Status", "Detail", "ms"):
        table.add_column(column, overflow="fold")
    for c in document["checks"]:
        table.add_row(c["name"], f"[{style[c['status']]}]{c['status']}[/]", c["detail"],
                      "" if c["ms"] is None else f"{c['ms']:.0f}")
    console().print(table)
    console().print("[green]healthy[/green]" if document["healthy"] else "[red]unhealthy[/red]")


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex health`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.command("health")(health_command)
