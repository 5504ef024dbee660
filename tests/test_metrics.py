"""OpenTelemetry metrics: a drain is visible in the counters and histograms."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.stack import Stack

pytestmark = pytest.mark.e2e


def points(reader: InMemoryMetricReader) -> dict[tuple[str, tuple], float]:
    """Counter sums and histogram counts, keyed by (name, sorted attributes)."""
    values: dict[tuple[str, tuple], float] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted(point.attributes.items())))
                    values[key] = getattr(point, "value", None) or getattr(point, "count", 0)
    return values


async def test_drain_is_counted(stack: Stack, metric_reader: InMemoryMetricReader) -> None:
    before = points(metric_reader)
    for i in range(7):
        stack.put(f"metrics/{i}.txt", b"m")
    stack.send("poison")
    queued = await stack.wait_for_depth(9)  # 7 uploads, the poison, the s3:TestEvent(s)

    assert await stack.drain() == 0

    after = points(metric_reader)

    def delta(name: str, **attributes: str) -> float:
        key = (name, tuple(sorted(attributes.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("s3convex.messages.received") == queued
    assert delta("s3convex.events.applied", status="applied") == 7
    assert delta("s3convex.messages.finished", outcome="deleted") == queued - 1
    assert delta("s3convex.messages.finished", outcome="dead_lettered") == 1
    assert delta("s3convex.event.lag") == 7  # one lag sample per applied event
    assert delta("s3convex.flush.duration") >= 1
