"""The daemon's own anomaly alerts, for deployments without Prometheus (R9.3).

Every ``check_seconds`` :class:`AlertWatch` looks at what the daemon saw since its last look
(``consumer/telemetry.py``'s window and gauges) and raises an alert when

- ``DlqGrowing``: the DLQ holds more messages than at the previous look;
- ``PoisonSpike``: at least ``ALERT_POISON_PER_MINUTE`` poison messages per minute were
  dead-lettered;
- ``SyncLagHigh``: an event took longer than ``ALERT_LAG_SECONDS`` from S3 to its Convex commit.

Each alert is a structured ``alert`` log line (every look it holds) and, when
``ALERT_WEBHOOK_URL`` is set, a POST (:class:`WebhookNotifier`): **deduplicated** (one alert is
posted at most once per ``ALERT_REPEAT_SECONDS``, however often it fires or flaps in between),
**rate-limited** (at most ``ALERT_MAX_PER_MINUTE`` posts in any minute, whatever fires) and
**signed**: ``X-S3convex-Signature: sha256=<hex>``, the HMAC-SHA256 with ``ALERT_WEBHOOK_SECRET``
of ``<X-S3convex-Timestamp>.<body>``, so a receiver checks both origin and freshness.

An alert's text holds counts, thresholds and reason classes only — never a key, a session id,
a message body or a secret. A failed POST is logged, never raised: alerting must not stop the
daemon it watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import httpx

from s3convex.consumer.telemetry import gauges
from s3convex.settings import TelemetrySettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-S3convex-Signature"
TIMESTAMP_HEADER = "X-S3convex-Timestamp"


@dataclass(frozen=True)
class Alert:
    name: str
    severity: Literal["warning", "critical"]
    summary: str
    value: float
    threshold: float


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """Posts alerts, each name at most once per ``repeat_s`` and at most ``max_per_minute``
    posts in any 60 s."""

    def __init__(self, url: str, secret: bytes, *, repeat_s: float, max_per_minute: int,
                 clock: Callable[[], float] = time.monotonic, timeout_s: float = 5.0) -> None:
        self._url = url
        self._secret = secret
        self._repeat_s = repeat_s
        self._max_per_minute = max_per_minute
        self._clock = clock
        self._timeout_s = timeout_s
        self._last_posted: dict[str, float] = {}
        self._posts: deque[float] = deque()
        self.suppressed = {"duplicate": 0, "rate_limited": 0}

    def admit(self, alert: Alert) -> str | None:
        """Why ``alert`` is not to be posted now (duplicate, rate_limited), or None."""
        now = self._clock()
        last = self._last_posted.get(alert.name)
        if last is not None and now - last < self._repeat_s:
            return "duplicate"
        while self._posts and now - self._posts[0] >= 60:
            self._posts.popleft()
        if len(self._posts) >= self._max_per_minute:
            return "rate_limited"
        self._posts.append(now)
        self._last_posted[alert.name] = now
        return None

    async def notify(self, alert: Alert, client: httpx.AsyncClient) -> bool:
        refused = self.admit(alert)
        if refused is not None:
            self.suppressed[refused] += 1
            log.info("alert not posted", extra={"alert": alert.name, "why": refused})
            return False
        body = json.dumps({**asdict(alert), "service": "s3convex", "host": socket.gethostname(),
                           "firedAt": int(time.time() * 1000)}, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
                   SIGNATURE_HEADER: sign(self._secret, timestamp, body)}
        try:
            response = await client.post(self._url, content=body, headers=headers, timeout=self._timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("alert webhook failed", extra={"alert": alert.name, "error": type(exc).__name__})
            return False
        return True


class AlertWatch:
    def __init__(self, settings: TelemetrySettings, *, check_seconds: float = 15.0) -> None:
        self._settings = settings
        self._check_s = check_seconds
        self._dlq_depth: int | None = None
        self._firing: set[str] = set()
        self._last_check = time.monotonic()
        self.notifier: WebhookNotifier | None = None
        if settings.alert_webhook_url is not None and settings.alert_webhook_secret is not None:
            self.notifier = WebhookNotifier(
                str(settings.alert_webhook_url), settings.alert_webhook_secret.get_secret_value().encode(),
                repeat_s=settings.alert_repeat_seconds, max_per_minute=settings.alert_max_per_minute)

    def evaluate(self) -> list[Alert]:
        """The alerts that hold now, from what was seen since the previous call."""
        now = time.monotonic()
        minutes = max(now - self._last_check, 1e-3) / 60
        self._last_check = now
        dead, max_lag = gauges.take_window()
        alerts: list[Alert] = []
        depth = gauges.depths.get("dlq", {}).get("visible")
        if depth is not None:
            if self._dlq_depth is not None and depth > self._dlq_depth:
                alerts.append(Alert("DlqGrowing", "warning",
                                    f"DLQ grew from {self._dlq_depth} to {depth} messages; "
                                    "see `s3convex replay list`", depth, self._dlq_depth))
            self._dlq_depth = depth
        poison_rate = dead["poison"] / minutes
        limit = self._settings.alert_poison_per_minute
        if dead["poison"] and poison_rate >= limit:
            alerts.append(Alert("PoisonSpike", "critical",
                                f"{dead['poison']} poison messages dead-lettered "
                                f"({poison_rate:.1f}/min, threshold {limit}/min)", round(poison_rate, 2), limit))
        if max_lag > self._settings.alert_lag_seconds:
            alerts.append(Alert("SyncLagHigh", "warning",
                                f"an event took {max_lag:.0f} s from S3 to Convex "
                                f"(threshold {self._settings.alert_lag_seconds:.0f} s)",
                                round(max_lag, 1), self._settings.alert_lag_seconds))
        return alerts

    async def check(self, client: httpx.AsyncClient) -> list[Alert]:
        alerts = self.evaluate()
        names = {alert.name for alert in alerts}
        for name in self._firing - names:
            log.info("alert resolved", extra={"alert": name})
        self._firing = names
        for alert in alerts:
            log.warning("alert", extra={"alert": alert.name, "severity": alert.severity,
                                        "summary": alert.summary, "value": alert.value,
                                        "threshold": alert.threshold})
            if self.notifier is not None:
                await self.notifier.notify(alert, client)
        return alerts

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._check_s)
                await self.check(client)  # and once more at a stop: a drain's last window
