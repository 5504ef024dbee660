"""The decoder: golden envelopes from AWS/MinIO docs decode exactly; everything else is poison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3convex.consumer.decode import Decoder
from s3convex.core.errors import PoisonMessage
from s3convex.core.events import ObjectEvent
from s3convex.handlers.objects import registry

FIXTURES = Path(__file__).parent / "fixtures" / "events"
decoder = Decoder(["video-assets"])


def load(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_direct_put_record() -> None:
    (event,) = decoder.decode(load("s3-put.json")).events
    assert event == ObjectEvent(
        event_name="ObjectCreated:Put",
        bucket="video-assets",
        key="sessions/s-1/scenes/intro/v2/scene video final.mp4",  # '+' and %20 both decode to spaces
        event_time_ms=1795608000123,
        sequencer="0055AED6DCD90281E5",
        size=1024,
        etag="d41d8cd98f00b204e9800998ecf8427e",
        version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko",
        source="aws:s3",
        request_id="C3D13FE58DE4C810",
        host_id="FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
    )


def test_several_records_any_2x_version() -> None:
    created, removed = decoder.decode(load("s3-multi-record.json")).events
    assert (created.event_name, created.key, created.size) == (
        "ObjectCreated:CompleteMultipartUpload", "big/ü-video.mp4", 20971520)
    assert created.etag == "3858f62230ac3c915f300c664312c11f-4"
    assert (removed.event_name, removed.key, removed.size) == ("ObjectRemoved:Delete", "old/a+b.txt", None)


def test_delete_marker_keeps_version_id() -> None:
    (event,) = decoder.decode(load("s3-delete-marker.json")).events
    assert event.event_name == "ObjectRemoved:DeleteMarkerCreated"
    assert event.version_id == "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"


@pytest.mark.parametrize("name", ["s3-test-event.json", "sns-test-event.json"])
def test_test_event_is_acknowledged_without_events(name: str) -> None:
    decoded = decoder.decode(load(name))
    assert decoded.is_test_event
    assert decoded.events == ()


def test_sns_envelope_and_raw_delivery_decode_alike() -> None:
    assert decoder.decode(load("sns-enveloped.json")) == decoder.decode(load("s3-put.json"))


def test_eventbridge_created_and_deleted() -> None:
    (created,) = decoder.decode(load("eventbridge-created.json")).events
    assert (created.event_name, created.key, created.size, created.version_id, created.sequencer) == (
        "ObjectCreated:Put", "sessions/s-1/scenes/intro/v1/scene.py", 5,
        "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e", "617F08299329D189")
    (deleted,) = decoder.decode(load("eventbridge-deleted.json")).events
    assert deleted.event_name == "ObjectRemoved:DeleteMarkerCreated"
    assert deleted.event_time_ms == 1795608005000


def test_minio_record() -> None:
    (event,) = decoder.decode(load("minio-put.json")).events
    assert event.event_name == "ObjectCreated:Put"  # "s3:" prefix removed
    assert event.key == "sessions/s-2/scenes/a/v1/clip.webm"  # %2F decoded
    assert event.source == "minio:s3"
    assert event.sequencer is None  # not comparable across a MinIO cluster
    assert event.content_type == "video/webm"
    assert event.user_metadata["X-Amz-Meta-Render"] == "r7"


def test_every_golden_event_has_a_handler() -> None:
    for path in FIXTURES.glob("*.json"):
        for event in decoder.decode(path.read_text()).events:
            assert registry.resolve(event), path.name


def _record(**overrides: object) -> str:
    document = json.loads(load("s3-put.json"))
    document["Records"][0].update(overrides)
    return json.dumps(document)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json at all", "body is not JSON"),
        ("", "body is not JSON"),
        ("[1, 2]", "body is JSON list, not an object"),
        ('{"hello": "world"}', "unrecognised message shape"),
        ('{"Records": []}', "invalid S3 notification"),
        (_record(eventVersion="3.0"), "invalid S3 notification: Records.0.eventVersion"),
        (_record(eventSource="aws:sqs"), "invalid S3 notification: Records.0.eventSource"),
        (_record(eventTime="yesterday"), "invalid S3 notification: Records.0.eventTime"),
        (_record(s3={"bucket": {"name": "video-assets"}}), "invalid S3 notification: Records.0.s3.object"),
        (_record(s3={"bucket": {"name": "other-bucket"}, "object": {"key": "k"}}),
         "bucket 'other-bucket' is not configured here"),
        ('{"Type": "Notification", "Message": "{not json"}', "SNS Message is not JSON"),
        ('{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "elsewhere"}',
         "bucket 'elsewhere' is not configured here"),
    ],
)
def test_poison_carries_its_reason(body: str, reason: str) -> None:
    with pytest.raises(PoisonMessage) as info:
        decoder.decode(body)
    assert info.value.reason.startswith(reason)


def test_unknown_event_name_is_poison_at_dispatch() -> None:
    (event,) = decoder.decode(_record(eventName="ObjectRestore:Completed")).events
    with pytest.raises(PoisonMessage, match="no handler for event 'ObjectRestore:Completed'"):
        registry.resolve(event)


# --- property-based: whatever the body, decode returns or raises PoisonMessage ---------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _mutations() -> st.SearchStrategy[str]:
    """Golden documents with one field replaced by an arbitrary JSON value (or removed)."""
    goldens = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]

    def mutate(document: object, path_choice: int, value: object, remove: bool) -> str:
        paths: list[tuple[object, object]] = []

        def walk(node: object) -> None:
            if isinstance(node, dict):
                for key in list(node):
                    paths.append((node, key))
                    walk(node[key])
            elif isinstance(node, list):
                for index in range(len(node)):
                    paths.append((node, index))
                    walk(node[index])

        doc = json.loads(json.dumps(document))
        walk(doc)
        if paths:
            parent, key = paths[path_choice % len(paths)]
            if remove and isinstance(parent, dict):
                del parent[key]
            else:
                parent[key] = value  # type: ignore[index]
        return json.dumps(doc)

    return st.builds(mutate, st.sampled_from(goldens), st.integers(0, 10_000), json_values, st.booleans())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps), _mutations()))
def test_any_body_decodes_or_is_poison(body: str) -> None:
    try:
        decoded = decoder.decode(body)
    except PoisonMessage as exc:
        assert exc.reason
    else:
        for event in decoded.events:
            assert event.bucket == "video-assets"
            assert event.key
            try:
                registry.resolve(event)
            except PoisonMessage as exc:
                assert exc.reason.startswith("no handler")
