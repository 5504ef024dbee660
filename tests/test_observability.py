"""Metrics and traces exported for real, by a running daemon (``s3convex run`` as a process).

- ``/metrics`` on ``HEALTH_PORT``, scraped after the daemon drained known events and parsed with
  prometheus_client's parser: the counts those events caused, the queue gauges, and every name
  the alert rules watch (tests/test_alerts_rules.py);
- OTLP/HTTP to a collector stand-in (an aiohttp server here decoding the protobuf requests with
  opentelemetry-proto): the same metrics, and a span per message naming its SQS message id —
  the ids Convex keeps in the history rows those messages produced, and the commit ids the
  flush log lines name.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import free_port
from tests.stack import Stack, log_lines

pytestmark = pytest.mark.e2e

# What a daemon's scrape holds once it has received, applied and dead-lettered something (as
# the Prometheus exporter names them: counters with _total, durations in _seconds).
EXPORTED = {
    "messaging_client_consumed_messages_total", "messaging_process_duration_seconds",
    "messaging_client_operation_duration_seconds", "s3convex_messages_finished_total",
    "s3convex_dlq_sends_total", "s3convex_events_applied_total",
    "s3convex_convex_mutation_duration_seconds", "s3convex_convex_attempts_total",
    "s3convex_sync_lag_seconds", "s3convex_queue_messages", "s3convex_queue_oldest_message_age_seconds",
    "s3convex_url_refresh_sweeps_total", "s3convex_url_refreshes_total",
    "s3convex_url_refresh_last_success_seconds",
    # the cleanup worker, a task of the same daemon (its gauges are there before any removal)
    "s3convex_cleanup_backlog", "s3convex_cleanup_backlog_age_seconds",
}
UPLOADS = 5


class Collector:
    """An OTLP/HTTP receiver on loopback: keeps every decoded export request."""

    def __init__(self) -> None:
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.traces: list[ExportTraceServiceRequest] = []
        self.content_types: set[str] = set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        self.metrics.append(ExportMetricsServiceRequest.FromString(await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def _traces(self, request: web.Request) -> web.Response:
        self.traces.append(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def __aenter__(self) -> Collector:
        app = web.Application()
        app.router.add_post("/v1/metrics", self._metrics)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def metric_sums(self) -> dict[tuple[str, tuple], float]:
        """The latest cumulative value of every counter series, and every histogram's count."""
        latest: dict[tuple[str, tuple], float] = {}
        for request in self.metrics:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        kind = metric.WhichOneof("data")
                        points = getattr(metric, kind).data_points
                        for point in points:
                            attrs = tuple(sorted((a.key, a.value.string_value) for a in point.attributes))
                            value = point.count if kind == "histogram" else (
                                point.as_int if point.WhichOneof("value") == "as_int" else point.as_double)
                            latest[(metric.name, attrs)] = value
        return latest

    def spans(self) -> list[Any]:
        return [span for request in self.traces for resource in request.resource_spans
                for scope in resource.scope_spans for span in scope.spans]

    def resource_attributes(self) -> dict[str, str]:
        for request in self.metrics:
            for resource in request.resource_metrics:
                return {a.key: a.value.string_value for a in resource.resource.attributes}
        return {}


def scrape_samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, attrs), v in samples.items() if n == name and wanted <= set(attrs))


def exported_names(text: str) -> set[str]:
    return {family.name + ("_total" if family.type == "counter" else "")
            for family in text_string_to_metric_families(text)}


async def _until(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.25)




async def test_a_running_daemon_exports_what_a_drain_caused(stack: Stack, tmp_path: Path) -> None:
    keys = [f"observe/{i}.txt" for i in range(UPLOADS)]
    for key in keys:
        stack.put(key, key.encode())
    stack.send("not json: poison")
    queued = await stack.wait_for_depth(UPLOADS + 1)  # the uploads, the poison, s3:TestEvent(s)
    assert queued >= UPLOADS + 1
    port = free_port()
    log_path = tmp_path / "daemon.log"

    async with Collector() as collector:
        daemon = stack.spawn(log_path=log_path, extra_env={
            "HEALTH_PORT": str(port), "QUEUE_METRICS_INTERVAL_SECONDS": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_SERVICE_NAME": "s3convex-under-test",
            "CONSUMER_FLUSH_EVENTS": "1"})
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                async def drained() -> str | None:
                    try:
                        response = await http.get("/metrics")
                    except httpx.TransportError:
                        return None  # not listening yet
                    samples = scrape_samples(response.text)
                    done = total(samples, "s3convex_messages_finished_total") >= queued
                    dlq = total(samples, "s3convex_queue_messages", queue="dlq", state="visible")
                    return response.text if done and dlq >= 1 else None

                text = await _until(drained, "the drain to show on /metrics")
                response = await http.get("/metrics")
                assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            await _until(lambda: _async(len(collector.spans()) >= queued), "spans over OTLP")
            await _until(lambda: _async(_otlp_done(collector, queued)), "metrics over OTLP")
        finally:
            daemon.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(daemon.wait, 30)
        assert exit_code == 0, log_path.read_text()[-3000:]

        _assert_scrape(text, queued)
        await _assert_otlp(stack, collector, keys, queued, log_path)


