"""The daemon: wire the stages, supervise their tasks, stop gracefully.

Shutdown order (a signal only sets the stop event):

1. pollers stop receiving (a long poll in progress finishes, within the grace period);
2. in-flight messages finish — the batchers and the visibility heartbeat stay alive for them;
3. whatever is unfinished at the grace deadline is cancelled and *released* (visibility 0),
   so another replica takes it at once;
4. batchers drain, clients close, exit 0. A second signal exits at once; SQS redelivers.

If a supervised task (a poller, the heartbeat, a batcher, the URL refresher, the URL-request
fulfiller, the stalled-upload sweeper) dies, the daemon stops and exits 1 instead of running
half-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

from s3convex.adapters.aws import AwsClients, open_clients
from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.queues import resolve_queues
from s3convex.adapters.s3_store import S3ObjectStore
from s3convex.adapters.urls import url_source
from s3convex.consumer.ack import Acknowledger
from s3convex.consumer.apply import ConvexApplier
from s3convex.consumer.batching import MicroBatcher
from s3convex.consumer.decode import Decoder
from s3convex.consumer.dispatch import Dispatcher
from s3convex.consumer.heartbeat import VisibilityHeartbeat
from s3convex.consumer.inflight import InFlight, InFlightMessage
from s3convex.consumer.pipeline import Pipeline
from s3convex.consumer.receive import Receiver
from s3convex.consumer.retry import RetryPolicy
from s3convex.consumer.telemetry import QueueDepthSampler, configure_metrics
from s3convex.consumer.tracing import DeadLetterRecords, configure_tracing
from s3convex.consumer.upload_sweeper import UploadSweeper
from s3convex.consumer.url_refresh import UrlRefresher
from s3convex.consumer.url_requests import UrlRequests
from s3convex.core.errors import StorageError
from s3convex.handlers.context import HandlerContext
from s3convex.handlers.objects import registry
from s3convex.settings import Settings

log = logging.getLogger(__name__)


def run_daemon(settings: Settings, *, drain: bool = False) -> int:
    # Metrics and traces as the OTEL_* variables ask (consumer/telemetry.py, consumer/tracing.py);
    # shutting the providers down flushes what OTLP has not sent yet.
    providers = [p for p in (configure_metrics(), configure_tracing()) if p is not None]
    try:
        return asyncio.run(Daemon(settings, drain=drain).run())
    finally:
        for provider in providers:
            provider.shutdown()


class Daemon:
    def __init__(self, settings: Settings, *, drain: bool = False) -> None:
        self.settings = settings
        self.drain = drain
        self._stop = asyncio.Event()
        self._signals = 0

    def request_stop(self, signum: int | None = None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.error("second signal: exiting now; unacked messages return after their visibility timeout")
            logging.shutdown()
            os._exit(130)
        log.info("stopping", extra={"signal": signal.Signals(signum).name if signum else None})
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop, signum)
        s = self.settings
        async with (
            open_clients(s.aws, max_pool_connections=s.consumer.head_concurrency + s.consumer.pollers + 16,
                         long_poll_seconds=s.consumer.wait_seconds, signed_head=s.consumer.signed_head) as aws,
            ConvexClient.from_settings(s.convex,
                                       max_connections=s.consumer.max_concurrent_flushes + 4) as convex,
        ):
            queues = await resolve_queues(aws.sqs, s.sqs)
            return await self._serve(aws, convex, queues.url, queues.dlq_url, queues.visibility_timeout)

    async def _serve(self, aws: AwsClients, convex: ConvexClient, queue_url: str, dlq_url: str,
                     visibility: int) -> int:
        s = self.settings
        in_flight = InFlight(s.consumer.max_in_flight)
        acknowledger = Acknowledger(aws.sqs, queue_url, dlq_url, in_flight,
                                    delete_wait=s.consumer.delete_wait_ms / 1000)
        changes = MicroBatcher(
            ConvexApplier(convex).apply,
            max_size=s.consumer.flush_events,
            max_wait=s.consumer.flush_ms / 1000,
            max_concurrent=s.consumer.max_concurrent_flushes,
            flush_when_idle=s.consumer.flush_when_idle,
        )
        pipeline = Pipeline(
            decoder=Decoder([s.aws.bucket]),
            dispatcher=Dispatcher(registry, HandlerContext(S3ObjectStore(aws.s3, aws.signed_head),
                                                           url_source(s.urls, aws), layout=s.aws.key_layout),
                                  concurrency=s.consumer.head_concurrency),
            changes=changes,
            acknowledger=acknowledger,
            retry_policy=RetryPolicy(max_receive_count=s.sqs.max_receive_count),
            dead_letter_records=DeadLetterRecords(convex),  # for `s3convex trace`
            queue_name=queue_url.rstrip("/").rsplit("/", 1)[-1],
        )
        wait_seconds = min(s.consumer.wait_seconds, 2) if self.drain else s.consumer.wait_seconds
        receiver = Receiver(aws.sqs, queue_url, in_flight, wait_seconds=wait_seconds,
                            visibility_timeout=visibility)
        heartbeat = VisibilityHeartbeat(aws.sqs, queue_url, in_flight, visibility)

        workers: set[asyncio.Task[None]] = set()

        def deliver(message: InFlightMessage) -> None:
            task = asyncio.create_task(pipeline.process(message), name=f"message-{message.message_id}")
            workers.add(task)
            task.add_done_callback(workers.discard)

        # Supervised until the end; what they return is never used, only how they end.
        background: set[asyncio.Task[object]] = {
            asyncio.create_task(changes.run(), name="apply-batcher"),
            asyncio.create_task(acknowledger.deletes.run(), name="delete-batcher"),
            asyncio.create_task(heartbeat.run(), name="visibility-heartbeat"),
        }
        pollers = {
            asyncio.create_task(receiver.poll(deliver, self._stop), name=f"poller-{i}")
            for i in range(s.consumer.pollers)
        }
        if self.drain:
            background.add(asyncio.create_task(
                self._stop_when_drained(aws.sqs, queue_url, in_flight, receiver, changes),
                name="drain-watch"))
        else:
            urls = url_source(s.urls, aws)
            # Stored presigned URLs are re-signed before they expire, and URLs of another
            # configuration brought in line (consumer/url_refresh.py).
            refresher = UrlRefresher(convex, urls, [s.aws.bucket],
                                     margin_s=s.urls.effective_refresh_margin, interval_s=s.urls.refresh_interval)
            background.add(asyncio.create_task(refresher.run(self._stop), name="url-refresher"))
            if s.urls.request_poll_ms:  # the web app's URL requests, signed (consumer/url_requests.py)
                requests = UrlRequests(convex, urls, [s.aws.bucket], interval_s=s.urls.request_poll_ms / 1000,
                                       lifetime_for=s.urls.expires_for,
                                       objects=S3ObjectStore(aws.s3, aws.signed_head))  # 404 → missing
                background.add(asyncio.create_task(requests.run(self._stop), name="url-requests"))
            if s.consumer.upload_sweep_interval:  # stalled uploads → failed (consumer/upload_sweeper.py)
                sweeper = UploadSweeper(convex, stale_after_s=s.consumer.upload_stale_after,
                                        interval_s=s.consumer.upload_sweep_interval)
                background.add(asyncio.create_task(sweeper.run(self._stop), name="upload-sweeper"))
            if s.cleanup.enabled:  # due removals out of S3 (consumer/cleanup.py, convex/LIFECYCLE.md)
                from s3convex.consumer.cleanup import CleanupWorker

                cleaner = CleanupWorker(convex, aws.s3, bucket=s.aws.bucket, layout=s.aws.key_layout,
                                        settings=s.cleanup, operator="daemon")
                background.add(asyncio.create_task(cleaner.run(self._stop, interval_s=s.cleanup.interval),
                                                   name="cleanup-worker"))
            if s.cleanup.retention_interval and (s.cleanup.retention_keep_versions is not None
                                                 or s.cleanup.retention_max_age_days is not None):
                from s3convex.consumer.retention import periodic_retention

                background.add(asyncio.create_task(periodic_retention(
                    convex, aws.s3, s.cleanup, self._stop), name="retention"))
        # Queue/DLQ depth gauges and the daemon's own alerts (consumer/telemetry.py, alerts.py).
        from s3convex.consumer.alerts import AlertWatch

        sampler = QueueDepthSampler(aws.sqs, {"source": queue_url, "dlq": dlq_url},
                                    interval_s=s.telemetry.queue_metrics_interval)
        background.add(asyncio.create_task(sampler.run(self._stop), name="queue-metrics"))
        watch = AlertWatch(s.telemetry, check_seconds=s.telemetry.alert_check_seconds)
        background.add(asyncio.create_task(watch.run(self._stop), name="alert-watch"))
        if s.consumer.health_port is not None:  # /healthz, /readyz, /metrics (consumer/probes.py), supervised
            from s3convex.consumer.probes import daemon_probes

            background.add(asyncio.create_task(
                daemon_probes(s.consumer.health_port, pollers, aws.sqs, queue_url, convex, self._stop).serve(),
                name="health-probes"))
        log.info("consumer started", extra={"queue": queue_url, "pollers": len(pollers),
                                            "visibility_s": visibility, "drain": self.drain})

        stop_wait: asyncio.Task[object] = asyncio.create_task(self._stop.wait(), name="stop-wait")
        done, _ = await asyncio.wait({stop_wait, *pollers, *background},
                                     return_when=asyncio.FIRST_COMPLETED)
        failure = next((t for t in done if t is not stop_wait and not t.cancelled() and t.exception()), None)
        if failure is not None:
            log.error("supervised task failed; stopping", extra={"task": failure.get_name(),
                                                                 "error": repr(failure.exception())})
        self._stop.set()

        deadline = time.monotonic() + s.consumer.grace_seconds
        await _wait_until(pollers, deadline)
        await _wait_until(workers, deadline)
        released = await heartbeat.release_all()
        # Batches still held (e.g. Convex is down) belong to messages released above: give
        # them a moment to commit, then abandon them — the messages come back regardless.
        abandoned = await changes.close(grace=max(0.0, deadline - time.monotonic()) + 2)
        if abandoned:
            log.warning("abandoned unfinished Convex batches", extra={"batches": abandoned})
        await acknowledger.deletes.close(grace=10)
        for task in background | {stop_wait}:
            task.cancel()
        await asyncio.gather(*background, stop_wait, return_exceptions=True)
        log.info("consumer stopped", extra={"released": released, "failed": failure is not None})
        if failure is not None:
            exc = failure.exception()
            if isinstance(exc, StorageError):
                raise exc
            return 1
        return 0

    async def _stop_when_drained(self, sqs: Any, queue_url: str, in_flight: InFlight,
                                 receiver: Receiver, changes: MicroBatcher[Any, Any]) -> None:
        """Drain mode: stop once nothing is in flight, pollers see nothing, and SQS agrees
        that nothing is visible, in flight elsewhere, or delayed (released for a retry)."""
        while not self._stop.is_set():
            await asyncio.sleep(0.25)
            if len(in_flight) or changes.pending or receiver.empty_receives < self.settings.consumer.pollers:
                continue
            response = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed"])
            counts = response.get("Attributes", {})
            if len(in_flight) == 0 and all(int(v) == 0 for v in counts.values()):
                log.info("queue drained")
                self._stop.set()


async def _wait_until(tasks: set[asyncio.Task[None]], deadline: float) -> None:
    """Let tasks finish until the deadline, then cancel the rest and wait for them to unwind."""
    pending = {t for t in tasks if not t.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
