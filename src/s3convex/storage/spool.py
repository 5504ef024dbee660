"""The durable offline spool: status writes Convex could not take, kept on disk until it can.

:class:`Spool` is one SQLite file in ``S3_UPLOAD_SPOOL_DIR`` (one per Convex deployment); the
:class:`~s3convex.storage.spool_sink.SpoolingSink` in front of Convex appends to it and delivers
from it, oldest first.

Why SQLite in WAL mode, not JSONL segment files. An append is one transaction: a write either
is in the spool whole or not at all, and a torn last write (power cut, ``kill -9`` in the middle
of a write) is the WAL frame whose checksum does not match — SQLite's recovery drops it and
everything before it reads back, so *a torn tail is skipped by construction*, not by a parser
of ours guessing where a line ends. Several processes (render workers on one machine) may share
the directory: SQLite's locks order their appends and a delivery lock (``flock``) keeps two of
them from delivering the same entries at once. Space is given back (``auto_vacuum``,
WAL truncated) once the spool empties — the OTel file queue's complaint. It is the stdlib, no
new dependency. JSONL would be simpler to read by hand, but would need our own framing,
checksums, segment rotation and cross-process locking to give the same guarantees.

What users of Vector, Fluent Bit and the OTel Collector lose, and what happens here:

- **fsync**: ``synchronous=FULL`` — every append is on disk before the call returns, so power
  loss loses nothing the spool accepted (Vector loses up to its 500 ms sync window). It costs one
  fsync per append, and appends are rare by design: the status writer makes at most one report
  per session every ``S3_UPLOAD_STATUS_INTERVAL_MS`` (500 ms), so it is a few fsyncs a second.
- **corruption**: each entry carries a CRC32 of its payload (SQLite checks its WAL frames, not
  the rows of its main file). An entry whose CRC does not match is *skipped*: logged as an error
  with its id and kind, counted in :attr:`Spool.skipped`, and removed — never delivered garbled,
  never blocking the entries behind it. A file SQLite cannot open or that fails ``quick_check``
  is moved aside (``<name>.corrupt-<time>``, kept for inspection, named in an error log line and
  in :attr:`Spool.quarantined`) and a fresh spool starts: the uploader never refuses to start
  silently, and never deletes what it could not read.
- **full**: ``S3_UPLOAD_SPOOL_MAX_BYTES`` bounds the payload bytes held. An append that would go
  over raises :class:`~s3convex.storage.errors.SpoolFull` — the *newest* write is refused loudly
  (Fluent Bit silently drops the *oldest*); nothing in the spool is dropped. The status writer
  keeps the refused report in memory and tries again; closing the storage raises ``SpoolFull``
  if it still cannot be written anywhere. The objects are in S3 either way, and the daemon's S3
  events make their records ``available``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from s3convex.storage.errors import SpoolFull, SpoolUnusable

log = logging.getLogger(__name__)

EntryKind = Literal["createSession", "report", "setManifest"]
KINDS: frozenset[str] = frozenset({"createSession", "report", "setManifest"})
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the delivery order; AUTOINCREMENT: never reused
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,                 -- the call's arguments, JSON
    crc32 INTEGER NOT NULL,                -- of payload
    created_ms INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    kind: EntryKind
    payload: dict[str, Any]
    created_ms: int


def spool_path(directory: Path, target: str) -> Path:
    """The spool file of one target (a Convex deployment's URL): a spool written for one
    deployment is never delivered to another."""
    return directory / f"uploads-{hashlib.sha256(target.encode()).hexdigest()[:16]}.sqlite3"


class Spool:
    """An ordered, durable, bounded queue of status writes (thread-safe; blocking calls — the
    sink runs them in a worker thread)."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.skipped = 0  # entries dropped because their checksum did not match
        self.quarantined: Path | None = None  # where an unreadable spool file was moved
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._bytes = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> Spool:
        with self._lock:
            if self._db is not None:
                return self
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SpoolUnusable(f"cannot create the spool directory: {exc}",
                                    operation=f"open spool {self.path.parent}") from exc
            try:
                try:
                    self._db = self._connect()
                except sqlite3.OperationalError:
                    raise  # cannot open or lock it: nothing says the file is damaged
                except sqlite3.DatabaseError as exc:  # not a database, malformed, quick_check
                    self._quarantine(exc)
                    self._db = self._connect()
            except (sqlite3.Error, OSError) as exc:
                raise SpoolUnusable(f"{exc} (S3_UPLOAD_SPOOL_DIR)",
                                    operation=f"open spool {self.path}") from exc
            return self

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Spool:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the queue ---------------------------------------------------------------------------

    def append(self, kind: EntryKind, payload: dict[str, Any]) -> int:
        """Add a write at the end; on disk when this returns. Raises SpoolFull past the bound."""
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        with self._lock:
            db = self._opened()
            if self._bytes + len(data) > self.max_bytes:
                raise SpoolFull(
                    f"the spool holds {self._bytes} of {self.max_bytes} bytes and cannot take "
                    f"{len(data)} more; nothing was dropped (S3_UPLOAD_SPOOL_MAX_BYTES)",
                    operation=f"spool {kind}", code="SpoolFull")
            with db:
                cursor = db.execute(
                    "INSERT INTO entries (kind, payload, crc32, created_ms) VALUES (?, ?, ?, ?)",
                    (kind, data, zlib.crc32(data), int(time.time() * 1000)))
            self._bytes += len(data)
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def head(self, limit: int = 100) -> list[Entry]:
        """The oldest entries, in order; one whose checksum fails is skipped (and removed)."""
        with self._lock:
            db = self._opened()
            rows = db.execute("SELECT id, kind, payload, crc32, created_ms FROM entries "
                              "ORDER BY id LIMIT ?", (limit,)).fetchall()
            entries, broken = [], []
            for row_id, kind, payload, crc, created_ms in rows:
                data = bytes(payload)
                entry = _decode(row_id, kind, data, crc, created_ms)
                if entry is None:
                    broken.append((row_id, len(data)))
                else:
                    entries.append(entry)
            for row_id, size in broken:
                self._delete(db, row_id, size)
                self.skipped += 1
            return entries

    def remove(self, entry_id: int) -> None:
        """Forget a delivered entry (after Convex took it: a crash in between re-delivers it,
        which Convex's functions take as a duplicate)."""
        with self._lock:
            db = self._opened()
            row = db.execute("SELECT length(payload) FROM entries WHERE id = ?",
                             (entry_id,)).fetchone()
            if row is not None:
                self._delete(db, entry_id, int(row[0]))

    def __len__(self) -> int:
        with self._lock:
            return int(self._opened().execute("SELECT count(*) FROM entries").fetchone()[0])

    @property
    def bytes_held(self) -> int:
        return self._bytes

    @contextlib.contextmanager
    def delivering(self) -> Iterator[bool]:
        """``with spool.delivering() as mine:`` — True if this process holds the delivery lock
        (no other process delivers these entries meanwhile); False: another one is at it."""
        lock_path = self.path.with_name(self.path.name + ".deliver.lock")
        with lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- inside ------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are ours (`with db:` commits); timeout: another
        # process's append holds the write lock for one fsync at most.
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # effective on a new file only
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # a filesystem without shared memory (NFS?)
                raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA journal_size_limit = 4194304")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            db.execute(SCHEMA)
            self._bytes = int(db.execute(
                "SELECT coalesce(sum(length(payload)), 0) FROM entries").fetchone()[0])
        except BaseException:
            db.close()
            raise
        return db

    def _quarantine(self, error: sqlite3.DatabaseError) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                os.replace(source, Path(str(moved) + suffix))
        self.quarantined = moved
        log.error("upload spool unreadable: moved aside, starting an empty one; its entries "
                  "were not delivered", extra={"spool": str(self.path),
                                               "moved_to": str(moved), "error": str(error)})

    def _delete(self, db: sqlite3.Connection, entry_id: int, size: int) -> None:
        with db:
            db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        self._bytes = max(0, self._bytes - size)
        if self._bytes == 0 and db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0:
            # Empty: give the space back, the file's and the WAL's.
            db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _opened(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("open the spool first")
        return self._db


def _decode(row_id: int, kind: str, data: bytes, crc: int, created_ms: int) -> Entry | None:
    problem = None
    if zlib.crc32(data) != crc:
        problem = "checksum mismatch"
    elif kind not in KINDS:
        problem = f"unknown kind {kind!r}"
    else:
        try:
            payload = json.loads(data)
        except ValueError as exc:
            problem = f"not JSON: {exc}"
        else:
            if isinstance(payload, dict):
                return Entry(row_id, cast(EntryKind, kind), payload, created_ms)
            problem = "not a JSON object"
    log.error("upload spool entry unreadable: skipped, not delivered", extra={
        "entry": row_id, "kind": kind, "error": problem})
    return None
