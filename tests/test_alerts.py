"""The daemon's own alerts (consumer/alerts.py): a structured ``alert`` log line, and a signed
POST to ``ALERT_WEBHOOK_URL`` — deduplicated and rate-limited under a poison storm, received
here by a real HTTP server on loopback. No key, session id or secret in any alert.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
import pytest
from aiohttp import web

from s3convex.consumer.alerts import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Alert,
    AlertWatch,
    WebhookNotifier,
)
from s3convex.consumer.telemetry import gauges, note_dead_letter, note_lag
from s3convex.settings import TelemetrySettings
from tests.backends import free_port
from tests.stack import Stack

SECRET = "alert-webhook-secret-5f0c9e"
SESSION = "session-7d1e4b2a"
KEY = f"sessions/{SESSION}/scenes/intro/v1/clip.mp4"


class Receiver:
    """A webhook endpoint on loopback that keeps every request it is sent."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _receive(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.read()))
        return web.json_response({"ok": True})

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def alerts(self) -> list[dict[str, Any]]:
        """Each post's body, after checking its signature as a receiver would."""
        bodies = []
        for headers, body in self.posts:
            expected = "sha256=" + hmac.new(SECRET.encode(), headers[TIMESTAMP_HEADER].encode() + b"." + body,
                                            hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
            assert abs(time.time() - int(headers[TIMESTAMP_HEADER])) < 120
            bodies.append(json.loads(body))
        return bodies


def settings(url: str, **overrides: Any) -> TelemetrySettings:
    return TelemetrySettings.model_validate({"ALERT_WEBHOOK_URL": url, "ALERT_WEBHOOK_SECRET": SECRET,
                                             "_env_file": None, **overrides})


def assert_clean(text: str) -> None:
    for secret in (SECRET, SESSION, KEY, "intro/v1"):
        assert secret not in text


async def test_a_poison_storm_posts_each_alert_once_within_the_rate_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    gauges.take_window()  # what earlier tests in this process saw is not this storm
    async with Receiver() as receiver, httpx.AsyncClient() as client:
        watch = AlertWatch(settings(receiver.url, ALERT_POISON_PER_MINUTE="5", ALERT_MAX_PER_MINUTE="2",
                                    ALERT_LAG_SECONDS="60", ALERT_REPEAT_SECONDS="900"))
        caplog.set_level(logging.INFO, logger="s3convex.consumer.alerts")
        gauges.depths["dlq"] = {"visible": 0}
        watch.evaluate()  # the first look only learns the DLQ's depth
        for look in range(1, 11):  # ten looks into a storm: poison, a growing DLQ, late events
            for _ in range(50):
                note_dead_letter(f"poison: invalid S3 notification for {KEY}")
            gauges.depths["dlq"] = {"visible": 50 * look}
            note_lag(600.0)
            fired = await watch.check(client)
            assert {a.name for a in fired} == {"PoisonSpike", "DlqGrowing", "SyncLagHigh"}

        posted = receiver.alerts()
        # Three alerts firing ten times each: two posts (the rate limit), each alert at most once.
        assert len(posted) == 2
        assert len({p["name"] for p in posted}) == 2
        assert watch.notifier is not None
        assert watch.notifier.suppressed["rate_limited"] + watch.notifier.suppressed["duplicate"] == 28
        alert_lines = [r for r in caplog.records if r.getMessage() == "alert"]
        assert len(alert_lines) == 30  # logged every look, posted within the limits
        for record in alert_lines:
            assert_clean(json.dumps(record.__dict__, default=str))
        for _, body in receiver.posts:
            assert_clean(body.decode())
        poison = next((p for p in posted if p["name"] == "PoisonSpike"), None)
        if poison is not None:
            assert poison["severity"] == "critical" and poison["threshold"] == 5


async def test_dedup_and_rate_limit_follow_the_clock() -> None:
    now = [1000.0]
    notifier = WebhookNotifier("http://127.0.0.1:9/unused", b"s", repeat_s=300, max_per_minute=2,
                               clock=lambda: now[0])
    spike = Alert("PoisonSpike", "critical", "x", 1, 1)
    assert notifier.admit(spike) is None
    assert notifier.admit(spike) == "duplicate"
    now[0] += 299
    assert notifier.admit(spike) == "duplicate"
    now[0] += 1
    assert notifier.admit(spike) is None  # repeated after ALERT_REPEAT_SECONDS while it holds
    assert notifier.admit(Alert("DlqGrowing", "warning", "x", 1, 1)) is None
    assert notifier.admit(Alert("SyncLagHigh", "warning", "x", 1, 1)) == "rate_limited"  # 2 in 60 s
    now[0] += 61
    assert notifier.admit(spike) == "duplicate"  # a flapping alert is not news every minute
    now[0] += 240
    assert notifier.admit(spike) is None


async def test_a_failing_webhook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    notifier = WebhookNotifier(f"http://127.0.0.1:{free_port()}/nobody", SECRET.encode(), repeat_s=0,
                               max_per_minute=10)
    async with httpx.AsyncClient() as client:
        assert await notifier.notify(Alert("DlqGrowing", "warning", "x", 1, 0), client) is False
    assert any(r.getMessage() == "alert webhook failed" for r in caplog.records)
    assert_clean(caplog.text)


def test_a_webhook_without_its_secret_is_a_configuration_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="ALERT_WEBHOOK_SECRET"):
        TelemetrySettings.model_validate({"ALERT_WEBHOOK_URL": "http://127.0.0.1/x", "_env_file": None})


@pytest.mark.e2e
async def test_the_daemon_alerts_on_a_poison_storm(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    storm = 12
    for i in range(storm):  # records of a bucket this daemon does not serve: poison, naming a key
        stack.send({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                 "eventTime": "2026-11-25T12:00:00.000Z",
                                 "s3": {"bucket": {"name": "not-this-bucket"},
                                        "object": {"key": f"{KEY}.{i}", "size": 1}}}]})
    assert await stack.wait_for_depth(storm) >= storm
    gauges.take_window()
    caplog.set_level(logging.INFO)
    async with Receiver() as receiver:
        assert await stack.drain(alert_webhook_url=receiver.url, alert_webhook_secret=SECRET,
                                 alert_poison_per_minute="2", alert_check_seconds="0.5",
                                 queue_metrics_interval_seconds="1") == 0
        posted = receiver.alerts()
    names = [p["name"] for p in posted]
    assert names.count("PoisonSpike") == 1, names  # every look during the storm, one post
    assert len(names) == len(set(names))
    assert any(r.getMessage() == "alert" and getattr(r, "alert", None) == "PoisonSpike" for r in caplog.records)
    for record in caplog.records:
        if record.getMessage() == "alert":
            assert_clean(json.dumps({k: v for k, v in record.__dict__.items() if k != "args"}, default=str))
    for _, body in receiver.posts:
        assert_clean(body.decode())
    assert len(stack.take_all(stack.dlq_url)) == storm
