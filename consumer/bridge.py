"""``s3convex bridge``: the HTTP endpoint MinIO's webhook target posts to (MinIO has no SQS target).

Routes (one port, ``BRIDGE_PORT``):

- ``POST /``: a MinIO notification. ``Authorization: Bearer <BRIDGE_AUTH_TOKEN>`` is compared
  in constant time (401 otherwise, before the body is read); a body over
  ``BRIDGE_MAX_BODY_BYTES`` gets 413; more than ``BRIDGE_MAX_CONCURRENCY`` requests at once get
  503 with ``Retry-After``. The body goes to :class:`~s3convex.consumer.bridge_forward.Forwarder`:
  200 once SQS accepted it, or once a body that can never be handled is on the DLQ (so MinIO
  does not retry poison forever); 503 when SQS did not take it — MinIO keeps the event in its
  ``queue_dir`` and sends it again, so nothing is lost.
- ``HEAD /``: MinIO's liveness check of its target (sent without the token): 200.
- ``GET /healthz``: 200 while the event loop runs. ``GET /readyz``: 200 unless stopping or SQS
  has not answered (a GetQueueAttributes at most every 10 s while healthy).
- ``GET /metrics``: Prometheus text (no token: it holds counts, never a key or a secret), the
  provider ``s3convex bridge`` installs with the daemon's :func:`~s3convex.consumer.telemetry.configure_metrics`
  (OTLP too when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set): every answer by outcome
  (``s3convex.bridge.requests``), requests in flight, SendMessageBatch durations, messages sent,
  bodies dead-lettered by reason.

A signal only sets the stop event: the port closes, requests in flight finish (their SQS sends
included, within ``grace``), then the batcher drains and the clients close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
from typing import Any

from aiohttp import web

from s3convex.adapters.aws import open_clients
from s3convex.adapters.queues import resolve_queues
from s3convex.consumer.bridge_forward import Forwarder
from s3convex.consumer.decode import Decoder
from s3convex.consumer.telemetry import (
    PROMETHEUS_CONTENT_TYPE,
    bridge_active_requests,
    bridge_requests,
    note_bridge_started,
    prometheus_text,
)
from s3convex.core.errors import RetryableError, SyncError
from s3convex.handlers.objects import registry
from s3convex.settings import AwsSettings, BridgeSettings, SqsSettings

log = logging.getLogger(__name__)

_READY_FRESH_SECONDS = 10.0
_ACTIVE = {"http.request.method": "POST", "url.scheme": "http"}  # OTel's required HTTP attributes
_OUTCOME = {"queued": "queued", "dead_lettered": "poison", "ignored": "ignored"}


class Bridge:
    def __init__(self, forwarder: Forwarder, settings: BridgeSettings, *,
                 check_sqs: Any = None) -> None:
        self.forwarder = forwarder
        self._settings = settings
        self._expected = f"Bearer {settings.auth_token.get_secret_value()}".encode()
        self._check_sqs = check_sqs
        self._sqs_ok_at: float | None = None
        self._active = 0
        self.stopping = False
        self.port: int | None = None
        self.listening = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._settings.max_body_bytes)
        app.router.add_post("/", self._notify)
        app.router.add_route("HEAD", "/", self._alive)
        app.router.add_get("/healthz", self._alive)  # GET routes answer HEAD too
        app.router.add_get("/readyz", self._ready)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def serve(self, stop: asyncio.Event, *, grace: float = 20.0) -> None:
        """Listen until ``stop``; a port that cannot be bound raises."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=grace)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._settings.host, self._settings.port)
            await site.start()
            self.port = runner.addresses[0][1]
            log.info("bridge listening", extra={"port": self.port})
            self.listening.set()
            await stop.wait()
            self.stopping = True
        finally:
            await runner.cleanup()  # closes the port, then waits for requests in flight

    async def _notify(self, request: web.Request) -> web.Response:
        # Constant time: the comparison takes as long whatever prefix of the token is right.
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            return _counted("unauthorized", _answer(401, {"error": "missing or wrong bearer token"},
                            headers={"WWW-Authenticate": 'Bearer realm="s3convex-bridge"'}))
        if (request.content_length or 0) > self._settings.max_body_bytes:
            return _counted("too_large", _too_large(self._settings.max_body_bytes))
        if self._active >= self._settings.max_concurrency or self.stopping:
            return _counted("saturated", _answer(503, {"error": "busy, try again"}, headers={"Retry-After": "1"}))
        self._active += 1
        bridge_active_requests.add(1, _ACTIVE)
        try:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return _counted("too_large", _too_large(self._settings.max_body_bytes))
            outcome = await self.forwarder.forward(raw)
        except SyncError as exc:
            # Not on the queue: MinIO keeps the event and posts it again.
            log.warning("webhook body not queued; MinIO will retry",
                        extra={"error": str(exc), "retryable": isinstance(exc, RetryableError)})
            return _counted("sqs_error", _answer(503, {"error": f"not queued: {exc}"[:500]},
                                                 headers={"Retry-After": "5"}))
        finally:
            self._active -= 1
            bridge_active_requests.add(-1, _ACTIVE)
        if outcome.status == "queued":
            self._sqs_ok_at = time.monotonic()
        return _counted(_OUTCOME[outcome.status], _answer(200, {
            "status": outcome.status, "messageId": outcome.message_id, "reason": outcome.reason,
            "keys": list(outcome.keys)}))

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=prometheus_text(), headers={
            "Content-Type": PROMETHEUS_CONTENT_TYPE, "Cache-Control": "no-store"})

    async def _alive(self, request: web.Request) -> web.Response:
        return _answer(200, {"status": "alive"})

    async def _ready(self, request: web.Request) -> web.Response:
        if self.stopping:
            return _answer(503, {"status": "stopping"})
        fresh = self._sqs_ok_at is not None and time.monotonic() - self._sqs_ok_at <= _READY_FRESH_SECONDS
        if not fresh and self._check_sqs is not None:
            try:
                await asyncio.wait_for(self._check_sqs(), 3.0)
            except Exception as exc:
                return _answer(503, {"status": "not ready", "sqs": f"{type(exc).__name__}: {exc}"[:300]})
            self._sqs_ok_at = time.monotonic()
        return _answer(200, {"status": "ready"})


