"""OpenTelemetry metrics of the pipeline, and where they are exported.

Instruments are created from the global meter provider, so they cost next to nothing until a
provider is configured. :func:`configure_metrics` installs the SDK's provider with the readers
the standard variables ask for (:func:`metric_exporters`): Prometheus (served as ``/metrics`` on
``HEALTH_PORT`` by ``consumer/probes.py``, on ``BRIDGE_PORT`` by ``consumer/bridge.py``) always,
OTLP over HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_METRICS_ENDPOINT``) is set, the console when
``OTEL_METRICS_EXPORTER`` names it. The OTLP exporter itself reads the rest of ``OTEL_*``
(headers, timeout, ``OTEL_METRIC_EXPORT_INTERVAL``), ``Resource.create`` reads
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``.

Names: OpenTelemetry's messaging conventions where they apply (``messaging.*``, with
``messaging.system=aws_sqs``), ``s3convex.<thing>.<measure>`` for the rest; durations in
seconds. Attributes stay low-cardinality: an outcome, a status, a reason class, a function
name — never a key, a session id or a message id (those belong on spans and log lines).

Names other modules own, on the same global meter: ``s3convex.upload.*``
(``s3convex.storage.metrics``), ``s3convex.cleanup.backlog`` (gauge, objects awaiting cleanup)
and ``s3convex.cleanup.failures`` (counter, by ``reason``) — the alert rules in
``infra/alerts/`` already watch the last two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from s3convex.adapters.sqs_batch import queue_depth

log = logging.getLogger(__name__)
_meter = metrics.get_meter("s3convex")

SQS = {"messaging.system": "aws_sqs"}
# Seconds: a commit within tens of ms up to an outage of an hour.
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
LAG_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]

# --- messaging (OTel semantic conventions) -----------------------------------------------------

consumed_messages = _meter.create_counter(
    "messaging.client.consumed.messages", unit="{message}",
    description="SQS messages received (messaging.operation.name=receive)")
process_duration = _meter.create_histogram(
    "messaging.process.duration", unit="s", explicit_bucket_boundaries_advisory=LAG_BUCKETS,
    description="one message from its receive to its ack, by s3convex.outcome")
operation_duration = _meter.create_histogram(
    "messaging.client.operation.duration", unit="s", explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
    description="one SQS call, by messaging.operation.name (receive, settle, send) and error.type")

# --- the pipeline ------------------------------------------------------------------------------

messages_finished = _meter.create_counter(
    "s3convex.messages.finished", unit="{message}",
    description="messages done with, by outcome: deleted, released, dead_lettered")
dead_letters = _meter.create_counter(
    "s3convex.dlq.sends", unit="{message}",
    description="messages sent to the DLQ, by reason: poison, permanent, exhausted")
events_applied = _meter.create_counter(
    "s3convex.events.applied", unit="{event}",
    description="events sent to Convex, by status: applied, stale, duplicate, error")
convex_duration = _meter.create_histogram(
    "s3convex.convex.mutation.duration", unit="s", explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
    description="one Convex mutation that ran, holding retries included, by convex.function")
convex_attempts = _meter.create_counter(
    "s3convex.convex.attempts", unit="{call}",
    description="Convex calls tried, by convex.function and outcome: ok, rejected, unavailable")
sync_lag = _meter.create_histogram(
    "s3convex.sync.lag", unit="s", explicit_bucket_boundaries_advisory=LAG_BUCKETS,
    description="an applied event's S3 eventTime to its Convex commit")
heartbeat_extensions = _meter.create_counter(
    "s3convex.heartbeat.extensions", unit="{message}",
    description="visibility extensions of in-flight messages, by outcome: ok, failed")
url_refreshes = _meter.create_counter(
    "s3convex.url.refreshes", unit="{url}",
    description="stored URLs re-signed by the refresher, by outcome (urls:store's answers)")
url_refresh_sweeps = _meter.create_counter(
    "s3convex.url.refresh.sweeps", unit="{sweep}",
    description="refresher sweeps, by outcome: ok, skipped (Convex or S3 unavailable)")

# --- the MinIO bridge (consumer/bridge.py, consumer/bridge_forward.py) --------------------------
# Its SendMessageBatch calls are ``messaging.client.operation.duration`` (operation name send).

BRIDGE_OUTCOMES = ("queued", "ignored", "poison", "unauthorized", "too_large", "saturated", "sqs_error")
bridge_requests = _meter.create_counter(
    "s3convex.bridge.requests", unit="{request}",
    description="webhook posts answered, by outcome: queued, ignored, poison (200); unauthorized (401), "
                "too_large (413); saturated, sqs_error (503: MinIO keeps the event and retries)")
bridge_active_requests = _meter.create_up_down_counter(
    "http.server.active_requests", unit="{request}",
    description="webhook posts the bridge is handling now (at most BRIDGE_MAX_CONCURRENCY)")
sent_messages = _meter.create_counter(
    "messaging.client.sent.messages", unit="{message}",
    description="messages SQS accepted from the bridge (messaging.operation.name=send)")
bridge_dead_letters = _meter.create_counter(
    "s3convex.bridge.dead_letters", unit="{message}",
    description="webhook bodies the bridge put on the DLQ, by reason: not_json, too_large, "
                "undecodable, no_handler, key_mismatch")


def note_bridge_started() -> None:
    """Every outcome exists from the start, at 0, so a rate over the first errors is not lost."""
    for outcome in BRIDGE_OUTCOMES:
        bridge_requests.add(0, {"outcome": outcome})


class _Gauges:
    """What the observable gauges read: the latest queue depths and recent message ages."""

    def __init__(self, window_s: float = 300.0) -> None:
        self.depths: dict[str, dict[str, int]] = {}
        self.ages: deque[tuple[float, float]] = deque()  # (monotonic, age in s), oldest first
        self.window_s = window_s
        self.last_refresh_ok: float | None = None  # epoch seconds of the last good URL sweep
        # Since the alert watch last looked (consumer/alerts.py): dead letters by reason class,
        # the largest sync lag.
        self.dead_letters_seen: Counter[str] = Counter()
        self.max_lag_s = 0.0

    def take_window(self) -> tuple[Counter[str], float]:
        """Dead letters and the largest lag since the last call, and start a new window."""
        seen, lag = self.dead_letters_seen, self.max_lag_s
        self.dead_letters_seen, self.max_lag_s = Counter(), 0.0
        return seen, lag

    def note_age(self, age_s: float) -> None:
        now = time.monotonic()
        self.ages.append((now, age_s))
        while self.ages and now - self.ages[0][0] > self.window_s:
            self.ages.popleft()

    def oldest_age(self) -> float | None:
        now = time.monotonic()
        recent = [age for at, age in self.ages if now - at <= self.window_s]
        return max(recent) if recent else None


gauges = _Gauges()
_DEPTH_STATES = {"visible": "visible", "inFlight": "in_flight", "delayed": "delayed"}


def _observe_depths(options: CallbackOptions) -> Iterable[Observation]:
    for queue, counts in gauges.depths.items():
        for name, state in _DEPTH_STATES.items():
            yield Observation(counts.get(name, 0), {**SQS, "queue": queue, "state": state})


def _observe_oldest(options: CallbackOptions) -> Iterable[Observation]:
    oldest = gauges.oldest_age()
    if oldest is not None:
        yield Observation(oldest, SQS)


def _observe_refresh(options: CallbackOptions) -> Iterable[Observation]:
    if gauges.last_refresh_ok is not None:
        yield Observation(gauges.last_refresh_ok)


_meter.create_observable_gauge(
    "s3convex.queue.messages", [_observe_depths], unit="{message}",
    description="messages on the queue and the DLQ, by queue (source, dlq) and state")
_meter.create_observable_gauge(
    "s3convex.queue.oldest_message.age", [_observe_oldest], unit="s",
    description="age (since SQS accepted it) of the oldest message received in the last 5 minutes")
_meter.create_observable_gauge(
    "s3convex.url.refresh.last_success", [_observe_refresh], unit="s",
    description="Unix time of the URL refresher's last complete sweep")


def note_received(messages: list[dict[str, Any]], queue: str) -> None:
    """Count a receive's messages and remember how long each waited in SQS."""
    consumed_messages.add(len(messages), {**SQS, "messaging.operation.name": "receive",
                                          "messaging.destination.name": queue})
    now_ms = time.time() * 1000
    for message in messages:
        sent = (message.get("Attributes") or {}).get("SentTimestamp")
        if sent:
            gauges.note_age(max(0.0, (now_ms - int(sent)) / 1000))


