"""Following one asset: OpenTelemetry spans of a message's path, and the records Convex keeps.

- **Spans**: a ``receive <queue>`` span per ReceiveMessage that brought messages (their ids in
  ``messaging.message.ids``), one ``process <queue>`` span per message (kind CONSUMER, ``messaging.message.id``
  = the SQS message id), with ``dispatch``, ``apply`` and ``ack`` children; the batched Convex
  mutation is its own ``convex assets:applyEvents`` span naming its commit and the message ids
  it carried (it runs in the batcher's task, outside any one message's span). Exported over
  OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_TRACES_ENDPOINT``) is set, or as
  ``OTEL_TRACES_EXPORTER`` says (otlp, console, none); without a provider, spans are no-ops.
- **Correlation** (:func:`correlate`): every change sent to Convex carries its cause — the S3
  request id and x-amz-id-2 from the record's ``responseElements``, the SQS message id, the
  uploader's run id (its ``x-amz-meta-s3convex-run-id``) — and ``assets:applyEvents`` keeps it
  in the history row with the commit id of the mutation (``consumer/apply.py``).
- **Dead letters** (:class:`DeadLetterRecords`): each message the daemon sends to the DLQ is
  recorded in Convex (``trace:recordDeadLetters``) under the keys it names, with the DLQ's
  message id that ``s3convex replay`` records as moved; ``s3convex trace`` joins the three.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote_plus

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind

from s3convex.core.asset import AssetChange, Correlation
from s3convex.core.events import ObjectEvent

log = logging.getLogger(__name__)
tracer = trace.get_tracer("s3convex")

RECORD_DEAD_LETTERS = "trace:recordDeadLetters"
RUN_ID_METADATA = "s3convex-run-id"  # s3convex.storage.plan.RUN_ID_METADATA, as S3 reports it
MAX_KEYS_RECORDED = 100  # trace:recordDeadLetters takes at most this many rows per call


def trace_exporters(environ: Mapping[str, str] = os.environ) -> list[str]:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if named:
        return [n for n in (part.strip().lower() for part in named.split(",")) if n and n != "none"]
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return ["otlp"] if endpoint else []


def configure_tracing(exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Install an SDK tracer provider exporting to ``exporter`` (tests) or to what the
    environment asks for; None (spans stay no-ops) when it asks for nothing."""
    from s3convex.consumer.telemetry import service_resource

    exporters: list[SpanExporter] = [exporter] if exporter is not None else []
    for name in [] if exporter is not None else trace_exporters():
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            from s3convex.core.errors import ConfigError

            raise ConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}; use otlp, console or none")
    if not exporters:
        return None
    provider = TracerProvider(resource=service_resource())
    for each in exporters:
        provider.add_span_processor(BatchSpanProcessor(each))
    trace.set_tracer_provider(provider)
    return provider


def message_span(message_id: str, queue: str, receive_count: int) -> Any:
    """The span of one message's whole path (a context manager)."""
    return tracer.start_as_current_span(f"process {queue}", kind=SpanKind.CONSUMER, attributes={
        "messaging.system": "aws_sqs", "messaging.operation.name": "process",
        "messaging.operation.type": "process", "messaging.destination.name": queue,
        "messaging.message.id": message_id, "messaging.aws_sqs.receive_count": receive_count})


def receive_span(queue: str, started_ns: int, message_ids: list[str]) -> None:
    """The span of one ReceiveMessage that returned messages, ended now; the ids join it to
    each message's ``process`` span."""
    span = tracer.start_span(f"receive {queue}", kind=SpanKind.CLIENT, start_time=started_ns, attributes={
        "messaging.system": "aws_sqs", "messaging.operation.name": "receive",
        "messaging.operation.type": "receive", "messaging.destination.name": queue,
        "messaging.batch.message_count": len(message_ids), "messaging.message.ids": message_ids})
    span.end()


def mark_error(span: Span, error: BaseException) -> None:
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)[:200]))


def correlate(change: AssetChange, event: ObjectEvent, message_id: str) -> AssetChange:
    """``change`` carrying what caused it: the S3 request, the SQS message, the upload run."""
    run_id = (change.metadata or {}).get(RUN_ID_METADATA)
    correlation = Correlation(s3RequestId=event.request_id, s3HostId=event.host_id,
                              sqsMessageId=message_id, uploadRunId=run_id)
    return change.model_copy(update={"correlation": correlation})


def keys_named(body: str) -> list[tuple[str, str, str | None]]:
    """(bucket, key, S3 request id) of every S3 record a message names, read leniently — for a
    message that failed, perhaps because it did not validate. SNS-wrapped bodies are opened;
    anything unreadable names nothing."""
    try:
        document = json.loads(body)
        if isinstance(document, dict) and isinstance(document.get("Message"), str):
            document = json.loads(document["Message"])
    except (ValueError, TypeError):
        return []
    records = document.get("Records") if isinstance(document, dict) else None
    named: list[tuple[str, str, str | None]] = []
    for record in records if isinstance(records, list) else []:
        try:
            bucket = record["s3"]["bucket"]["name"]
            key = unquote_plus(record["s3"]["object"]["key"])
        except (KeyError, TypeError):
            continue
        request_id = (record.get("responseElements") or {}).get("x-amz-request-id")
        if isinstance(bucket, str) and isinstance(key, str) and bucket and key:
            named.append((bucket, key, request_id if isinstance(request_id, str) else None))
    return named


class DeadLetterRecords:
    """Records each dead-lettered message in Convex under the keys it names. Best effort: the
    message is already safe in the DLQ, so a failure here is logged, never raised."""

    def __init__(self, convex: Any) -> None:
        self._convex = convex

    async def record(self, *, body: str, message_id: str, dlq_message_id: str | None, reason: str,
                     receive_count: int, events: Sequence[ObjectEvent] = ()) -> None:
        named = ([(e.bucket, e.key, e.request_id) for e in events] if events else keys_named(body))
        if not named:
            return
        failed_at = int(time.time() * 1000)
        rows = [{
            "bucket": bucket, "key": key, "sqsMessageId": message_id,
            **({"dlqMessageId": dlq_message_id} if dlq_message_id else {}),
            **({"s3RequestId": request_id} if request_id else {}),
            "reason": reason[:1000], "receiveCount": receive_count, "failedAt": failed_at,
        } for bucket, key, request_id in dict.fromkeys(named)][:MAX_KEYS_RECORDED]
        try:
            await self._convex.mutation(RECORD_DEAD_LETTERS, {"rows": rows})
        except Exception as exc:
            log.warning("dead letter not recorded in Convex", extra={"error": str(exc)})
