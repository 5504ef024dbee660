"""The daemon's HTTP endpoints on ``HEALTH_PORT``: ``/healthz`` (alive), ``/readyz`` (ready) and
``/metrics`` (Prometheus text format).

- ``/healthz`` answers 200 as long as the event loop does: a wedged loop or a dead process is
  what a liveness probe should restart.
- ``/readyz`` answers 200 only when every poller is running, the daemon is not stopping, and
  SQS and Convex each succeeded within the last ``fresh_seconds``. A dependency that has not
  succeeded that recently is checked on the spot (GetQueueAttributes on the queue; a query of
  ``assets:getByKey``), at most one check at a time per dependency, so probes cost the
  dependencies at most one call per ``fresh_seconds`` while they are healthy. 503 otherwise,
  with the reasons as JSON.

- ``/metrics`` renders prometheus_client's default registry, where OpenTelemetry's
  ``PrometheusMetricReader`` (``consumer/telemetry.py``) collects the SDK's instruments at each
  scrape: nothing is computed between scrapes.

Served with ``aiohttp.web`` (already installed: aiobotocore's transport) as a supervised task
of the daemon: if it cannot bind its port, the daemon stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from s3convex.consumer.telemetry import PROMETHEUS_CONTENT_TYPE, prometheus_text

log = logging.getLogger(__name__)


class Readiness:
    def __init__(
        self,
        *,
        pollers: Callable[[], Collection[asyncio.Task[Any]]],
        checks: Mapping[str, Callable[[], Awaitable[Any]]],
        stopping: Callable[[], bool] = lambda: False,
        fresh_seconds: float = 30.0,
        check_timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pollers = pollers
        self._checks = dict(checks)
        self._stopping = stopping
        self._fresh = fresh_seconds
        self._timeout = check_timeout
        self._clock = clock
        self._last_ok: dict[str, float] = {}
        self._last_error: dict[str, str] = {}
        self._locks = {name: asyncio.Lock() for name in self._checks}

    def _fresh_ok(self, name: str, at: float | None = None) -> bool:
        last = self._last_ok.get(name)
        return last is not None and (self._clock() if at is None else at) - last <= self._fresh

    async def _ensure(self, name: str) -> None:
        if self._fresh_ok(name):
            return
        async with self._locks[name]:
            if self._fresh_ok(name):  # another probe checked while we waited
                return
            try:
                await asyncio.wait_for(self._checks[name](), self._timeout)
            except Exception as exc:
                self._last_error[name] = f"{type(exc).__name__}: {exc}"[:300]
            else:
                self._last_ok[name] = self._clock()
                self._last_error.pop(name, None)

    async def report(self) -> tuple[bool, dict[str, Any]]:
        asked = self._clock()  # a success from this probe's own check counts, however slow
        pollers = list(self._pollers())
        running = sum(1 for task in pollers if not task.done())
        await asyncio.gather(*(self._ensure(name) for name in self._checks))
        now = self._clock()
        details: dict[str, Any] = {
            "stopping": self._stopping(),
            "pollers": {"running": running, "total": len(pollers)},
        }
        for name in self._checks:
            last = self._last_ok.get(name)
            details[name] = {
                "ok": self._fresh_ok(name, at=asked),
                "lastOkSecondsAgo": None if last is None else round(now - last, 1),
                **({"error": self._last_error[name]} if name in self._last_error else {}),
            }
        ready = (not details["stopping"] and 0 < running == len(pollers)
                 and all(details[name]["ok"] for name in self._checks))
        return ready, details


class ProbeServer:
    # All interfaces by default: an orchestrator probes the pod's address, not loopback.
    def __init__(self, readiness: Readiness, port: int, *, host: str = "0.0.0.0") -> None:
        self._readiness = readiness
        self._host = host
        self._requested_port = port
        self.port: int | None = None
        self.listening = asyncio.Event()

    async def serve(self) -> None:
        """Listen until cancelled. A port that cannot be bound raises (the daemon stops)."""
        app = web.Application()
        app.router.add_route("*", "/{probe:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
            self.port = runner.addresses[0][1]  # (host, port[, …]) of the socket bound
            log.info("health probes listening", extra={"port": self.port})
            self.listening.set()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path == "/metrics" and request.method in ("GET", "HEAD"):
            return web.Response(body=prometheus_text(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE,
                                                        "Cache-Control": "no-store"})
        status, body = await self.route(request.method, request.path)
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})

    async def route(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        if path not in ("/healthz", "/readyz"):
            return 404, {"error": f"no such probe {path}; try /healthz, /readyz or /metrics"}
        if method not in ("GET", "HEAD"):
            return 405, {"error": "use GET"}
        if path == "/healthz":
            return 200, {"status": "alive"}
        ready, details = await self._readiness.report()
        return (200 if ready else 503), {"status": "ready" if ready else "not ready", **details}


def daemon_probes(port: int, pollers: Collection[asyncio.Task[Any]], sqs: Any, queue_url: str,
                  convex: Any, stop: asyncio.Event) -> ProbeServer:
    """The probe server the daemon runs: its pollers, its queue, its Convex deployment."""
    async def sqs_answers() -> None:
        await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])

    async def convex_answers() -> None:
        await convex.query("assets:getByKey", {"bucket": "s3convex-readiness-probe", "key": "probe"})

    readiness = Readiness(pollers=lambda: pollers, checks={"sqs": sqs_answers, "convex": convex_answers},
                          stopping=stop.is_set)
    return ProbeServer(readiness, port)
