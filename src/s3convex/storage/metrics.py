"""OpenTelemetry metrics of uploads (the pattern of ``s3convex.consumer.telemetry``).

Instruments come from the global meter provider, so they cost next to nothing until one is
configured (``configure_metrics`` in the daemon's telemetry, or the application's own). Names
``s3convex.upload.<measure>``; attributes stay low-cardinality: the asset's ``kind``, the
``outcome`` and, on failure, ``error.type`` (the error's class). Durations in seconds, as the
consumer's; in Prometheus: ``s3convex_upload_duration_seconds``, ``s3convex_upload_bytes_total``,
``s3convex_upload_files_total``, ``s3convex_upload_failures_total``, ``s3convex_upload_retries_total``.
"""

from __future__ import annotations

from opentelemetry import metrics

from s3convex.core.errors import SyncError
from s3convex.storage.events import UploadSubscriber
from s3convex.storage.plan import PlannedFile
from s3convex.storage.results import FailedFile, UploadedFile

_meter = metrics.get_meter("s3convex.storage")

upload_duration = _meter.create_histogram(
    "s3convex.upload.duration", unit="s",
    explicit_bucket_boundaries_advisory=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600],
    description="one file's upload, from its first request to its last answer, retries included")
upload_bytes = _meter.create_counter(
    "s3convex.upload.bytes", unit="By", description="bytes of files uploaded, by kind")
upload_files = _meter.create_counter(
    "s3convex.upload.files", unit="{file}", description="files done with, by outcome")
upload_failures = _meter.create_counter(
    "s3convex.upload.failures", unit="{file}",
    description="files that failed after their last attempt, by error.type")
upload_retries = _meter.create_counter(
    "s3convex.upload.retries", unit="{request}",
    description="requests tried again (a PUT, a part, a multipart call), by error.type")


class UploadMetrics(UploadSubscriber):
    def on_retry(self, file: PlannedFile, run_id: str, attempt: int, delay: float,
                 error: SyncError) -> None:
        upload_retries.add(1, {"kind": file.kind, "error.type": type(error).__name__})

    def on_done(self, outcome: UploadedFile | FailedFile) -> None:
        kind = outcome.file.kind
        if isinstance(outcome, UploadedFile):
            upload_duration.record(outcome.seconds, {"kind": kind, "outcome": "available"})
            upload_bytes.add(outcome.size, {"kind": kind})
            upload_files.add(1, {"kind": kind, "outcome": "available"})
        else:
            upload_duration.record(outcome.seconds, {"kind": kind, "outcome": "failed"})
            upload_files.add(1, {"kind": kind, "outcome": "failed"})
            upload_failures.add(1, {"kind": kind, "error.type": outcome.error_type})
