"""The web app's URL requests, fulfilled by the daemon: a signed-in user (a dev JWT the local
Convex server verifies) who owns a session calls the public ``access:requestUrl``; when no
stored URL fits, the request waits in Convex until the daemon's ``url-requests`` task signs it;
then ``requestUrl`` hands the fresh URL out, and it downloads the object from S3 (moto or
LocalStack).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from convex_local.launcher import DevToken
from s3convex.adapters.aws import open_clients
from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.s3_store import S3ObjectStore
from s3convex.adapters.urls import url_source
from s3convex.consumer.daemon import Daemon
from s3convex.consumer.url_requests import MAX_REQUESTS, UrlRequests
from s3convex.core.errors import ConvexFunctionError, StorageUnavailable
from s3convex.core.ports import SignedUrl, UrlSource
from s3convex.settings import Settings
from tests.stack import Stack

pytestmark = pytest.mark.e2e


def _session(stack: Stack) -> str:
    return f"{stack.resources.prefix}-requests"


def _key(stack: Stack, name: str) -> str:
    return f"sessions/{_session(stack)}/scenes/intro/v1/{name}"


async def _public(stack: Stack, kind: str, path: str, args: dict[str, Any], token: str) -> Any:
    """A public function called as the signed-in user (``Authorization: Bearer <jwt>``)."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{stack.env['CONVEX_URL']}/api/{kind}",
                                     json={"path": path, "args": args, "format": "json"},
                                     headers={"Authorization": f"Bearer {token}"})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", body
    return body["value"]


async def _owned_upload(stack: Stack, token: DevToken, names: list[str], **config: Any) -> dict[str, str]:
    """Upload, drain the daemon (``config``), make the user the session's owner: name → assetId."""
    for name in names:
        stack.put(_key(stack, name), name.encode())
    await stack.wait_for_depth(len(names))
    assert await stack.drain(**config) == 0
    await stack.convex.mutation("access:setOwner", {
        "sessionId": _session(stack), "ownerId": token.principal, "actor": "test"})
    return {name: (await stack.record(_key(stack, name)) or {})["_id"] for name in names}