def note_refresh(outcomes: Mapping[str, int]) -> None:
    """One complete URL sweep: its answers per outcome, and the time it finished."""
    url_refresh_sweeps.add(1, {"outcome": "ok"})
    # The two outcomes the alert rules divide exist from the first sweep on, at 0 if need be.
    for outcome, count in {"stored": 0, "error_recorded": 0, **outcomes}.items():
        url_refreshes.add(count, {"outcome": outcome})
    gauges.last_refresh_ok = time.time()


def note_dead_letter(reason: str) -> None:
    reason_class = dlq_reason_class(reason)
    dead_letters.add(1, {"reason": reason_class})
    gauges.dead_letters_seen[reason_class] += 1


def note_lag(seconds: float) -> None:
    sync_lag.record(seconds)
    gauges.max_lag_s = max(gauges.max_lag_s, seconds)


def dlq_reason_class(reason: str) -> str:
    """The low-cardinality class of a dead-letter reason (``consumer/retry.py``'s prefixes)."""
    if reason.startswith("poison"):
        return "poison"
    if reason.startswith("permanent"):
        return "permanent"
    if reason.startswith("gave up"):
        return "exhausted"
    return "other"


class QueueDepthSampler:
    """Reads the queue's and the DLQ's depths every ``interval_s`` (one GetQueueAttributes
    each, so two calls per interval whatever the traffic) for the ``s3convex.queue.messages``
    gauge. A failed read keeps the last values and is tried again next interval: metrics never
    stop the daemon."""

    def __init__(self, sqs: Any, queues: Mapping[str, str], *, interval_s: float = 30.0) -> None:
        self._sqs = sqs
        self._queues = dict(queues)
        self._interval_s = interval_s

    async def sample(self) -> None:
        for name, url in self._queues.items():
            try:
                gauges.depths[name] = await queue_depth(self._sqs, url)
            except Exception as exc:
                log.warning("queue depth unavailable", extra={"queue": name, "error": str(exc)})

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)


