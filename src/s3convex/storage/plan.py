"""What an upload will send, checked before anything is: :func:`plan_dir` and :func:`plan_file`.

Each file becomes a :class:`PlannedFile` — its path, key, size, content type, kind and metadata —
and every check that can fail without S3 runs here, for every file, before the first byte is
sent: the file exists, is a regular file and can be opened; its key is inside the layout
(:mod:`s3convex.storage.keys`); its user metadata is what S3 accepts. All problems are reported
together in one :class:`~s3convex.storage.errors.UploadRefused`.

A directory is walked in name order; ``include``/``exclude`` are :mod:`fnmatch` globs over each
file's path relative to the directory (``*`` also crosses ``/``: ``exclude=("*.tmp", "cache/*")``).
The layout's ``{file}`` is one key segment, so a file in a subdirectory is refused unless
excluded, and so is a ``manifest.json``: the upload writes its own.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from s3convex.core.layout import KeyLayout, file_kind
from s3convex.storage.errors import KeyOutsideLayout, UploadRefused
from s3convex.storage.keys import build_key, check_key, guess_content_type

MANIFEST_NAME = "manifest.json"
RUN_ID_METADATA = "s3convex-run-id"  # x-amz-meta-s3convex-run-id on every object of a run
MAX_OBJECT_BYTES = 5 * 1024**4  # 5 TiB, S3's largest object
MAX_METADATA_BYTES = 2048  # S3: keys and values of user metadata together, in UTF-8
_METADATA_KEY = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP header token


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file to upload and everything decided about it before the upload."""

    path: Path
    name: str  # relative to the uploaded directory (the file's name for upload_file)
    bucket: str
    key: str
    size: int
    mtime_ns: int
    content_type: str
    kind: str
    session_id: str
    scene_id: str | None
    version: int | None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def restat(self) -> PlannedFile:
        """The same file as it is now (for a retry): size and mtime read again."""
        info = _stat_regular(self.path)
        return replace(self, size=info.st_size, mtime_ns=info.st_mtime_ns)


def plan_dir(root: Path, *, bucket: str, layout: KeyLayout, session: str, scene: str,
             version: int, include: Sequence[str] = ("*",), exclude: Sequence[str] = (),
             metadata: Mapping[str, str] | None = None) -> list[PlannedFile]:
    """Every file of ``root`` that the globs select, planned; or UploadRefused naming each problem
    (KeyOutsideLayout first, when the session, scene or version cannot be laid out at all)."""
    build_key(layout, session=session, scene=scene, version=version, name=MANIFEST_NAME)
    if not root.is_dir():
        raise UploadRefused([f"{root}: not a directory"])
    problems: list[str] = []
    planned: list[PlannedFile] = []
    names = sorted(_walk(root, problems))
    chosen = [n for n in names if _selected(n, include, exclude)]
    if not chosen and not problems:
        problems.append(f"{root}: no file matches include={list(include)} exclude={list(exclude)}")
    for name in chosen:
        try:
            if name.lower() == MANIFEST_NAME:
                raise UploadRefused([f"{name}: the upload writes the version's {MANIFEST_NAME} "
                                     "itself; exclude this one"])
            if "/" in name:
                raise UploadRefused([f"{name}: in a subdirectory, and the layout's {{file}} is "
                                     "one key segment; exclude it or flatten the directory"])
            key = build_key(layout, session=session, scene=scene, version=version, name=name)
            planned.append(_plan(root / name, name, bucket, key, layout, metadata=metadata))
        except UploadRefused as exc:
            problems.extend(_prefixed(name, exc))
    if problems:
        raise UploadRefused(problems)
    return planned