async def _download(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.status_code
    return response.content


def _fulfiller(stack: Stack, settings: Settings, urls: UrlSource, **options: Any) -> UrlRequests:
    return UrlRequests(stack.convex, urls, [stack.bucket], interval_s=0.1,
                       lifetime_for=settings.urls.expires_for, **options)


async def test_a_request_is_signed_by_the_daemon_and_handed_out(
        stack: Stack, mint_token: Any, tmp_path: Path) -> None:
    token = mint_token(f"{stack.resources.prefix}-alice")
    assets = await _owned_upload(stack, token, ["scene.py", "video.mp4"], s3_presign_expires=3600)

    # A stored one-hour URL fits a video (URL_EXPIRES_VIDEO 3600 in Convex), not a source file
    # (300): that one needs a signing request.
    video = await _public(stack, "mutation", "access:requestUrl", {"assetId": assets["video.mp4"]}, token)
    assert (video["status"], video["urlSource"]) == ("ready", "stored")
    first = await _public(stack, "mutation", "access:requestUrl", {"assetId": assets["scene.py"]}, token)
    assert first["status"] == "pending"
    request = {"requestId": first["requestId"]}
    assert (await _public(stack, "query", "access:urlRequest", request, token))["status"] == "pending"

    log_path = tmp_path / "daemon.log"
    # This side caps the source lifetime lower than Convex's 300 s: the URL lives 120 s.
    daemon = stack.spawn(log_path=log_path, extra_env={"URL_REQUEST_POLL_MS": "200",
                                                       "URL_EXPIRES_SOURCE": "120"})
    try:
        started = time.monotonic()
        while (state := await _public(stack, "query", "access:urlRequest", request, token))["status"] == "pending":
            assert time.monotonic() - started < 30, log_path.read_text()[-3000:]
            await asyncio.sleep(0.05)
        assert state["status"] == "done"
        ready = await _public(stack, "mutation", "access:requestUrl", {"assetId": assets["scene.py"]}, token)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
    assert code == 0, log_path.read_text()[-3000:]

    assert (ready["status"], ready["urlSource"], ready["kind"]) == ("ready", "fresh", "source")
    assert abs(ready["expiresAt"] - (time.time() + 120) * 1000) < 30_000
    assert await _download(ready["url"]) == b"scene.py"
    # A 2-minute URL does not replace the asset's fresher one-hour URL of the same configuration.
    record = await stack.record(_key(stack, "scene.py")) or {}
    assert record["url"] != ready["url"] and record["urlConfig"] == "presigned:3600"
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    fulfilled = [line for line in lines if line.get("msg") == "url requests fulfilled"]
    assert fulfilled and fulfilled[0]["done"] == 1, lines[-20:]


async def test_a_fresh_url_also_replaces_a_stored_one_about_to_expire(stack: Stack, mint_token: Any) -> None:
    token = mint_token(f"{stack.resources.prefix}-bob")
    # Stored URLs of 30 s: less than the minute a reader needs, so the video is requested too.
    assets = await _owned_upload(stack, token, ["video.mp4"], s3_presign_expires=30)
    pending = await _public(stack, "mutation", "access:requestUrl", {"assetId": assets["video.mp4"]}, token)
    assert pending["status"] == "pending"

    settings = stack.settings(s3_presign_expires=3600)
    async with open_clients(settings.aws) as aws:
        report = await _fulfiller(stack, settings, url_source(settings.urls, aws)).fulfil_once()
    assert (report.pending, dict(report.outcomes)) == (1, {"stored": 1})

    record = await stack.record(_key(stack, "video.mp4")) or {}
    assert record["urlConfig"] == "presigned:3600"
    assert abs(record["urlExpiresAt"] - (time.time() + 3600) * 1000) < 30_000
    assert await _download(record["url"]) == b"video.mp4"
    ready = await _public(stack, "mutation", "access:requestUrl", {"assetId": assets["video.mp4"]}, token)
    assert (ready["status"], ready["url"]) == ("ready", record["url"])


class _Flaky:
    """The real source, except for some keys: one S3 cannot sign for now, one never."""

    def __init__(self, urls: UrlSource, *, transient: str, permanent: str) -> None:
        self._urls = urls
        self._transient = transient
        self._permanent = permanent
        self.config = urls.config

    async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
        if key == self._transient:
            raise StorageUnavailable("presign: throttled")
        if key == self._permanent:
            from s3convex.adapters.urls import UrlError

            raise UrlError("cannot sign this key")
        return await self._urls.url_for(bucket, key, expires_in=expires_in)


async def test_gone_failed_and_deferred_requests(stack: Stack, mint_token: Any) -> None:
    token = mint_token(f"{stack.resources.prefix}-carol")
    names = ["gone.py", "broken.py", "later.py"]
    assets = await _owned_upload(stack, token, names)
    requests = {}
    for name in names:
        answer = await _public(stack, "mutation", "access:requestUrl", {"assetId": assets[name]}, token)
        requests[name] = {"requestId": answer["requestId"]}
    stack.s3.delete_object(Bucket=stack.bucket, Key=_key(stack, "gone.py"))
    await stack.wait_for_depth(1)
    assert await stack.drain() == 0

    settings = stack.settings()
    async with open_clients(settings.aws) as aws:
        urls = _Flaky(url_source(settings.urls, aws), transient=_key(stack, "later.py"),
                      permanent=_key(stack, "broken.py"))
        fulfiller = _fulfiller(stack, settings, urls)
        report = await fulfiller.fulfil_once()
        assert (report.pending, report.deferred, dict(report.outcomes)) == (3, 1, {"gone": 1, "failed": 1})
        status = {name: (await _public(stack, "query", "access:urlRequest", request, token))["status"]
                  for name, request in requests.items()}
        assert status == {"gone.py": "gone", "broken.py": "failed", "later.py": "pending"}
        # The deferred one is signed by a later poll, once S3 can.
        urls._transient = ""
        again = await fulfiller.fulfil_once()
    assert (again.pending, dict(again.outcomes)) == (1, {"done": 1})
    assert (await _public(stack, "query", "access:urlRequest", requests["later.py"], token))["status"] == "done"


async def test_an_object_s3_lost_is_marked_missing_and_never_handed_out(
        stack: Stack, mint_token: Any) -> None:
    token = mint_token(f"{stack.resources.prefix}-dave")
    assets = await _owned_upload(stack, token, ["lost.py", "kept.py"])
    requests = {}
    for name in ("lost.py", "kept.py"):  # source files: no stored URL fits, both are requested
        answer = await _public(stack, "mutation", "access:requestUrl", {"assetId": assets[name]}, token)
        assert answer["status"] == "pending", answer
        requests[name] = {"requestId": answer["requestId"]}
    # S3 loses the object and no event tells Convex (notifications off): the record says available.
    stack.s3.put_bucket_notification_configuration(Bucket=stack.bucket, NotificationConfiguration={})
    stack.s3.delete_object(Bucket=stack.bucket, Key=_key(stack, "lost.py"))
    assert (await stack.record(_key(stack, "lost.py")) or {})["status"] == "available"

    settings = stack.settings()
    before_ms = int(time.time() * 1000)
    async with open_clients(settings.aws) as aws:
        report = await _fulfiller(stack, settings, url_source(settings.urls, aws),
                                  objects=S3ObjectStore(aws.s3)).fulfil_once()

    assert (report.pending, dict(report.outcomes)) == (2, {"gone": 1, "done": 1})
    record = await stack.record(_key(stack, "lost.py")) or {}
    assert record["status"] == "missing" and not record.get("url")
    assert before_ms <= record["missingSince"] <= int(time.time() * 1000)
    state = await _public(stack, "query", "access:urlRequest", requests["lost.py"], token)
    assert state["status"] == "gone" and "url" not in state
    # The public API answers a typed error from now on, never a URL (convex/PUBLIC_API.md).
    again = await _public(stack, "mutation", "access:requestUrl", {"assetId": assets["lost.py"]}, token)
    assert again["status"] == "error"
    assert again["error"]["code"] == "gone" and again["error"]["reason"] == "missing"
    assert again["error"]["deletedAt"] == record["missingSince"]
    # The object still there was signed as usual, and downloads.
    kept = await _public(stack, "mutation", "access:requestUrl", {"assetId": assets["kept.py"]}, token)
    assert kept["status"] == "ready" and await _download(kept["url"]) == b"kept.py"


def test_a_request_lives_what_it_asked_for_capped_by_its_kind() -> None:
    limits = {"source": 120, "video": 3600, "other": 900}
    unused: Any = None  # no call reaches Convex or S3 here
    fulfiller = UrlRequests(unused, unused, [], interval_s=1, lifetime_for=limits.__getitem__)
    assert fulfiller.lifetime_s({"ttlMs": 300_000.0, "kind": "source"}) == 120
    assert fulfiller.lifetime_s({"ttlMs": 1_999, "kind": "video"}) == 1  # whole seconds
    assert fulfiller.lifetime_s({"ttlMs": 600_000}) == 600  # no kind: "other"
    assert fulfiller.lifetime_s({"ttlMs": 500}) == 1  # never 0
    with pytest.raises(ValueError):
        UrlRequests(unused, unused, [], interval_s=1, lifetime_for=len, batch=MAX_REQUESTS + 1)


class _Counting(ConvexClient):
    calls: list[str]

    async def query(self, path: str, args: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        self.calls.append(path)
        return await super().query(path, args, **kw)

    async def mutation(self, path: str, args: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        self.calls.append(path)
        return await super().mutation(path, args, **kw)


async def test_idle_it_costs_one_small_query_per_interval(stack: Stack) -> None:
    settings = stack.settings()
    async with _Counting.from_settings(settings.convex) as convex, open_clients(settings.aws) as aws:
        assert isinstance(convex, _Counting)
        convex.calls = []
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(UrlRequests(
            convex, url_source(settings.urls, aws), [stack.bucket], interval_s=0.1,
            lifetime_for=settings.urls.expires_for).run(stop))
        # Poll the fake's call list until the fulfiller has polled five times (it keeps polling).
        while len(convex.calls) < 5 and time.monotonic() - started < 30:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
        elapsed = time.monotonic() - started
    # Idle: only the small read, never a write, and never more than one per interval (plus the
    # first poll at once) — an upper bound, so a slow machine cannot make it fail.
    assert set(convex.calls) == {"urls:pendingRequests"}
    assert 5 <= len(convex.calls) <= elapsed / 0.1 + 2, (len(convex.calls), elapsed)


async def test_the_daemon_stops_when_the_fulfiller_dies(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    async def broken(self: UrlRequests) -> None:
        raise ConvexFunctionError("urls:pendingRequests", "Could not find public function")

    monkeypatch.setattr(UrlRequests, "fulfil_once", broken)
    daemon = Daemon(stack.settings(url_request_poll_ms=100))
    assert await asyncio.wait_for(daemon.run(), 60) == 1
    failed = [r for r in caplog.records if r.getMessage() == "supervised task failed; stopping"]
    assert failed and getattr(failed[0], "task", None) == "url-requests"

