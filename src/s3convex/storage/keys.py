"""Object keys for uploads, laid out by ``ASSET_KEY_LAYOUT`` so the daemon reads them the same way.

A key is built from the layout's *first* pattern (``sessions/{sessionId}/scenes/{sceneId}/
v{version}/{file}`` by default) and then read back through the whole layout
(:meth:`KeyLayout.classify`, what the daemon does with every event): it must come back as the same
session, scene and version, or it is refused before anything is uploaded. A key given whole is
checked the same way. Content types are guessed from the name when the caller gives none, from
Python's built-in table only (not the machine's ``/etc/mime.types``) plus the project's own kinds.
"""

from __future__ import annotations

import mimetypes
import re

from s3convex.core.layout import KeyInfo, KeyLayout
from s3convex.storage.errors import KeyOutsideLayout

MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_MAX_VERSION = 999_999_999  # {version} is 1-9 digits
# Built-in table only: the same answer on every machine.
_MIME = mimetypes.MimeTypes()
_CONTENT_TYPES = {  # what Python's table lacks or reads otherwise (.ts is not MPEG-TS here)
    "mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime",
    "py": "text/x-python", "js": "text/javascript", "mjs": "text/javascript",
    "jsx": "text/javascript", "ts": "text/x-typescript", "tsx": "text/x-typescript",
    "json": "application/json", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
    "webp": "image/webp", "vtt": "text/vtt", "srt": "application/x-subrip",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def build_key(layout: KeyLayout, *, session: str, scene: str | None, version: int | None,
              name: str) -> str:
    """The key of file ``name`` of a session (and scene, version) in the layout's first pattern."""
    pattern = layout.spec.split(";", 1)[0]
    values = {"sessionId": session, "sceneId": scene, "file": name,
              "version": None if version is None else _version_text(version)}
    for placeholder, value in (("sessionId", session), ("sceneId", scene), ("file", name)):
        if value is not None:
            _check_segment(placeholder, value)
    if "*" in pattern.split("/"):
        raise KeyOutsideLayout(f"the layout's first pattern {pattern!r} has a '*' segment, so it "
                               "builds no key: give the key itself")
    used = set(_PLACEHOLDER.findall(pattern))
    missing = sorted(p for p in used if values.get(p) is None)
    if missing:
        raise KeyOutsideLayout(f"the layout's first pattern {pattern!r} needs "
                               + ", ".join("{" + p + "}" for p in missing))
    unused = sorted(p for p, v in values.items() if v is not None and p not in used)
    if unused:
        raise KeyOutsideLayout(f"the layout's first pattern {pattern!r} has no place for "
                               + ", ".join("{" + p + "}" for p in unused))
    key = _PLACEHOLDER.sub(lambda found: str(values[found.group(1)]), pattern.strip("/"))
    check_key(layout, key, session=session, scene=scene, version=version)
    return key


def check_key(layout: KeyLayout, key: str, *, session: str | None = None,
              scene: str | None = None, version: int | None = None) -> KeyInfo:
    """What the layout reads in ``key``; refused unless it names a session (and the one given)."""
    if not key or key.startswith("/") or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise KeyOutsideLayout(f"{key!r} is not a key S3 can hold (1-{MAX_KEY_BYTES} bytes, "
                               "no leading '/')")
    info = layout.classify(key)
    if info.session_id is None:
        raise KeyOutsideLayout(f"{key!r} is outside the layout {layout.spec!r}: the daemon would "
                               "file it under no session")
    wanted = (session, scene, version)
    if session is not None and (info.session_id, info.scene_id, info.version) != wanted:
        raise KeyOutsideLayout(
            f"{key!r} reads as session {info.session_id!r}, scene {info.scene_id!r}, version "
            f"{info.version!r} in the layout {layout.spec!r}, not {session!r}, {scene!r}, {version!r}")
    return info


def guess_content_type(name: str) -> str:
    extension = name.rsplit(".", 1)[-1].lower() if "." in name.strip(".") else ""
    if extension in _CONTENT_TYPES:
        return _CONTENT_TYPES[extension]
    guessed, _ = _MIME.guess_type(name, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


def _version_text(version: int) -> str:
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= _MAX_VERSION:
        raise KeyOutsideLayout(f"version {version!r} is not a whole number 0-{_MAX_VERSION}")
    return str(version)


def _check_segment(placeholder: str, value: str) -> None:
    if not value or "/" in value or value in (".", "..") or value != value.strip():
        raise KeyOutsideLayout(f"{{{placeholder}}} {value!r} must be one non-empty key segment "
                               "(no '/', no surrounding spaces)")
