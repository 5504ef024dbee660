"""Contract: what Python's ``AssetChange`` sends is what ``convex/``'s validators accept.

``AssetChange`` (``src/s3convex/core/asset.py``) mirrors ``s3EventValidator`` in
``convex/events.ts``; this test keeps the two from drifting. Samples built the way
``handlers/objects.py`` builds changes go through the real ``assets:applyEvents`` mutation on
the local Convex server, every one must be applied, and every field sent must come back —
on the asset record or in its history row. Together the samples set every field of the
model: a field added to the model without a sample here fails the test.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from s3convex.adapters.convex import ConvexClient
from s3convex.core.asset import AssetChange, Checksums, Correlation, Encryption, etag_kind
from s3convex.core.errors import ConvexFunctionError
from s3convex.core.layout import KeyLayout

APPLY = "assets:applyEvents"
LAYOUT = KeyLayout.default()

# Where each wire field lands (convex/assets.ts applyOne): copied onto the asset record under
# its own name (convex/schema.ts `objectFields`, plus urlError and the event's position)…
RECORD_FIELDS = frozenset({
    "bucket", "key", "size", "etag", "etagKind", "contentType", "versionId", "metadata",
    "checksums", "encryption", "storageClass", "url", "urlExpiresAt", "urlConfig", "sessionId",
    "sceneId", "kind", "version", "urlError", "sequencer", "eventTime",
})
# …or into the record under another name…
RENAMED_ON_RECORD = {"type": "status", "eventName": "lastEventName"}
# …and into the history row (assetVersions) under its own name.
HISTORY_FIELDS = frozenset({
    "bucket", "key", "type", "eventName", "eventTime", "sequencer", "size", "etag", "versionId",
    "contentType", "source", "correlation",
})


def _base(bucket: str, key: str, type_: str, event_name: str, event_time: int,
          sequencer: str | None, version_id: str | None) -> dict[str, Any]:
    """What ``handlers.objects._base`` puts into every change."""
    return {
        "type": type_,
        "bucket": bucket,
        "key": key,
        "eventName": event_name,
        "eventTime": event_time,
        "sequencer": sequencer,
        "versionId": version_id,
        "source": "aws:s3",
        **LAYOUT.classify(key).asset_fields(),
    }


def _presigned(bucket: str, key: str) -> str:
    return (
        f"https://{bucket}.s3.us-east-1.amazonaws.com/{key}"
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261101%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20261101T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
        f"&X-Amz-Signature={'ab12' * 16}"
    )


def samples(run: str) -> list[AssetChange]:
    """Changes as the handlers build them, on keys no other test uses."""
    bucket = f"contract-{run}"
    session = f"sess-{run}"
    now_ms = int(time.time() * 1000)

    # 1. ObjectCreated, HeadObject saw everything: SSE-KMS, all five checksums, user metadata,
    #    a storage class, a version; the URL store signed a URL.
    video_key = f"sessions/{session}/scenes/intro/v3/video.mp4"
    kms_etag = "6f1ed002ab5595859014ebf0951522d9"
    expires_at = now_ms + 3_600_000
    full = AssetChange(
        **_base(bucket, video_key, "created", "ObjectCreated:Put", now_ms,
                "0062E99A88DC407460", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo"),
        url=_presigned(bucket, video_key),
        urlExpiresAt=expires_at,
        urlConfig="presigned:3600",
        size=5_242_880,
        etag=kms_etag,
        etagKind=etag_kind(kms_etag, "aws:kms"),
        contentType="video/mp4",
        metadata={"render": "v3", "scene-title": "Opening shot", "fps": "30"},
        checksums=Checksums(
            sha256="n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
            sha1="qZk+NkcGgWq6PiVxeFDCbJzQ2J0=",
            crc32="NSRBwg==",
            crc32c="yZRlqg==",
            crc64nvme="OOJZ0D8xKts=",
        ),
        encryption=Encryption(
            sse="aws:kms",
            kmsKeyId="arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        ),
        storageClass="STANDARD_IA",
        correlation=Correlation(s3RequestId="C3D13FE58DE4C810", s3HostId="FMyUVURIY8/IgAtTv8xRjskZQpc",
                                sqsMessageId="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", uploadRunId="run-1"),
    )

    # 2. ObjectCreated of a multipart upload whose URL could not be made: urlError, no url.
    manifest_key = f"sessions/{session}/scenes/outro/v12/manifest.json"
    multipart_etag = "d41d8cd98f00b204e9800998ecf8427e-3"
    no_url = AssetChange(
        **_base(bucket, manifest_key, "created", "ObjectCreated:CompleteMultipartUpload",
                now_ms + 1, "0062E99A88DC407461", None),
        urlError="presign GetObject: AccessDenied: not allowed to sign for this bucket",
        size=0,
        etag=multipart_etag,
        etagKind=etag_kind(multipart_etag, "AES256"),
        contentType="application/json",
        encryption=Encryption(sse="AES256"),
        storageClass="STANDARD",
    )

    # 3. ObjectRemoved on a versioned bucket: a delete marker, nothing but the event's facts.
    removed = AssetChange(
        **_base(bucket, f"sessions/{session}/scenes/intro/v2/scene.py", "removed",
                "ObjectRemoved:DeleteMarkerCreated", now_ms + 2, "0062E99A88DC407462",
                "Xy8HQnP1ZJvXyV0xa6BvZ6Bf6eSd8Vq9"),
    )
    return [full, no_url, removed]


def wire_fields(changes: list[AssetChange]) -> set[str]:
    return {name for change in changes for name in change.to_convex()}


def test_samples_set_every_field_of_the_model() -> None:
    changes = samples("fields")
    assert wire_fields(changes) == set(AssetChange.model_fields)
    sent = [change.to_convex() for change in changes]
    assert {name for wire in sent for name in wire.get("checksums", {})} == set(Checksums.model_fields)
    assert {name for wire in sent for name in wire.get("encryption", {})} == set(Encryption.model_fields)
    assert {name for wire in sent for name in wire.get("correlation", {})} == set(Correlation.model_fields)
    # Every field sent is one this test reads back somewhere.
    assert wire_fields(changes) <= RECORD_FIELDS | set(RENAMED_ON_RECORD) | HISTORY_FIELDS
    # The layout filled the session fields from the key.
    assert {(c.sessionId, c.sceneId, c.version, c.kind) for c in changes} == {
        ("sess-fields", "intro", 3, "video"),
        ("sess-fields", "outro", 12, "manifest"),
        ("sess-fields", "intro", 2, "source"),
    }


async def test_every_field_is_accepted_and_stored(convex: ConvexClient) -> None:
    changes = samples(uuid.uuid4().hex[:12])
    sent = [change.to_convex() for change in changes]

    results = await convex.mutation(APPLY, {"events": sent})

    assert [r["status"] for r in results] == ["applied"] * len(sent), results
    assert all("reason" not in r for r in results), results
    for wire, result in zip(sent, results, strict=True):
        record = await convex.query("assets:getByKey", {"bucket": wire["bucket"], "key": wire["key"]})
        assert record is not None, wire["key"]
        assert record["_id"] == result["assetId"]
        assert record["status"] == {"created": "available", "removed": "deleted"}[wire["type"]]
        assert record["lastEventName"] == wire["eventName"]
        # What the record holds: exactly the event's fields (absent stays absent), except that a
        # tombstone has no link. `==` compares numbers numerically (Convex gives 5.0 for 5).
        stored = {name: record.get(name) for name in RECORD_FIELDS}
        expected = {name: wire.get(name) for name in RECORD_FIELDS}
        if wire["type"] == "removed":
            expected |= {"url": None, "urlExpiresAt": None, "urlConfig": None}
            assert record["deletedAt"] == wire["eventTime"]
        else:
            assert record.get("deletedAt") is None
        assert stored == expected, wire["key"]

        history = await convex.query("assets:history", {"bucket": wire["bucket"], "key": wire["key"]})
        assert len(history) == 1
        row = history[0]
        assert row["assetId"] == result["assetId"] and row["revision"] == 1
        assert {name: row.get(name) for name in HISTORY_FIELDS} == {
            name: wire.get(name) for name in HISTORY_FIELDS}

    # The cases the samples are there for, spelled out.
    full, no_url, removed = [
        await convex.query("assets:getByKey", {"bucket": w["bucket"], "key": w["key"]}) for w in sent]
    assert full["checksums"] == sent[0]["checksums"] and len(full["checksums"]) == 5
    assert full["encryption"]["kmsKeyId"].startswith("arn:aws:kms:")
    assert full["url"] == sent[0]["url"] and full["urlExpiresAt"] == sent[0]["urlExpiresAt"]
    assert full["urlConfig"] == "presigned:3600"
    assert full["size"] == 5_242_880 and full["version"] == 3
    assert no_url.get("url") is None and no_url["urlError"] == sent[1]["urlError"]
    assert no_url["etagKind"] == "multipart" and no_url["size"] == 0
    assert removed["versionId"] == sent[2]["versionId"] and removed.get("size") is None


@pytest.mark.parametrize(
    ("where", "extra"),
    [("top level", {"contentLanguage": "en"}),
     ("inside checksums", {"checksums": {"md5": "1B2M2Y8AsgTpgAmY7PhCfg=="}})],
)
async def test_a_field_convex_does_not_know_is_rejected(
        convex: ConvexClient, where: str, extra: dict[str, Any]) -> None:
    change = samples(uuid.uuid4().hex[:12])[0]
    wire = change.to_convex()
    unknown = {**wire, **extra}
    if where == "inside checksums":
        unknown["checksums"] = {**wire["checksums"], **extra["checksums"]}

    with pytest.raises(ConvexFunctionError) as info:
        await convex.mutation(APPLY, {"events": [unknown]})

    # The argument validator refused the batch: no ConvexError payload, nothing written.
    assert info.value.path == APPLY
    assert info.value.error_data is None
    assert await convex.query("assets:getByKey", {"bucket": wire["bucket"], "key": wire["key"]}) is None
    # The same change without the unknown field goes through: the field was the only problem.
    results = await convex.mutation(APPLY, {"events": [wire]})
    assert [r["status"] for r in results] == ["applied"]