async def _async(value: Any) -> Any:
    return value


def _otlp_done(collector: Collector, queued: int) -> bool:
    sums = collector.metric_sums()
    finished = sum(v for (n, _), v in sums.items() if n == "s3convex.messages.finished")
    return finished >= queued


def _assert_scrape(text: str, queued: int) -> None:
    samples = scrape_samples(text)
    receive = {"messaging_system": "aws_sqs", "messaging_operation_name": "receive"}
    assert total(samples, "messaging_client_consumed_messages_total", **receive) == queued
    assert total(samples, "s3convex_events_applied_total", status="applied") == UPLOADS
    assert total(samples, "s3convex_events_applied_total", status="error") == 0
    assert total(samples, "s3convex_messages_finished_total", outcome="deleted") == queued - 1
    assert total(samples, "s3convex_messages_finished_total", outcome="dead_lettered") == 1
    assert total(samples, "s3convex_messages_finished_total", outcome="released") == 0
    assert total(samples, "s3convex_dlq_sends_total", reason="poison") == 1
    assert total(samples, "s3convex_convex_attempts_total", outcome="ok") == UPLOADS
    assert total(samples, "s3convex_convex_mutation_duration_seconds_count") == UPLOADS
    assert total(samples, "s3convex_sync_lag_seconds_count") == UPLOADS
    assert total(samples, "s3convex_sync_lag_seconds_bucket", le="+Inf") == UPLOADS
    assert total(samples, "messaging_process_duration_seconds_count") == queued
    assert total(samples, "s3convex_queue_messages", queue="dlq", state="visible") == 1
    assert total(samples, "s3convex_queue_messages", queue="source", state="visible") == 0
    assert total(samples, "s3convex_queue_oldest_message_age_seconds") > 0
    assert exported_names(text) >= EXPORTED, EXPORTED - exported_names(text)
    # Low cardinality: no label anywhere carries a key, a message id or a path.
    labels = {value for (_, attrs) in samples for _, value in attrs}
    assert not any("observe/" in value or "not json" in value for value in labels)


async def _assert_otlp(stack: Stack, collector: Collector, keys: list[str], queued: int,
                       log_path: Path) -> None:
    assert collector.content_types == {"application/x-protobuf"}
    assert collector.resource_attributes()["service.name"] == "s3convex-under-test"
    sums = collector.metric_sums()
    consumed = sum(v for (n, _), v in sums.items() if n == "messaging.client.consumed.messages")
    assert consumed == queued
    applied = sum(v for (n, attrs), v in sums.items()
                  if n == "s3convex.events.applied" and ("status", "applied") in attrs)
    assert applied == UPLOADS

    spans = collector.spans()
    by_id = {span.span_id: span for span in spans}
    processes = [s for s in spans if s.name.startswith("process ")]
    attributes = [{a.key: a.value for a in span.attributes} for span in processes]
    message_ids = {a["messaging.message.id"].string_value for a in attributes}
    assert len(processes) == queued == len(message_ids)
    assert all(a["messaging.system"].string_value == "aws_sqs" for a in attributes)
    children: dict[bytes, set[str]] = defaultdict(set)
    for span in spans:
        if span.parent_span_id in by_id:
            children[span.parent_span_id].add(span.name)
    # Every message came in through a receive span naming it.
    received = {v.string_value for s in spans if s.name.startswith("receive ") for a in s.attributes
                if a.key == "messaging.message.ids" for v in a.value.array_value.values}
    assert received == message_ids
    mutations = [s for s in spans if s.name == "convex assets:applyEvents"]
    assert len(mutations) == UPLOADS
    # Each upload's message: its span, apply and ack below it, and the id in Convex's history
    # row, with the commit id of the mutation span and of the flush log line.
    flush_commits = {line["commit"] for line in log_lines(log_path) if line.get("msg") == "flush"}
    span_commits = {a.value.string_value for s in mutations for a in s.attributes if a.key == "s3convex.commit"}
    assert len(flush_commits) == UPLOADS and flush_commits == span_commits
    for key in keys:
        (row,) = await stack.history(key)
        correlation = row["correlation"]
        assert correlation["sqsMessageId"] in message_ids
        assert row["commit"] in flush_commits
        (span,) = [s for s, a in zip(processes, attributes, strict=True)
                   if a["messaging.message.id"].string_value == correlation["sqsMessageId"]]
        assert {"dispatch", "apply", "ack"} <= children[span.span_id]
