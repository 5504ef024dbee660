"""The daemon: wire the stages, supervise their tasks, stop gracefully.

Shutdown order (a signal only sets the stop event):

1. pollers stop receiving (a long poll in progress finishes, within the grace period);
2. in-flight messages finish — the batchers and the visibility heartbeat stay alive for them;
3. whatever is unfinished at the grace deadline is cancelled and *released* (visibility 0),
   so another replica takes it at once;
4. batchers drain, clients close, exit 0. A second signal exits at once; SQS redelivers.

If a supervised task (a poller, the heartbeat, a batcher, the URL refresher) dies, the daemon
stops and exits 1 instead of running half-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

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
from s3convex.consumer.telemetry import configure_metrics
from s3convex.consumer.url_refresh import UrlRefresher
from s3convex.handlers.context import HandlerContext
from s3convex.handlers.objects import registry

from s3convex.adapters.aws import AwsClients, map_aws_error, open_clients
from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.s3_store import S3ObjectStore
from s3convex.adapters.urls import FallbackUrls, PresignedUrls, PublicUrls, UrlSource
from s3convex.core.errors import StorageError
from s3convex.settings import Settings

log = logging.getLogger(__name__)


def run_daemon(settings: Settings, *, drain: bool = False) -> int:
    provider = configure_metrics()
    try:
        return asyncio.run(Daemon(settings, drain=drain).run())
    finally:
        if provider is not None:
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
            open_clients(s, max_pool_connections=s.consumer_head_concurrency + s.consumer_pollers + 16) as aws,
            ConvexClient(s.convex_base_url, s.convex_deploy_key, timeout=s.convex_timeout,
                         max_connections=s.consumer_max_concurrent_flushes + 4) as convex,
        ):
            queue_url, dlq_url, visibility = await resolve_queues(aws, s)
            return await self._serve(aws, convex, queue_url, dlq_url, visibility)

    async def _serve(self, aws: AwsClients, convex: ConvexClient, queue_url: str, dlq_url: str,
                     visibility: int) -> int:
        s = self.settings
        in_flight = InFlight(s.consumer_max_in_flight)
        acknowledger = Acknowledger(aws.sqs, queue_url, dlq_url, in_flight,
                                    delete_wait=s.consumer_delete_wait_ms / 1000)
        changes = MicroBatcher(
            ConvexApplier(convex).apply,
            max_size=s.consumer_flush_events,
            max_wait=s.consumer_flush_ms / 1000,
            max_concurrent=s.consumer_max_concurrent_flushes,
        )
        pipeline = Pipeline(
            decoder=Decoder([s.s3_bucket]),
            dispatcher=Dispatcher(registry, HandlerContext(S3ObjectStore(aws.s3, aws.signed_head),
                                                           url_source(s, aws), layout=s.key_layout),
                                  concurrency=s.consumer_head_concurrency),
            changes=changes,
            acknowledger=acknowledger,
            retry_policy=RetryPolicy(max_receive_count=s.sqs_max_receive_count),
        )
        wait_seconds = min(s.consumer_wait_seconds, 2) if self.drain else s.consumer_wait_seconds
        receiver = Receiver(aws.sqs, queue_url, in_flight, wait_seconds=wait_seconds,
                            visibility_timeout=visibility)
        heartbeat = VisibilityHeartbeat(aws.sqs, queue_url, in_flight, visibility)

        workers: set[asyncio.Task[None]] = set()

        def deliver(message: InFlightMessage) -> None:
            task = asyncio.create_task(pipeline.process(message), name=f"message-{message.message_id}")
            workers.add(task)
            task.add_done_callback(workers.discard)

        background = {
            asyncio.create_task(changes.run(), name="apply-batcher"),
            asyncio.create_task(acknowledger.deletes.run(), name="delete-batcher"),
            asyncio.create_task(heartbeat.run(), name="visibility-heartbeat"),
        }
        pollers = {
            asyncio.create_task(receiver.poll(deliver, self._stop), name=f"poller-{i}")
            for i in range(s.consumer_pollers)
        }
        if self.drain:
            background.add(asyncio.create_task(
                self._stop_when_drained(aws.sqs, queue_url, in_flight, receiver, changes),
                name="drain-watch"))
        else:  # stored presigned URLs are re-signed before they expire (consumer/url_refresh.py)
            refresher = UrlRefresher(convex, url_source(s, aws), [s.s3_bucket],
                                     margin_s=s.refresh_margin, interval_s=s.url_refresh_interval)
            background.add(asyncio.create_task(refresher.run(self._stop), name="url-refresher"))
        if s.health_port is not None:  # /healthz and /readyz (consumer/probes.py), supervised
            from s3convex.consumer.probes import daemon_probes

            background.add(asyncio.create_task(
                daemon_probes(s.health_port, pollers, aws.sqs, queue_url, convex, self._stop).serve(),
                name="health-probes"))
        log.info("consumer started", extra={"queue": queue_url, "pollers": len(pollers),
                                            "visibility_s": visibility, "drain": self.drain})

        stop_wait = asyncio.create_task(self._stop.wait(), name="stop-wait")
        done, _ = await asyncio.wait({stop_wait, *pollers, *background},
                                     return_when=asyncio.FIRST_COMPLETED)
        failure = next((t for t in done if t is not stop_wait and not t.cancelled() and t.exception()), None)
        if failure is not None:
            log.error("supervised task failed; stopping", extra={"task": failure.get_name(),
                                                                 "error": repr(failure.exception())})
        self._stop.set()

        deadline = time.monotonic() + s.consumer_grace_seconds
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
            if len(in_flight) or changes.pending or receiver.empty_receives < self.settings.consumer_pollers:
                continue
            response = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed"])
            counts = response.get("Attributes", {})
            if len(in_flight) == 0 and all(int(v) == 0 for v in counts.values()):
                log.info("queue drained")
                self._stop.set()


def url_source(settings: Settings, aws: AwsClients) -> UrlSource:
    presigned = PresignedUrls(aws.s3, settings.s3_presign_expires, aws.signed_head)
    if settings.s3_public_base_url:
        return FallbackUrls(PublicUrls(str(settings.s3_public_base_url)), presigned)
    return presigned


async def resolve_queues(aws: AwsClients, settings: Settings) -> tuple[str, str, int]:
    """(queue URL, DLQ URL, the queue's visibility timeout); a missing queue is a clear error."""
    async def url_of(name: str) -> str:
        try:
            return (await aws.sqs.get_queue_url(QueueName=name))["QueueUrl"]
        except Exception as exc:
            error = map_aws_error(exc, f"GetQueueUrl {name}")
            if isinstance(error, StorageError):
                raise StorageError(f"queue {name!r} not found — run `s3convex infra up` first") from exc
            raise error from exc

    queue_url = str(settings.sqs_queue_url) if settings.sqs_queue_url else await url_of(settings.sqs_queue_name)
    dlq_url = await url_of(settings.sqs_dlq_name)
    try:
        attributes = (await aws.sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]))["Attributes"]
    except Exception as exc:
        raise map_aws_error(exc, "GetQueueAttributes") from exc
    return queue_url, dlq_url, int(attributes.get("VisibilityTimeout", settings.sqs_visibility_timeout))


async def _wait_until(tasks: set[asyncio.Task[None]], deadline: float) -> None:
    """Let tasks finish until the deadline, then cancel the rest and wait for them to unwind."""
    pending = {t for t in tasks if not t.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
