"""Stored URLs follow the URL configuration (R8.3): every URL carries the name of the
configuration that made it (``urlConfig``), and the refresher brings records made under another
one in line, a bounded number per sweep.

The names and their use by the sources and handlers are unit tests; the three changes of
configuration (presigned → public, one public base → another, public → presigned) run end to
end: uploads drained by the daemon under configuration A into the local Convex server, then the
refresher under B, sweep by sweep, against S3 (moto or LocalStack), each URL downloaded.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from s3convex.adapters.aws import open_clients
from s3convex.adapters.urls import (
    MAX_URL_CONFIG_LENGTH,
    FallbackUrls,
    PublicUrls,
    UrlError,
    presigned_config,
    public_config,
    public_url,
    url_source,
)
from s3convex.consumer.url_refresh import CONFIG_SWEEP_LIMIT, RefreshReport, UrlRefresher
from s3convex.core.asset import AssetChange
from s3convex.core.errors import ConvexFunctionError
from s3convex.core.events import ObjectEvent
from s3convex.core.ports import ObjectHead, SignedUrl, UrlSource
from s3convex.handlers.context import HandlerContext
from s3convex.handlers.objects import on_object_created, on_object_removed
from s3convex.settings import UrlSettings, load
from tests.stack import Stack

# --- the names ----------------------------------------------------------------------------------


def test_names_are_stable_and_say_what_makes_the_urls() -> None:
    assert presigned_config(3600) == "presigned:3600"
    assert public_config("https://cdn.example/media/") == "public:https://cdn.example/media"
    # The same URLs, the same name: a trailing slash changes nothing.
    assert public_config("https://cdn.example/media") == public_config("https://cdn.example/media/")
    assert public_config("https://cdn-b.example") != public_config("https://cdn-a.example")


def test_a_name_holds_no_credentials_and_fits_convex() -> None:
    with_password = public_config("https://user:s3cret@cdn.example/media")
    assert "s3cret" not in with_password and "user" not in with_password
    assert with_password.startswith("public:https://cdn.example/media#")
    assert with_password != public_config("https://user:other@cdn.example/media")  # still changes
    long_a = public_config("https://cdn.example/" + "a" * 400)
    long_b = public_config("https://cdn.example/" + "a" * 399 + "b")
    assert len(long_a) == len(long_b) == MAX_URL_CONFIG_LENGTH and long_a != long_b


def _settings(**env: Any) -> UrlSettings:
    return load(UrlSettings, _env_file=None, **env)


class _Aws:
    s3 = None
    signed_head = None


def test_the_sources_name_their_configuration() -> None:
    presigned = url_source(_settings(s3_presign_expires=900), _Aws())
    public = url_source(_settings(s3_public_base_url="https://cdn.example/m/"), _Aws())
    assert presigned.config == "presigned:900"
    # With a public base the configuration is the public one (the presigned URL is a fallback).
    assert public.config == "public:https://cdn.example/m"


class _Presigned:
    config = "presigned:60"

    def __init__(self) -> None:
        self.asked: list[int | None] = []

    async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
        self.asked.append(expires_in)
        return SignedUrl(f"signed:{key}", 1_000 * (expires_in or 60), self.config)


class _BrokenPublic:
    config = "public:https://cdn.example"

    async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
        raise UrlError("cannot encode")


async def test_a_public_url_that_fell_back_carries_the_presigned_configuration() -> None:
    fallback = _Presigned()
    source = FallbackUrls(_BrokenPublic(), fallback)
    assert source.config == "public:https://cdn.example"
    signed = await source.url_for("b", "k", expires_in=300)
    assert signed == SignedUrl("signed:k", 300_000, "presigned:60")
    assert fallback.asked == [300]  # the lifetime asked for reaches the presigner
    public = await PublicUrls("https://cdn.example/").url_for("b", "a b", expires_in=300)
    assert public == SignedUrl("https://cdn.example/a%20b", None, "public:https://cdn.example")


HEAD = ObjectHead(size=3, etag="e")
KEY = "sessions/s1/scenes/intro/v1/video.mp4"


class _Store:
    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectHead | None:
        return HEAD


def _event(name: str = "ObjectCreated:Put") -> ObjectEvent:
    return ObjectEvent(bucket="b", key=KEY, event_name=name, size=3, etag="e", event_time_ms=1_800_000_000_000)


async def test_every_event_url_carries_its_configuration() -> None:
    created = await on_object_created(_event(), HandlerContext(_Store(), _Presigned()))
    assert (created.url, created.urlConfig) == (f"signed:{KEY}", "presigned:60")
    fell_back = await on_object_created(_event(), HandlerContext(
        _Store(), FallbackUrls(_BrokenPublic(), _Presigned())))
    assert fell_back.urlConfig == "presigned:60"
    removed = await on_object_removed(_event("ObjectRemoved:Delete"), HandlerContext(_Store(), _Presigned()))
    assert "urlConfig" not in removed.to_convex()


def test_asset_change_refuses_what_convex_would() -> None:
    base = {"type": "created", "bucket": "b", "key": "k", "eventName": "ObjectCreated:Put",
            "eventTime": 1_800_000_000_000, "size": 1}
    for bad in ("", "x" * (MAX_URL_CONFIG_LENGTH + 1)):
        with pytest.raises(ValueError):
            AssetChange.model_validate({**base, "urlConfig": bad})
    assert AssetChange.model_validate({**base, "urlConfig": "p" * MAX_URL_CONFIG_LENGTH}).urlConfig


def test_the_report_keeps_both_sweeps_apart() -> None:
    report = RefreshReport(scanned=2, out_of_config=3)
    report.outcomes.update(["stored", "stored"])
    report.realigned.update(["stored", "stored", "error_recorded"])
    assert report.to_dict() == {"scanned": 2, "stored": 2, "outOfConfig": 3,
                                "outOfConfig.error_recorded": 1, "outOfConfig.stored": 2}
    assert CONFIG_SWEEP_LIMIT == 500


class _Convex:
    """Convex as the refresher sees it: nothing expiring, one record out of line per page."""

    def __init__(self, out_of_line: int) -> None:
        self.left = out_of_line
        self.queries: list[dict[str, Any]] = []
        self.stored: list[list[dict[str, Any]]] = []

    async def query(self, path: str, args: dict[str, Any]) -> Any:
        if path == "urls:expiring":
            return {"page": [], "isDone": True, "continueCursor": "end"}
        self.queries.append(args["paginationOpts"])
        if args["paginationOpts"]["cursor"] == "stale":
            raise ConvexFunctionError(path, "Uncaught ConvexError", {"code": "BadCursor"})
        rows = [{"assetId": f"a{self.left - i}", "bucket": "b", "key": f"k{self.left - i}"}
                for i in range(min(self.left, args["paginationOpts"]["numItems"]))]
        self.left -= len(rows)
        return {"page": rows, "isDone": self.left == 0, "continueCursor": f"c{self.left}"}

    async def mutation(self, path: str, args: dict[str, Any]) -> Any:
        self.stored.append(args["updates"])
        return ["stored"] * len(args["updates"])


async def test_a_sweep_stores_at_most_its_limit_in_pages() -> None:
    convex = _Convex(out_of_line=1_234)
    unused: Any = convex
    refresher = UrlRefresher(unused, _Presigned(), ["b"], margin_s=60, interval_s=60)
    sweeps = []
    while convex.left:
        sweeps.append((await refresher.refresh_once()).out_of_config)
    # The defaults: ≤ 500 a sweep, in store calls of ≤ 100; 1,234 records in ⌈1234/500⌉ sweeps.
    assert sweeps == [500, 500, 234]
    assert max(len(updates) for updates in convex.stored) == 100
    assert {u["urlConfig"] for updates in convex.stored for u in updates} == {"presigned:60"}
    # Each sweep continued where the last one stopped.
    assert [q["cursor"] for q in convex.queries][4:6] == ["c834", "c734"]


async def test_a_cursor_convex_no_longer_takes_starts_the_pass_again() -> None:
    convex = _Convex(out_of_line=3)
    unused: Any = convex
    refresher = UrlRefresher(unused, _Presigned(), ["b"], margin_s=60, interval_s=60)
    refresher._config_cursors["b"] = "stale"  # as if kept across a redeploy
    report = await refresher.refresh_once()
    assert report.out_of_config == 3
    assert [q["cursor"] for q in convex.queries] == ["stale", None]


# --- end to end: a change of configuration, sweep by sweep ----------------------------------------

N = 5  # records made under configuration A
LIMIT = 2  # the bound per sweep for these tests (the default is CONFIG_SWEEP_LIMIT, 500)
SWEEPS = math.ceil(N / LIMIT)  # what the refresher promises: in line after this many


def _session(stack: Stack) -> str:
    return f"{stack.resources.prefix} config"


async def _uploaded(stack: Stack, scene: str, **config: Any) -> list[str]:
    keys = [f"sessions/{_session(stack)}/scenes/{scene}/v1/file {i} ü.mp4" for i in range(N)]
    for key in keys:
        stack.put(key, key.encode())
    await stack.wait_for_depth(N)
    assert await stack.drain(**config) == 0
    return keys


def _make_public(stack: Stack) -> None:
    # S3 itself stands in for the CDN: a public-read bucket, addressed path-style.
    stack.s3.put_bucket_policy(Bucket=stack.bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{stack.bucket}/*"}]}))


def _base(stack: Stack, *, other_domain: bool = False) -> str:
    """A public base on this S3 endpoint; ``other_domain``: the same server under another name."""
    parts = urlsplit(stack.resources.endpoint_url)
    if other_domain:
        host = "localhost" if parts.hostname != "localhost" else "127.0.0.1"
        parts = parts._replace(netloc=f"{host}:{parts.port}")
    return f"{urlunsplit(parts)}/{stack.bucket}/"


async def _records(stack: Stack, keys: list[str]) -> dict[str, dict[str, Any]]:
    return {key: await stack.record(key) or {} for key in keys}


async def _download(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content


async def _converge(stack: Stack, keys: list[str], wrap: Callable[[UrlSource], UrlSource] | None = None,
                    extra_sweeps: int = 1, **config: Any) -> tuple[str, list[RefreshReport]]:
    """Run the refresher under ``config`` for SWEEPS sweeps, then ``extra_sweeps`` more (which
    find nothing left to bring in line); check after each that it touched at most LIMIT records,
    and that every one it stored is now in line."""
    before = await _records(stack, keys)
    settings = stack.settings(**config)
    reports: list[RefreshReport] = []
    async with open_clients(settings.aws) as aws:
        urls = url_source(settings.urls, aws)
        refresher = UrlRefresher(stack.convex, wrap(urls) if wrap else urls, [stack.bucket],
                                 margin_s=settings.urls.effective_refresh_margin, interval_s=60,
                                 page_size=1, config_limit=LIMIT)
        in_line = 0
        for _ in range(SWEEPS + extra_sweeps):
            report = await refresher.refresh_once()
            reports.append(report)
            now = await _records(stack, keys)
            changed = [key for key in keys if now[key].get("url") != before[key].get("url")]
            assert report.out_of_config <= LIMIT and len(changed) <= LIMIT, report.to_dict()
            assert report.scanned == 0  # nothing was about to expire: only the configuration moved
            now_in_line = sum(record.get("urlConfig") == urls.config for record in now.values())
            assert now_in_line - in_line == report.realigned["stored"], report.to_dict()
            in_line, before = now_in_line, now
        return urls.config, reports


def _assert_in_line_after(reports: list[RefreshReport], stored: int = N) -> None:
    assert sum(r.realigned["stored"] for r in reports[:SWEEPS]) == stored
    assert reports[-1].out_of_config == 0  # nothing left for the sweep after


@pytest.mark.e2e
async def test_presigned_to_public(stack: Stack) -> None:
    keys = await _uploaded(stack, "to-public", s3_presign_expires=3600)
    assert {r.get("urlConfig") for r in (await _records(stack, keys)).values()} == {"presigned:3600"}
    _make_public(stack)
    base = _base(stack)

    config, reports = await _converge(stack, keys, s3_public_base_url=base)

    assert config == public_config(base)
    _assert_in_line_after(reports)
    for key, record in (await _records(stack, keys)).items():
        assert record["url"] == public_url(base, key) and record["urlConfig"] == config
        assert "urlExpiresAt" not in record and "urlError" not in record
        assert record["revision"] == 1  # URL fields only: not an event
        assert await _download(record["url"]) == key.encode()


@pytest.mark.e2e
async def test_public_to_another_public_base(stack: Stack) -> None:
    _make_public(stack)
    old, new = _base(stack), _base(stack, other_domain=True)
    keys = await _uploaded(stack, "new-cdn", s3_public_base_url=old)
    assert {r.get("urlConfig") for r in (await _records(stack, keys)).values()} == {public_config(old)}

    # Neither URL expires: only the configuration tells the new one to replace the old.
    config, reports = await _converge(stack, keys, s3_public_base_url=new)

    assert config == public_config(new) != public_config(old)
    _assert_in_line_after(reports)
    for key, record in (await _records(stack, keys)).items():
        assert record["url"] == public_url(new, key) and record["urlConfig"] == config
        assert await _download(record["url"]) == key.encode()


@pytest.mark.e2e
async def test_public_to_presigned(stack: Stack) -> None:
    _make_public(stack)
    keys = await _uploaded(stack, "to-presigned", s3_public_base_url=_base(stack))
    stack.s3.delete_bucket_policy(Bucket=stack.bucket)  # private again: only signed URLs work

    # The presigned URL expires sooner than the public one never does: replaced all the same.
    config, reports = await _converge(stack, keys, s3_presign_expires=900)

    assert config == "presigned:900"
    _assert_in_line_after(reports)
    for key, record in (await _records(stack, keys)).items():
        assert "X-Amz-Signature=" in record["url"] and record["urlConfig"] == config
        assert abs(record["urlExpiresAt"] - (time.time() + 900) * 1000) < 60_000
        assert await _download(record["url"]) == key.encode()


class _FailsFor:
    """The real source, except that one key cannot be signed (as a key a CDN cannot encode)."""

    def __init__(self, urls: UrlSource, key: str) -> None:
        self._urls = urls
        self._key = key
        self.config = urls.config

    async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
        if key == self._key:
            raise UrlError(f"cannot sign {key!r}")
        return await self._urls.url_for(bucket, key, expires_in=expires_in)


@pytest.mark.e2e
async def test_a_record_that_cannot_be_re_signed_blocks_nothing(stack: Stack) -> None:
    keys = await _uploaded(stack, "stuck", s3_presign_expires=3600)
    # A record from before urlConfig existed (none recorded): out of line, and first in
    # outOfConfig's order (no urlConfig sorts lowest). It cannot be re-signed: a sweep that
    # started again at the head each time would spend its budget on it and fall behind.
    stuck = f"sessions/{_session(stack)}/legacy.mp4"
    stack.put(stuck, b"legacy")
    await stack.wait_for_depth(1)
    stack.take_all()
    await stack.convex.mutation("assets:applyEvents", {"events": [AssetChange(
        type="created", bucket=stack.bucket, key=stuck, eventName="ObjectCreated:Put",
        eventTime=int(time.time() * 1000), size=6, url="https://old.example/legacy.mp4").to_convex()]})
    _make_public(stack)
    base = _base(stack)

    # N + 1 rows at LIMIT a sweep: ⌈(N + 1) / LIMIT⌉ = SWEEPS; then the end of the pass; then a
    # new pass, which meets the stuck record again (and nothing else).
    config, reports = await _converge(stack, [*keys, stuck], wrap=lambda urls: _FailsFor(urls, stuck),
                                      extra_sweeps=2, s3_public_base_url=base)

    _assert_in_line_after(reports[:-1])
    assert (reports[-1].out_of_config, dict(reports[-1].realigned)) == (1, {"error_recorded": 1})
    records = await _records(stack, [*keys, stuck])
    assert all(records[key]["urlConfig"] == config for key in keys)
    for key in keys:
        assert await _download(records[key]["url"]) == key.encode()
    # The last good URL stays, with why it was not renewed.
    assert records[stuck]["url"] == "https://old.example/legacy.mp4" and "urlConfig" not in records[stuck]
    assert "cannot sign" in records[stuck]["urlError"]