def plan_file(path: Path, *, bucket: str, layout: KeyLayout, key: str | None = None,
              session: str | None = None, scene: str | None = None, version: int | None = None,
              name: str | None = None, content_type: str | None = None,
              metadata: Mapping[str, str] | None = None, kind: str | None = None) -> PlannedFile:
    """One file, under ``key`` or the layout's key for (session, scene, version, name)."""
    if key is None:
        if session is None:
            raise KeyOutsideLayout("give either key= or session= (with scene= and version= as "
                                   "the layout needs)")
        key = build_key(layout, session=session, scene=scene, version=version,
                        name=name or path.name)
    elif session is not None or scene is not None or version is not None:
        raise KeyOutsideLayout("give either key= or session=/scene=/version=, not both")
    try:
        return _plan(path, name or path.name, bucket, key, layout, content_type=content_type,
                     metadata=metadata, kind=kind)
    except KeyOutsideLayout:
        raise
    except UploadRefused as exc:
        raise UploadRefused(_prefixed(str(path), exc)) from None


def check_metadata(metadata: Mapping[str, str]) -> Mapping[str, str]:
    """User metadata as S3 stores it (keys lower-cased), or UploadRefused saying what is wrong."""
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not _METADATA_KEY.match(key):
            raise UploadRefused([f"metadata key {key!r} is not an HTTP header token"])
        if not isinstance(value, str) or not value.isascii() or not value.isprintable():
            raise UploadRefused([f"metadata {key!r}: the value must be printable ASCII text"])
        if key.lower() == RUN_ID_METADATA:
            raise UploadRefused([f"metadata {key!r} is the upload's own (its run id)"])
        checked[key.lower()] = value
    size = sum(len(k) + len(v) for k, v in checked.items()) + len(RUN_ID_METADATA) + 40
    if size > MAX_METADATA_BYTES:
        raise UploadRefused([f"user metadata of {size} bytes (with the run id) exceeds S3's "
                             f"{MAX_METADATA_BYTES}"])
    return checked


def _plan(path: Path, name: str, bucket: str, key: str, layout: KeyLayout, *,
          content_type: str | None = None, metadata: Mapping[str, str] | None = None,
          kind: str | None = None) -> PlannedFile:
    info = check_key(layout, key)
    stats = _stat_regular(path)
    if stats.st_size > MAX_OBJECT_BYTES:
        raise UploadRefused([f"{stats.st_size} bytes: larger than S3's 5 TiB"])
    try:  # opening is the only sure test of "readable" (permissions, ACLs, a vanished file)
        with path.open("rb"):
            pass
    except OSError as exc:
        raise UploadRefused([f"cannot be read: {exc.strerror or exc}"]) from None
    assert info.session_id is not None  # check_key refuses keys of no session
    return PlannedFile(
        path=path, name=name, bucket=bucket, key=key, size=stats.st_size,
        mtime_ns=stats.st_mtime_ns, content_type=content_type or guess_content_type(name),
        kind=kind or file_kind(key), session_id=info.session_id, scene_id=info.scene_id,
        version=info.version, metadata=check_metadata(metadata or {}),
    )


def _stat_regular(path: Path) -> os.stat_result:
    try:
        stats = path.stat()
    except OSError as exc:
        raise UploadRefused([f"cannot be read: {exc.strerror or exc}"]) from None
    if not stat.S_ISREG(stats.st_mode):
        raise UploadRefused(["not a regular file"])
    return stats


def _walk(root: Path, problems: list[str]) -> list[str]:
    names: list[str] = []

    def failed(error: OSError) -> None:
        problems.append(f"{error.filename}: cannot be listed: {error.strerror or error}")

    for directory, subdirectories, files in os.walk(root, onerror=failed):
        subdirectories.sort()
        for file_name in files:
            names.append(Path(directory, file_name).relative_to(root).as_posix())
    return names


def _selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return (any(fnmatch.fnmatchcase(name, glob) for glob in include)
            and not any(fnmatch.fnmatchcase(name, glob) for glob in exclude))


def _prefixed(name: str, error: UploadRefused) -> list[str]:
    return [problem if problem.startswith(name) else f"{name}: {problem}"
            for problem in error.problems]
