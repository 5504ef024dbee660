"""OpenTelemetry metrics: every count a test causes shows up exactly, in the right series.

The reader is session-scoped (the global meter provider can be set once per process) and its
data cumulative, so each test compares a snapshot taken before with one taken after.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from s3convex.adapters.convex import ConvexClient
from s3convex.consumer.apply import ConvexApplier
from s3convex.core.asset import AssetChange
from tests.stack import Stack

RECEIVED = "messaging.client.consumed.messages"
FINISHED = "s3convex.messages.finished"
APPLIED = "s3convex.events.applied"
FLUSH = "s3convex.convex.mutation.duration"
ATTEMPTS = "s3convex.convex.attempts"
LAG = "s3convex.sync.lag"
DLQ = "s3convex.dlq.sends"
STATUSES = ("applied", "stale", "duplicate", "error")
APPLY = {"convex.function": "assets:applyEvents"}


@dataclass(frozen=True)
class Point:
    value: float  # a counter's sum, or a histogram's count of samples
    total: float = 0.0  # a histogram's sum of samples


def snapshot(reader: InMemoryMetricReader) -> dict[tuple[str, tuple], Point]:
    """Every data point, keyed by (name, sorted attributes)."""
    points: dict[tuple[str, tuple], Point] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted(point.attributes.items())))
                    if hasattr(point, "count"):
                        points[key] = Point(point.count, point.sum)
                    else:
                        points[key] = Point(point.value)
    return points


class Deltas:
    def __init__(self, before: dict[tuple[str, tuple], Point],
                 after: dict[tuple[str, tuple], Point]) -> None:
        self._before, self._after = before, after

    def _pair(self, name: str, attributes: dict[str, str]) -> tuple[Point, Point]:
        """The sums over every series of ``name`` carrying (at least) ``attributes``."""
        wanted = set(attributes.items())

        def total(points: dict[tuple[str, tuple], Point]) -> Point:
            matching = [p for (n, attrs), p in points.items() if n == name and wanted <= set(attrs)]
            return Point(sum(p.value for p in matching), sum(p.total for p in matching))

        return total(self._before), total(self._after)

    def __call__(self, name: str, **attributes: str) -> float:
        """How much a counter grew, or how many samples a histogram gained."""
        before, after = self._pair(name, attributes)
        return after.value - before.value

    def total(self, name: str, **attributes: str) -> float:
        """How much a histogram's sum of samples grew."""
        before, after = self._pair(name, attributes)
        return after.total - before.total


def change(bucket: str, key: str, *, event_time: int, sequencer: str | None = "10",
           size: int | None = 1) -> AssetChange:
    return AssetChange(type="created", bucket=bucket, key=key, eventName="ObjectCreated:Put",
                       eventTime=event_time, sequencer=sequencer, size=size,
                       etag="c4ca4238a0b923820dcc509a6f75849b", etagKind="md5", kind="other")


