"""What a key means: which session, scene and version it belongs to, and what kind of file it is.

The layout is configurable (``ASSET_KEY_LAYOUT``): one or more patterns separated by ``;``,
tried in order, the first full match wins. The default::

    sessions/{sessionId}/scenes/{sceneId}/v{version}/{file};sessions/{sessionId}/{file}

Pattern syntax, one ``/``-separated segment at a time:

- ``{sessionId}``, ``{sceneId}``: one key segment (anything but ``/``);
- ``{version}``: 1 to 9 digits (``v007`` is version 7);
- ``{file}``: the last segment, required, and the only thing the kind is read from;
- ``*``: any one segment, ignored (``tenants/*/sessions/{sessionId}/{file}``);
- everything else is literal, and a placeholder may sit inside a segment (``v{version}``).

``{sceneId}`` needs ``{sessionId}``; ``{version}`` needs ``{sceneId}``. A key that matches no
pattern is still an asset: kind ``other``, no session — never dropped.

Kinds by file name (case-insensitive): ``manifest.json`` → ``manifest``; ``mp4 webm mov`` →
``video``; ``py js mjs ts tsx jsx`` → ``source`` (the scene's generated code); other ``.json``
→ ``metadata``; ``png jpg jpeg webp`` → ``thumbnail``; ``vtt srt`` → ``subtitle``; else ``other``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, TypedDict

Kind = Literal["video", "source", "metadata", "manifest", "thumbnail", "subtitle", "other"]

DEFAULT_LAYOUT = "sessions/{sessionId}/scenes/{sceneId}/v{version}/{file};sessions/{sessionId}/{file}"

_EXTENSION_KINDS: dict[str, Kind] = {
    **dict.fromkeys(("mp4", "webm", "mov"), "video"),
    **dict.fromkeys(("py", "js", "mjs", "ts", "tsx", "jsx"), "source"),
    "json": "metadata",
    **dict.fromkeys(("png", "jpg", "jpeg", "webp"), "thumbnail"),
    **dict.fromkeys(("vtt", "srt"), "subtitle"),
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_GROUPS = {
    "sessionId": r"(?P<sessionId>[^/]+)",
    "sceneId": r"(?P<sceneId>[^/]+)",
    "version": r"(?P<version>[0-9]{1,9})",
    "file": r"(?P<file>[^/]+)",
}


def file_kind(file_name: str) -> Kind:
    """The kind of a file, from its name alone."""
    name = file_name.rsplit("/", 1)[-1].lower()
    if name == "manifest.json":
        return "manifest"
    if "." not in name.strip("."):
        return "other"
    return _EXTENSION_KINDS.get(name.rsplit(".", 1)[1], "other")


class AssetKeyFields(TypedDict):
    """The fields of an :class:`~s3convex.core.asset.AssetChange` a key's place in the layout
    fills, under their Convex names."""

    kind: Kind
    sessionId: str | None
    sceneId: str | None
    version: int | None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the layout says about one key; ``session_id`` is None outside the layout."""

    kind: Kind
    session_id: str | None = None
    scene_id: str | None = None
    version: int | None = None

    def asset_fields(self) -> AssetKeyFields:
        """The fields of an :class:`~s3convex.core.asset.AssetChange` this fills."""
        return {"kind": self.kind, "sessionId": self.session_id, "sceneId": self.scene_id,
                "version": self.version}


OUTSIDE = KeyInfo(kind="other")


class KeyLayout:
    """``KeyLayout.parse(spec).classify(key)``; :meth:`parse` raises ValueError on a bad spec."""

    def __init__(self, spec: str, patterns: tuple[re.Pattern[str], ...]) -> None:
        self.spec = spec
        self._patterns = patterns

    @classmethod
    def parse(cls, spec: str) -> KeyLayout:
        parts = [part.strip() for part in spec.split(";") if part.strip()]
        if not parts:
            raise ValueError("must hold at least one pattern")
        return cls(";".join(parts), tuple(_compile(part) for part in parts))

    @classmethod
    def default(cls) -> KeyLayout:
        return cls.parse(DEFAULT_LAYOUT)

    def classify(self, key: str) -> KeyInfo:
        for pattern in self._patterns:
            match = pattern.fullmatch(key)
            if match is None:
                continue
            found = match.groupdict()
            version = found.get("version")
            return KeyInfo(
                kind=file_kind(found["file"]),
                session_id=found.get("sessionId"),
                scene_id=found.get("sceneId"),
                version=int(version) if version is not None else None,
            )
        return OUTSIDE

    def __repr__(self) -> str:
        return f"KeyLayout({self.spec!r})"


def _compile(pattern: str) -> re.Pattern[str]:
    segments = pattern.strip("/").split("/")
    seen: list[str] = []
    regex: list[str] = []
    for index, segment in enumerate(segments):
        if segment == "":
            raise ValueError(f"pattern {pattern!r} has an empty segment")
        if segment == "*":
            regex.append("[^/]+")
            continue
        pieces: list[str] = []
        position = 0
        for found in _PLACEHOLDER.finditer(segment):
            name = found.group(1)
            if name not in _GROUPS:
                raise ValueError(f"pattern {pattern!r}: unknown placeholder {{{name}}} "
                                 f"(allowed: {', '.join('{' + n + '}' for n in _GROUPS)})")
            if name in seen:
                raise ValueError(f"pattern {pattern!r}: {{{name}}} appears twice")
            if name == "file" and index != len(segments) - 1:
                raise ValueError(f"pattern {pattern!r}: {{file}} must be in the last segment")
            seen.append(name)
            pieces.append(re.escape(segment[position:found.start()]))
            pieces.append(_GROUPS[name])
            position = found.end()
        literal_tail = segment[position:]
        if "{" in literal_tail or "}" in literal_tail:
            raise ValueError(f"pattern {pattern!r}: unbalanced brace in {segment!r}")
        pieces.append(re.escape(literal_tail))
        regex.append("".join(pieces))
    if "file" not in seen:
        raise ValueError(f"pattern {pattern!r} needs {{file}} in its last segment")
    if "sceneId" in seen and "sessionId" not in seen:
        raise ValueError(f"pattern {pattern!r}: {{sceneId}} needs {{sessionId}}")
    if "version" in seen and "sceneId" not in seen:
        raise ValueError(f"pattern {pattern!r}: {{version}} needs {{sceneId}}")
    return re.compile("/".join(regex))
