"""The key layout (handlers/layout.py), its settings, and what the handlers fill from it.

Pure: no server. The handler tests use two tiny fakes (an object store, a URL source) because
what is under test is the mapping, not S3.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3convex.adapters.urls import FallbackUrls, PublicUrls, UrlError, public_url
from s3convex.core.asset import etag_kind
from s3convex.core.errors import ConfigError, StorageError
from s3convex.core.events import ObjectEvent
from s3convex.core.layout import DEFAULT_LAYOUT, OUTSIDE, KeyInfo, KeyLayout, file_kind
from s3convex.core.ports import ObjectHead, SignedUrl
from s3convex.handlers.context import HandlerContext
from s3convex.handlers.objects import on_object_created, on_object_removed
from s3convex.settings import SEVEN_DAYS, load_settings

DEFAULT = KeyLayout.default()


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("sessions/s1/scenes/intro/v1/video.mp4", KeyInfo("video", "s1", "intro", 1)),
        ("sessions/s1/scenes/intro/v12/render.webm", KeyInfo("video", "s1", "intro", 12)),
        ("sessions/s1/scenes/intro/v007/clip.MOV", KeyInfo("video", "s1", "intro", 7)),
        ("sessions/s1/scenes/intro/v2/scene.py", KeyInfo("source", "s1", "intro", 2)),
        ("sessions/s1/scenes/intro/v2/render.json", KeyInfo("metadata", "s1", "intro", 2)),
        ("sessions/s1/scenes/intro/v2/manifest.json", KeyInfo("manifest", "s1", "intro", 2)),
        ("sessions/s1/scenes/intro/v2/Manifest.JSON", KeyInfo("manifest", "s1", "intro", 2)),
        ("sessions/s1/scenes/intro/v2/poster.webp", KeyInfo("thumbnail", "s1", "intro", 2)),
        ("sessions/s1/scenes/intro/v2/captions.vtt", KeyInfo("subtitle", "s1", "intro", 2)),
        ("sessions/s1/scenes/intro/v2/captions.srt", KeyInfo("subtitle", "s1", "intro", 2)),
        ("sessions/s1/scenes/intro/v2/notes.txt", KeyInfo("other", "s1", "intro", 2)),
        ("sessions/s1/scenes/intro/v2/README", KeyInfo("other", "s1", "intro", 2)),
        # Session-level files.
        ("sessions/s1/manifest.json", KeyInfo("manifest", "s1")),
        ("sessions/s1/transcript.srt", KeyInfo("subtitle", "s1")),
        # Spaces, plus signs and unicode are just characters of a segment.
        ("sessions/my session/scenes/ü 東京+1/v3/video.mp4",
         KeyInfo("video", "my session", "ü 東京+1", 3)),
        # Outside the layout: tracked, kind other, no session — whatever the extension.
        ("loose/video.mp4", OUTSIDE),
        ("sessions/s1/scenes/intro/video.mp4", OUTSIDE),  # no version segment
        ("sessions/s1/scenes/intro/vX/video.mp4", OUTSIDE),
        ("sessions/s1/scenes/intro/v1/sub/video.mp4", OUTSIDE),
        ("sessions//video.mp4", OUTSIDE),
        ("video.mp4", OUTSIDE),
    ],
)
def test_default_layout(key: str, expected: KeyInfo) -> None:
    assert DEFAULT.classify(key) == expected


def test_default_layout_is_the_documented_one() -> None:
    assert DEFAULT.spec == DEFAULT_LAYOUT
    assert load_settings(s3_bucket="bucket", convex_url="http://c", convex_deploy_key="k",
                         _env_file=None).aws.asset_key_layout == DEFAULT_LAYOUT


def test_custom_layout_with_wildcard_and_embedded_placeholders() -> None:
    layout = KeyLayout.parse(
        " tenants/*/s-{sessionId}/{sceneId}@{version}/{file} ; tenants/*/s-{sessionId}/{file} ")
    assert layout.classify("tenants/acme/s-42/intro@3/take.mp4") == KeyInfo("video", "42", "intro", 3)
    assert layout.classify("tenants/acme/s-42/cover.png") == KeyInfo("thumbnail", "42")
    assert layout.classify("tenants/acme/x-42/cover.png") == OUTSIDE
    # Literal characters are literal, not regular-expression syntax.
    dotted = KeyLayout.parse("a.b/{sessionId}/{file}")
    assert dotted.classify("a.b/s/x.py") == KeyInfo("source", "s")
    assert dotted.classify("aXb/s/x.py") == OUTSIDE


def test_first_matching_pattern_wins() -> None:
    layout = KeyLayout.parse("{sessionId}/{file};{sessionId}/{sceneId}/v{version}/{file}")
    assert layout.classify("s/video.mp4") == KeyInfo("video", "s")
    assert layout.classify("s/a/v1/video.mp4") == KeyInfo("video", "s", "a", 1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "at least one pattern"),
        ("sessions/{sessionId}", "needs {file}"),
        ("sessions/{file}/{sessionId}", "{file} must be in the last segment"),
        ("sessions/{sessionId}/{sessionId}/{file}", "appears twice"),
        ("sessions/{session}/{file}", "unknown placeholder {session}"),
        ("scenes/{sceneId}/{file}", "{sceneId} needs {sessionId}"),
        ("{sessionId}/v{version}/{file}", "{version} needs {sceneId}"),
        ("a//{file}", "empty segment"),
        ("a/{sessionId/{file}", "unbalanced"),
    ],
)
def test_bad_layouts_are_refused_with_a_reason(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        KeyLayout.parse(spec)


def test_a_bad_layout_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"ASSET_KEY_LAYOUT=.* is invalid: .*\{file\} must be in the last"):
        load_settings(s3_bucket="bucket", convex_url="http://c", convex_deploy_key="k",
                      asset_key_layout="x/{file}/y", _env_file=None)


@given(st.text(min_size=1, max_size=200))
def test_any_key_classifies_without_error(key: str) -> None:
    info = DEFAULT.classify(key)
    assert info.kind in {"video", "source", "metadata", "manifest", "thumbnail", "subtitle", "other"}
    if info.session_id is None:
        assert info == OUTSIDE


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.MP4", "video"), ("x.tsx", "source"), ("m.json", "metadata"), ("manifest.json", "manifest"),
     (".json", "other"), ("archive.tar.gz", "other"), ("noext", "other"), ("t.jpeg", "thumbnail")],
)
def test_file_kind(name: str, kind: str) -> None:
    assert file_kind(name) == kind


# --- settings ----------------------------------------------------------------------------------


BASE = {"s3_bucket": "bucket", "convex_url": "http://c", "convex_deploy_key": "k", "_env_file": None}


def test_url_lifetimes_per_kind_and_their_cap() -> None:
    settings = load_settings(**BASE, url_expires_video="7200")
    assert settings.urls.expires_for("video") == 7200
    assert settings.urls.expires_for("source") == 300 < settings.urls.expires_for("metadata")
    assert settings.urls.expires_for("unheard-of") == settings.urls.expires_other
    with pytest.raises(ConfigError, match="URL_EXPIRES_SOURCE="):
        load_settings(**BASE, url_expires_source=str(SEVEN_DAYS + 1))


def test_refresh_margin_is_at_most_half_a_stored_urls_life() -> None:
    assert load_settings(**BASE).urls.effective_refresh_margin == 600
    assert load_settings(**BASE, s3_presign_expires="300").urls.effective_refresh_margin == 150


def test_cors_and_kms_settings() -> None:
    settings = load_settings(**BASE, s3_cors_allowed_origins=" https://a.example, https://b.example,",
                             s3_cors_allowed_methods="get, head", s3_kms_key_id="  ")
    assert settings.aws.cors_allowed_origins == ("https://a.example", "https://b.example")
    assert settings.aws.cors_allowed_methods == ("GET", "HEAD")
    assert settings.aws.kms_key_id is None
    with pytest.raises(ConfigError, match="S3_CORS_ALLOWED_METHODS="):
        load_settings(**BASE, s3_cors_allowed_methods="GET,PATCH")


# --- ETags -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etag", "sse", "kind"),
    [
        ("5d41402abc4b2a76b9719d911017c592", None, "md5"),
        ("5d41402abc4b2a76b9719d911017c592", "AES256", "md5"),
        ("5d41402abc4b2a76b9719d911017c592", "aws:kms", "unknown"),
        ("5d41402abc4b2a76b9719d911017c592-2", None, "multipart"),
        ("5d41402abc4b2a76b9719d911017c592-10000", "AES256", "multipart"),
        ("not-an-etag", None, "unknown"),
        (None, None, None),
    ],
)
def test_a_multipart_etag_is_never_labelled_md5(etag: str | None, sse: str | None, kind: str | None) -> None:
    assert etag_kind(etag, sse) == kind


# --- handlers ------------------------------------------------------------------------------------


class _Store:
    def __init__(self, head: ObjectHead | None) -> None:
        self._head = head

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectHead | None:
        return self._head


class _FailingUrls:
    config = "presigned:60"

    async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
        raise StorageError("presign GetObject: NoCredentialsError")


class _FixedUrls:
    config = "presigned:60"

    async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
        return SignedUrl(f"signed:{key}", 123, self.config)


def _event(key: str, name: str = "ObjectCreated:Put") -> ObjectEvent:
    return ObjectEvent(bucket="b", key=key, event_name=name, size=3, etag="e",
                       event_time_ms=int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000))


HEAD = ObjectHead(size=3, etag="e")
KEY = "sessions/s1/scenes/intro/v2/scene.py"


async def test_created_and_removed_carry_the_layout() -> None:
    ctx = HandlerContext(_Store(HEAD), _FixedUrls())
    created = await on_object_created(_event(KEY), ctx)
    removed = await on_object_removed(_event(KEY, "ObjectRemoved:Delete"), ctx)
    for change in (created, removed):
        assert (change.sessionId, change.sceneId, change.version, change.kind) == ("s1", "intro", 2, "source")
    outside = await on_object_created(_event("x/y.mp4"), ctx)
    assert (outside.sessionId, outside.kind) == (None, "other")
    assert "sessionId" not in outside.to_convex()


async def test_a_url_failure_is_recorded_not_raised() -> None:
    change = await on_object_created(_event(KEY), HandlerContext(_Store(HEAD), _FailingUrls()))
    assert change.url is None
    assert change.urlError == "presign GetObject: NoCredentialsError"
    assert change.size == 3  # the object's change still lands


async def test_public_urls_fall_back_to_presigned() -> None:
    class _BrokenPublic:
        config = "public:https://cdn.example"

        async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
            raise UrlError("no")

    assert await FallbackUrls(_BrokenPublic(), _FixedUrls()).url_for("b", "k") == SignedUrl(
        "signed:k", 123, "presigned:60")
    assert await FallbackUrls(PublicUrls("https://cdn.example/"), _FixedUrls()).url_for("b", "a b") == SignedUrl(
        "https://cdn.example/a%20b", None, "public:https://cdn.example")


def test_public_urls_encode_each_segment() -> None:
    assert public_url("https://cdn.example/media/", "sessions/my session/ü+#?/v1/a%20b.mp4") == (
        "https://cdn.example/media/sessions/my%20session/%C3%BC%2B%23%3F/v1/a%2520b.mp4")
