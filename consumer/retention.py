"""Retention of obsolete scene versions (R4.3): what the policy would remove, and marking it.

The policy (``RETENTION_KEEP_VERSIONS``, ``RETENTION_MAX_AGE_DAYS``) is decided in Convex from
each scene's version history (``retention:plan``; convex/LIFECYCLE.md): never the
current version, nor a newer one still arriving. What Convex cannot see is inside the current
version's ``manifest.json``: the keys it lists are read from S3 here and never marked.
:meth:`Retention.apply` marks each obsolete version's files ``cleanup_pending`` with reason
``retention`` (``retention:mark``, which re-decides the version from the scene as it is
then), and the cleanup worker (consumer/cleanup.py) removes them like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from s3convex.adapters.convex import ConvexClient
from s3convex.core.errors import NotFound, PermanentError, RetryableError
from s3convex.settings import CleanupSettings

log = logging.getLogger(__name__)

# What a retention mark may turn pending (convex/model/lifecycle.ts MARKABLE).
MARKABLE = frozenset({"available", "failed", "pending", "uploading", "missing"})
SCENES_PER_PAGE = 100
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    keep: int | None = None
    max_age_days: float | None = None

    def __post_init__(self) -> None:
        if self.keep is None and self.max_age_days is None:
            raise ValueError("a retention policy needs RETENTION_KEEP_VERSIONS and/or "
                             "RETENTION_MAX_AGE_DAYS")

    def args(self) -> dict[str, Any]:
        return {**({"keep": self.keep} if self.keep is not None else {}),
                **({"maxAgeDays": self.max_age_days} if self.max_age_days is not None else {})}


@dataclass(frozen=True, slots=True)
class ObsoleteVersion:
    session_id: str
    scene_id: str
    version: int
    current_version: int
    files: tuple[dict[str, Any], ...]
    protected_keys: tuple[str, ...]

    @property
    def bytes(self) -> int:
        return sum(int(f.get("size") or 0) for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"sessionId": self.session_id, "sceneId": self.scene_id, "version": self.version,
                "currentVersion": self.current_version, "files": len(self.files),
                "bytes": self.bytes, "keys": [f["key"] for f in self.files]}


class Retention:
    def __init__(self, convex: ConvexClient, s3: Any, policy: RetentionPolicy) -> None:
        self._convex = convex
        self._s3 = s3
        self._policy = policy

    async def plan(self, *, session: str | None = None) -> AsyncIterator[ObsoleteVersion]:
        """Every obsolete version with files left to remove, scene by scene."""
        cursor: str | None = None
        while True:
            page = await self._convex.query("retention:plan", {
                **self._policy.args(), **({"sessionId": session} if session else {}),
                "cursor": cursor, "numItems": SCENES_PER_PAGE})
            for scene in page["scenes"]:
                protected = await self._manifest_keys(scene.get("manifest"))
                for version in scene["obsolete"]:
                    files = await self._convex.query("sessions:versionFiles", {
                        "sessionId": scene["sessionId"], "sceneId": scene["sceneId"],
                        "version": version})
                    left = tuple({"key": f["key"], "size": int(f.get("size") or 0),
                                  "status": f["status"]} for f in files
                                 if f["status"] in MARKABLE and f["key"] not in protected)
                    if left:
                        yield ObsoleteVersion(scene["sessionId"], scene["sceneId"], int(version),
                                              int(scene["currentVersion"]), left,
                                              tuple(sorted(protected)))
            if page["isDone"]:
                return
            cursor = page["continueCursor"]

    async def apply(self, *, actor: str, session: str | None = None) -> dict[str, Any]:
        """Marks every obsolete version's files for removal; totals of what was marked."""
        marked = versions = size = refused = 0
        async for obsolete in self.plan(session=session):
            answer = await self._convex.mutation("retention:mark", {
                **self._policy.args(), "sessionId": obsolete.session_id,
                "sceneId": obsolete.scene_id, "version": obsolete.version, "actor": actor,
                "protectedKeys": list(obsolete.protected_keys)})
            if answer.get("refused"):
                refused += 1
                continue
            versions += 1
            marked += int(answer["marked"])
            size += int(answer["bytes"])
        return {"versions": versions, "marked": marked, "bytes": size, "refused": refused}

    async def _manifest_keys(self, manifest: dict[str, Any] | None) -> set[str]:
        """The keys the current version's manifest.json lists (none when it is not in S3)."""
        if not manifest:
            return set()
        try:
            answer = await self._s3.get_object(Bucket=manifest["bucket"], Key=manifest["key"])
            async with answer["Body"] as body:
                raw = await body.read(MAX_MANIFEST_BYTES + 1)
        except NotFound:
            return set()
        if len(raw) > MAX_MANIFEST_BYTES:
            raise PermanentError(f"manifest {manifest['key']} is larger than "
                                 f"{MAX_MANIFEST_BYTES} bytes", operation="GetObject")
        try:
            document = json.loads(raw)
        except ValueError:
            # Unreadable: protect nothing beyond what Convex protects (the current version).
            log.warning("manifest is not JSON", extra={"key": manifest["key"]})
            return set()
        files = document.get("files") if isinstance(document, dict) else None
        return {f["key"] for f in files or () if isinstance(f, dict) and isinstance(f.get("key"), str)}


async def periodic_retention(convex: ConvexClient, s3: Any, settings: CleanupSettings,
                             stop: asyncio.Event) -> None:
    """The daemon's supervised task: apply the policy every ``RETENTION_INTERVAL`` seconds.

    A transient failure skips a round; anything else ends the task, and so the daemon.
    """
    retention = Retention(convex, s3, RetentionPolicy(settings.retention_keep_versions,
                                                      settings.retention_max_age_days))
    while not stop.is_set():
        try:
            totals = await retention.apply(actor="daemon:retention")
        except RetryableError as exc:
            log.warning("retention round skipped", extra={"error": str(exc)})
        else:
            if totals["marked"]:
                log.info("retention marked obsolete versions", extra=totals)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.retention_interval)