# --- export ------------------------------------------------------------------------------------

def metric_exporters(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The exporters the standard variables ask for: ``OTEL_METRICS_EXPORTER`` when set (a
    comma-separated list of otlp, prometheus, console, none); else prometheus, plus otlp when an
    OTLP endpoint is set. ``OTEL_SDK_DISABLED=true`` turns all of them off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_METRICS_EXPORTER", "").strip()
    if named:
        return [n for n in (part.strip().lower() for part in named.split(",")) if n and n != "none"]
    otlp = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    return ["prometheus", *(["otlp"] if otlp else [])]


# What generate_latest writes (the classic text format, names escaped with underscores).
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def prometheus_text() -> bytes:
    """The metrics as Prometheus text, for the daemon's and the bridge's ``/metrics``: the
    PrometheusMetricReader collects from the SDK's aggregations into prometheus_client's default
    registry at each scrape, so nothing is computed between scrapes."""
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY)


def _reader(name: str) -> MetricReader:
    if name == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        return PrometheusMetricReader()  # registers with prometheus_client's default registry
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(OTLPMetricExporter())
    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
    from s3convex.core.errors import ConfigError

    raise ConfigError(f"OTEL_METRICS_EXPORTER: unknown exporter {name!r}; use otlp, prometheus, console or none")


def configure_metrics(reader: MetricReader | None = None) -> MeterProvider | None:
    """Install an SDK meter provider: with ``reader`` alone (tests), else with the readers the
    environment asks for (:func:`metric_exporters`); None when it asks for none."""
    readers = [reader] if reader is not None else [_reader(name) for name in metric_exporters()]
    if not readers:
        return None
    provider = MeterProvider(metric_readers=readers, resource=service_resource())
    metrics.set_meter_provider(provider)
    return provider


def service_resource() -> Resource:
    """``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (read by ``Resource.create``), with
    ``service.name`` s3convex when neither names one (attributes passed to ``create`` would win
    over the environment, so the default is merged only in their absence)."""
    detected = Resource.create()
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        return detected.merge(Resource({"service.name": "s3convex"}))
    return detected
