"""OpenTelemetry metrics of the pipeline.

Instruments are created from the global meter provider, so they cost next to nothing until a
provider is configured: :func:`configure_metrics` installs the SDK's provider (console export
with ``OTEL_METRICS_EXPORTER=console``; tests pass an in-memory reader). Names follow the OTel
conventions: ``s3convex.<thing>.<measure>``, units in UCUM.
"""

from __future__ import annotations

import os

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

_meter = metrics.get_meter("s3convex")

messages_received = _meter.create_counter(
    "s3convex.messages.received", unit="{message}", description="SQS messages received")
messages_finished = _meter.create_counter(
    "s3convex.messages.finished", unit="{message}",
    description="messages done with, by outcome: deleted, released, dead_lettered")
events_applied = _meter.create_counter(
    "s3convex.events.applied", unit="{event}",
    description="events sent to Convex, by result: applied, stale, duplicate, error")
flush_duration = _meter.create_histogram(
    "s3convex.flush.duration", unit="ms", description="one assets:applyEvents mutation, retries included")
event_lag = _meter.create_histogram(
    "s3convex.event.lag", unit="ms", description="S3 eventTime to Convex commit")


def configure_metrics(reader: MetricReader | None = None) -> MeterProvider | None:
    """Install an SDK meter provider; without a reader, only when asked for by the environment."""
    if reader is None:
        if os.environ.get("OTEL_METRICS_EXPORTER", "none") != "console":
            return None
        reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "s3convex")}),
    )
    metrics.set_meter_provider(provider)
    return provider