def _answer(status: int, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store", **(headers or {})})


def _counted(outcome: str, response: web.Response) -> web.Response:
    bridge_requests.add(1, {"outcome": outcome})
    return response


def _too_large(limit: int) -> web.Response:
    return _answer(413, {"error": f"body larger than {limit} bytes (BRIDGE_MAX_BODY_BYTES)"})


async def run_bridge(bridge: BridgeSettings, aws: AwsSettings, sqs: SqsSettings, *,
                     stop: asyncio.Event | None = None, grace: float = 20.0,
                     started: asyncio.Future[Bridge] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop``); 0 on a clean stop, 1 if the batcher died."""
    signals: list[int] = []
    if stop is None:  # the command line's own process: signals stop it
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
                signals.append(signum)
    try:
        return await _serve(bridge, aws, sqs, stop, grace, started)
    finally:
        for signum in signals:
            asyncio.get_running_loop().remove_signal_handler(signum)


async def _serve(bridge: BridgeSettings, aws: AwsSettings, sqs: SqsSettings, stop: asyncio.Event,
                 grace: float, started: asyncio.Future[Bridge] | None) -> int:
    async with open_clients(aws, max_pool_connections=bridge.max_concurrent_sends + 4,
                            long_poll_seconds=0, signed_head=False) as clients:
        queues = await resolve_queues(clients.sqs, sqs)
        forwarder = Forwarder(clients.sqs, queues.url, queues.dlq_url, Decoder([aws.bucket]), registry,
                              linger=bridge.linger_ms / 1000, max_concurrent_sends=bridge.max_concurrent_sends)

        async def sqs_answers() -> None:
            await clients.sqs.get_queue_attributes(QueueUrl=queues.url, AttributeNames=["QueueArn"])

        server = Bridge(forwarder, bridge, check_sqs=sqs_answers)
        note_bridge_started()
        sends = asyncio.create_task(forwarder.sends.run(), name="bridge-sends")
        serving = asyncio.create_task(server.serve(stop, grace=grace), name="bridge-http")
        if started is not None:
            listening = asyncio.create_task(server.listening.wait())
            await asyncio.wait({listening, serving}, return_when=asyncio.FIRST_COMPLETED)
            listening.cancel()
            if server.listening.is_set():
                started.set_result(server)
            else:  # the real error is raised below
                started.set_exception(RuntimeError("the bridge did not start listening"))
        await asyncio.wait({sends, serving}, return_when=asyncio.FIRST_COMPLETED)
        failed = sends.done()  # the batcher ends only when closed: anything else is a failure
        stop.set()
        with contextlib.suppress(Exception):
            await serving
        await forwarder.sends.close(grace=grace)
        sends.cancel()
        await asyncio.gather(sends, return_exceptions=True)
        if serving.done() and not serving.cancelled() and (error := serving.exception()) is not None:
            raise error  # e.g. the port is taken
        if failed:
            log.error("bridge batcher failed; stopping")
        log.info("bridge stopped", extra=forwarder.stats)
        return 1 if failed else 0