async def test_one_flush_counts_each_result_by_status(
        convex: ConvexClient, metric_reader: InMemoryMetricReader) -> None:
    bucket = f"metrics-{uuid.uuid4().hex[:12]}"
    event_time = int(time.time() * 1000) - 5_000
    applier = ConvexApplier(convex)
    first = [change(bucket, "older-there", event_time=event_time),
             change(bucket, "same-again", event_time=event_time)]
    assert [r.status for r in await applier.apply(first)] == ["applied", "applied"]

    batch = [
        change(bucket, "new-1", event_time=event_time),                        # applied
        change(bucket, "new-2", event_time=event_time),                        # applied
        change(bucket, "new-3", event_time=event_time),                        # applied
        change(bucket, "older-there", event_time=event_time, sequencer="0F"),  # stale
        first[1],                                                              # duplicate
        change(bucket, "in-seconds", event_time=event_time // 1000),           # error
        change(bucket, "no-size", event_time=event_time, size=None),           # error
    ]
    before = snapshot(metric_reader)
    wall_started_ms = time.time() * 1000
    started = time.monotonic()
    results = await applier.apply(batch)
    elapsed_ms = (time.monotonic() - started) * 1000
    wall_finished_ms = time.time() * 1000
    delta = Deltas(before, snapshot(metric_reader))

    assert [r.status for r in results] == [
        "applied", "applied", "applied", "stale", "duplicate", "error", "error"]
    assert {s: delta(APPLIED, status=s) for s in STATUSES} == {
        "applied": 3, "stale": 1, "duplicate": 1, "error": 2}
    # One mutation: one duration sample, no longer than the call took.
    assert delta(FLUSH, **APPLY) == 1
    assert 0 < 1000 * delta.total(FLUSH, **APPLY) <= elapsed_ms
    # One lag sample per applied event (not for stale, duplicate or error), each the time from
    # the event to the commit.
    assert delta(LAG) == 3
    assert 3 * (wall_started_ms - event_time) - 3 <= 1000 * delta.total(LAG)
    assert 1000 * delta.total(LAG) <= 3 * (wall_finished_ms - event_time) + 3
    # The applier sends and counts; receiving and acknowledging are not its business.
    assert delta(RECEIVED) == 0
    assert all(delta(FINISHED, outcome=o) == 0 for o in ("deleted", "released", "dead_lettered"))


async def test_a_batch_convex_rejects_is_bisected_and_only_mutations_that_ran_are_timed(
        convex: ConvexClient, metric_reader: InMemoryMetricReader) -> None:
    bucket = f"metrics-{uuid.uuid4().hex[:12]}"
    event_time = int(time.time() * 1000)
    good = [change(bucket, f"good-{i}", event_time=event_time) for i in range(3)]
    # Nothing the handlers build is refused by the argument validator (see
    # tests/test_convex_contract.py); bypassing pydantic makes such a change.
    refused = AssetChange.model_construct(**{**good[0].model_dump(), "key": "refused",
                                             "type": "exploded"})
    before = snapshot(metric_reader)
    results = await ConvexApplier(convex).apply([good[0], refused, good[1], good[2]])
    delta = Deltas(before, snapshot(metric_reader))

    assert [r.status for r in results] == ["applied", "error", "applied", "applied"]
    # [g0, refused, g1, g2] is refused → [g0, refused] is refused → [g0] applies, [refused]
    # is refused alone; [g1, g2] applies: two mutations ran.
    assert delta(APPLIED, status="applied") == 3
    assert delta(FLUSH, **APPLY) == 2
    assert delta(LAG) == 3
    assert all(delta(APPLIED, status=s) == 0 for s in ("stale", "duplicate"))
    # Convex refused two mutations (the whole batch, then its first half) and the lone event.
    assert delta(ATTEMPTS, outcome="rejected", **APPLY) == 3
    assert delta(ATTEMPTS, outcome="ok", **APPLY) == 2


async def test_an_event_convex_refuses_is_counted_as_an_error(
        convex: ConvexClient, metric_reader: InMemoryMetricReader) -> None:
    bucket = f"metrics-{uuid.uuid4().hex[:12]}"
    good = change(bucket, "good", event_time=int(time.time() * 1000))
    refused = AssetChange.model_construct(**{**good.model_dump(), "key": "refused",
                                             "type": "exploded"})
    before = snapshot(metric_reader)
    results = await ConvexApplier(convex).apply([good, refused])
    delta = Deltas(before, snapshot(metric_reader))

    assert [r.status for r in results] == ["applied", "error"]
    assert delta(APPLIED, status="applied") == 1
    assert delta(APPLIED, status="error") == 1


@pytest.mark.e2e
async def test_drain_is_counted(stack: Stack, metric_reader: InMemoryMetricReader) -> None:
    started_ms = time.time() * 1000
    before = snapshot(metric_reader)
    for i in range(7):
        stack.put(f"metrics/{i}.txt", b"m")
    stack.send("poison")
    queued = await stack.wait_for_depth(9)  # 7 uploads, the poison, the s3:TestEvent(s)
    assert queued >= 9

    drain_started = time.monotonic()
    # One event per mutation, so the number of flushes is known: one per upload.
    assert await stack.drain(consumer_flush_events=1) == 0
    drain_ms = (time.monotonic() - drain_started) * 1000
    finished_ms = time.time() * 1000
    delta = Deltas(before, snapshot(metric_reader))

    assert delta(RECEIVED) == queued  # each message once: nothing was released and retried
    assert {s: delta(APPLIED, status=s) for s in STATUSES} == {
        "applied": 7, "stale": 0, "duplicate": 0, "error": 0}
    # The test events and the poison never reach Convex; the poison goes to the DLQ.
    assert delta(FINISHED, outcome="deleted") == queued - 1
    assert delta(FINISHED, outcome="dead_lettered") == 1
    assert delta(FINISHED, outcome="released") == 0
    assert delta(FLUSH, **APPLY) == 7
    assert 0 < 1000 * delta.total(FLUSH, **APPLY) <= drain_ms
    assert delta(ATTEMPTS, outcome="ok", **APPLY) == 7
    assert delta(ATTEMPTS, outcome="unavailable") == 0
    assert delta(DLQ, reason="poison") == 1
    assert delta(DLQ) == 1
    # messaging.process.duration: one sample per message, by how it ended.
    assert delta("messaging.process.duration", **{"s3convex.outcome": "deleted"}) == queued - 1
    assert delta("messaging.process.duration", **{"s3convex.outcome": "dead_lettered"}) == 1
    assert delta(RECEIVED, **{"messaging.system": "aws_sqs", "messaging.operation.name": "receive"}) == queued
    assert delta(LAG) == 7  # one lag sample per applied event
    # Each from the upload's eventTime (ms resolution) to its commit, inside this test's time.
    assert 0 <= 1000 * delta.total(LAG) <= 7 * (finished_ms - started_ms + 1)
