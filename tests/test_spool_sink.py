"""SpoolingSink's rules on a real spool file and a ten-line fake Convex (the end-to-end runs
against the local Convex server are in tests/test_upload_spool.py): behind the spool once
anything is in it, refused entries dropped alone and named, a configuration error kept."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from s3convex.core.errors import ConvexForbidden, ConvexFunctionError, ConvexUnavailable
from s3convex.core.retrying import ONE_ATTEMPT
from s3convex.storage import ManifestRef, SessionProgress, Spool, SpoolingSink, StatusUpdate


class FakeConvex:
    """Down (unreachable), up, or answering every call with ``refuse``."""

    def __init__(self) -> None:
        self.up = False
        self.refuse: Exception | None = None
        self.refuse_when: Any = None  # (kind, payload) → an error to raise, or None
        self.taken: list[tuple[str, Any]] = []

    def _take(self, kind: str, what: Any) -> None:
        if not self.up:
            raise ConvexUnavailable("connection refused (fake)", operation=kind)
        if self.refuse is not None:
            raise self.refuse
        if self.refuse_when is not None and (error := self.refuse_when(kind, what)) is not None:
            raise error
        self.taken.append((kind, what))

    async def create_session(self, session_id: str, owner_id: str, run_id: str | None) -> bool:
        self._take("createSession", session_id)
        return True

    async def report(self, session_id: str, run_id: str, updates: Sequence[StatusUpdate],
                     manifests: Sequence[ManifestRef] = ()) -> SessionProgress | None:
        self._take("report", [u["key"] for u in updates] + [f"manifest:{m.key}" for m in manifests])
        return None

    async def set_manifest(self, manifest: ManifestRef) -> None:
        self._take("setManifest", manifest.key)


def upd(key: str) -> StatusUpdate:
    return {"bucket": "b", "key": key, "status": "pending", "bytesSent": 0, "bytesTotal": 1,
            "attempt": 1}


@pytest.fixture
def fake() -> FakeConvex:
    return FakeConvex()


@pytest.fixture
async def sink(fake: FakeConvex, tmp_path: Path):
    spooling = SpoolingSink(fake, Spool(tmp_path / "s.sqlite3", max_bytes=1 << 20),
                            retry=ONE_ATTEMPT, close_retry=ONE_ATTEMPT)
    await spooling.open()
    yield spooling
    await spooling.aclose()


async def test_once_anything_is_spooled_later_calls_go_behind_it_and_arrive_in_order(
        fake: FakeConvex, sink: SpoolingSink) -> None:
    assert await sink.create_session("s1", "alice", None) is False  # spooled: not known
    await sink.report("s1", "r1", [upd("a")])
    fake.up = True
    # Convex is back, but the delivery pause has not passed: this one waits behind the spool.
    await sink.report("s1", "r1", [upd("b")])
    assert fake.taken == [] and await sink.pending() == 3
    sink._next_delivery = 0.0  # the pause is over (the background task would wait for it)
    await sink.set_manifest(ManifestRef("s1", "x", 1, "b", "m.json", "r1"))
    assert fake.taken == [("createSession", "s1"), ("report", ["a"]), ("report", ["b"]),
                          ("setManifest", "m.json")]
    assert await sink.pending() == 0 and sink.delivered == 3 and sink.spooled == 3
    await sink.report("s1", "r1", [upd("c")])  # an empty spool: straight to Convex
    assert fake.taken[-1] == ("report", ["c"]) and sink.spooled == 3


async def test_an_entry_convex_refuses_is_dropped_alone_and_named(
        fake: FakeConvex, sink: SpoolingSink) -> None:
    await sink.create_session("s1", "alice", None)
    await sink.report("s1", "r1", [upd("a"), upd("bad"), upd("c")])
    await sink.report("s1", "r1", [upd("d")])

    def refuse(kind: str, what: Any) -> Exception | None:
        if kind == "createSession":
            return ConvexFunctionError("uploads:createSession", "another owner",
                                       {"code": "conflict"})
        if kind == "report" and "bad" in what:
            return ConvexFunctionError("uploads:report", "bad", {
                "code": "bad_request", "reason": "etag on pending", "index": what.index("bad")})
        return None

    fake.up, fake.refuse_when = True, refuse
    sink._next_delivery = 0.0
    await sink.report("s1", "r1", [upd("e")])
    assert fake.taken == [("report", ["a", "c"]), ("report", ["d"]), ("report", ["e"])]
    assert len(sink.errors) == 2
    assert "createSession" in sink.errors[0] and "bad" in sink.errors[1]


async def test_a_configuration_error_stops_delivery_keeps_every_entry_and_is_raised(
        fake: FakeConvex, sink: SpoolingSink) -> None:
    await sink.report("s1", "r1", [upd("a")])
    fake.up = True
    fake.refuse = ConvexForbidden("BadAdminKey", operation="uploads:report", status=401)
    sink._next_delivery = 0.0
    with pytest.raises(ConvexForbidden):
        await sink.report("s1", "r1", [upd("b")])
    assert await sink.pending() == 1 and fake.taken == []
    fake.refuse = None  # the key is fixed: nothing was lost
    sink._next_delivery = 0.0
    await sink.report("s1", "r1", [upd("b")])
    assert fake.taken == [("report", ["a"]), ("report", ["b"])]


async def test_a_report_with_its_manifest_is_spooled_whole_and_old_format_entries_still_deliver(
        fake: FakeConvex, sink: SpoolingSink) -> None:
    ref = ManifestRef("s1", "x", 1, "b", "m.json", "r1")
    await sink.report("s1", "r1", [upd("a")], [ref])
    entry, = sink.spool.head(10)
    assert entry.payload["manifests"] == [
        {"sceneId": "x", "version": 1, "bucket": "b", "key": "m.json"}]
    # What an earlier version spooled: a report without references, then setManifest alone.
    sink.spool.append("report", {"sessionId": "s1", "runId": "r0", "updates": [upd("old")]})
    sink.spool.append("setManifest", {"sessionId": "s1", "sceneId": "x", "version": 1,
                                      "bucket": "b", "key": "old.json", "runId": "r0"})
    fake.up = True
    sink._next_delivery = 0.0
    await sink.report("s1", "r1", [upd("c")])
    assert fake.taken == [("report", ["a", "manifest:m.json"]), ("report", ["old"]),
                          ("setManifest", "old.json"), ("report", ["c"])]
    assert await sink.pending() == 0


async def test_a_refused_manifest_reference_is_dropped_alone(
        fake: FakeConvex, sink: SpoolingSink) -> None:
    refs = [ManifestRef("s1", "x", 1, "b", "bad.json", "r1"),
            ManifestRef("s1", "x", 2, "b", "m.json", "r1")]
    await sink.report("s1", "r1", [upd("a")], refs)

    def refuse(kind: str, what: Any) -> Exception | None:
        if kind == "report" and "manifest:bad.json" in what:
            return ConvexFunctionError("uploads:report", "bad", {
                "code": "bad_request", "reason": "key is empty", "manifest": 0})
        return None

    fake.up, fake.refuse_when = True, refuse
    sink._next_delivery = 0.0
    await sink.report("s1", "r1", [upd("b")])
    assert fake.taken == [("report", ["a", "manifest:m.json"]), ("report", ["b"])]
    assert len(sink.errors) == 1 and "bad.json" in sink.errors[0]
