"""The offline spool on its own (storage/spool.py): order, durability across kill -9, a torn
tail, a corrupted entry, an unreadable file, the bound. Real SQLite files, real processes."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3convex.storage import Spool, SpoolFull, SpoolUnusable
from s3convex.storage.spool import spool_path

ROOT = Path(__file__).resolve().parent.parent


def payload(n: int, size: int = 10) -> dict[str, object]:
    return {"sessionId": "s1", "runId": "r1", "n": n, "pad": "x" * size}


def test_entries_come_back_in_order_after_a_reopen_and_leave_once_removed(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    with Spool(path, max_bytes=1 << 20) as spool:
        ids = [spool.append("report", payload(n)) for n in range(5)]
        spool.append("setManifest", {"key": "m"})
        assert ids == sorted(ids) and len(spool) == 6
    with Spool(path, max_bytes=1 << 20) as spool:  # another process, later
        entries = spool.head(100)
        assert [e.payload.get("n") for e in entries] == [0, 1, 2, 3, 4, None]
        assert [e.kind for e in entries] == ["report"] * 5 + ["setManifest"]
        for entry in entries[:3]:
            spool.remove(entry.id)
        spool.remove(entries[0].id)  # again: nothing
        assert [e.payload.get("n") for e in spool.head(2)] == [3, 4]
        for entry in spool.head(100):
            spool.remove(entry.id)
        assert len(spool) == 0 and spool.bytes_held == 0
        later = spool.append("report", payload(9))
    assert later > ids[-1]  # ids are never reused: the order holds across removals


def test_a_full_spool_refuses_the_newest_write_and_keeps_every_older_one(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.sqlite3", max_bytes=1024) as spool:
        accepted = 0
        with pytest.raises(SpoolFull) as caught:
            while True:
                spool.append("report", payload(accepted, size=100))
                accepted += 1
        assert "S3_UPLOAD_SPOOL_MAX_BYTES" in str(caught.value) and "nothing was dropped" in str(
            caught.value)
        assert caught.value.code == "SpoolFull"
        assert spool.bytes_held <= 1024 and len(spool) == accepted > 0
        assert [e.payload["n"] for e in spool.head(100)] == list(range(accepted))
        spool.remove(spool.head(1)[0].id)  # room again
        spool.append("report", payload(99, size=100))


def test_space_is_given_back_once_the_spool_empties(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with Spool(path, max_bytes=64 << 20) as spool:
        for n in range(200):
            spool.append("report", payload(n, size=20_000))
        full = path.stat().st_size + Path(f"{path}-wal").stat().st_size
        for entry in spool.head(1000):
            spool.remove(entry.id)
        empty = path.stat().st_size + Path(f"{path}-wal").stat().st_size
    assert full > 4_000_000 and empty < 200_000, (full, empty)


WRITER = """
import sys
from pathlib import Path
from s3convex.storage import Spool
spool = Spool(Path(sys.argv[1]), max_bytes=1 << 30).open()
count = int(sys.argv[2])
for n in range(count if count else 10**9):
    spool.append("report", {"n": n, "pad": "y" * 3000})
    if n == 0 and not count:
        print("appending", flush=True)  # the parent kills from now on, mid-append
    if count:
        continue
print("ready", flush=True)
sys.stdin.readline()  # held open, never closed: killed
"""


def test_a_process_killed_while_appending_leaves_a_readable_spool_without_gaps(
        tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "0"], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "appending"  # however slow the start was
    time.sleep(0.5)  # appending as fast as fsync allows
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    with Spool(path, max_bytes=1 << 30) as spool:
        entries = spool.head(100_000)
        assert entries, "the first append was reported but is not in the spool"
        assert [e.payload["n"] for e in entries] == list(range(len(entries)))
        assert spool.skipped == 0 and spool.quarantined is None
        spool.append("report", {"n": "after"})  # and it takes more


def test_a_torn_tail_is_skipped_and_everything_before_it_reads_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.sqlite3"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "5"], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    writer.stdin.close() if writer.stdin else None
    writer.wait(30)
    # Five appends, then the process died: its WAL was never checkpointed into the file.
    writer = subprocess.Popen([sys.executable, "-c", WRITER.replace(
        'if count:\n        continue', 'pass'), str(path), "1"], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 4096, "the last append should sit in the WAL"
    with wal.open("r+b") as handle:  # the last write torn half-way (power cut mid-fsync)
        handle.truncate(wal.stat().st_size - 1500)
    with caplog.at_level(logging.ERROR), Spool(path, max_bytes=1 << 30) as spool:
        ns = [e.payload["n"] for e in spool.head(100)]
        assert ns == [0, 1, 2, 3, 4], ns  # the torn one is gone, nothing before it
        assert spool.quarantined is None
        spool.append("report", {"n": 5})
        assert [e.payload["n"] for e in spool.head(100)][-1] == 5


def test_an_entry_whose_checksum_fails_is_skipped_loudly_and_the_rest_delivered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.sqlite3"
    with Spool(path, max_bytes=1 << 20) as spool:
        for n in range(3):
            spool.append("report", payload(n))
    db = sqlite3.connect(path)
    db.execute("UPDATE entries SET payload = CAST(replace(CAST(payload AS TEXT), '\"n\":1', "
               "'\"n\":7') AS BLOB) WHERE id = 2")  # bit rot SQLite itself does not notice
    db.commit()
    db.close()
    with caplog.at_level(logging.ERROR), Spool(path, max_bytes=1 << 20) as spool:
        assert [e.payload["n"] for e in spool.head(100)] == [0, 2]
        assert spool.skipped == 1 and len(spool) == 2
    assert any("skipped" in r.getMessage() and getattr(r, "entry", None) == 2
               for r in caplog.records)


def test_an_unreadable_spool_file_is_moved_aside_and_a_fresh_one_starts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not a database at all, a disk gave back garbage" * 100)
    with caplog.at_level(logging.ERROR), Spool(path, max_bytes=1 << 20) as spool:
        assert spool.quarantined is not None and spool.quarantined.exists()
        assert spool.quarantined.read_bytes().startswith(b"this is not a database")
        spool.append("report", payload(1))
        assert len(spool) == 1
    assert any("moved aside" in r.getMessage() for r in caplog.records)


def test_a_spool_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolUnusable) as caught:
        Spool(tmp_path / "file" / "s.sqlite3", max_bytes=1 << 20).open()
    assert "open spool" in str(caught.value)


def test_one_spool_file_per_convex_deployment(tmp_path: Path) -> None:
    one = spool_path(tmp_path, "https://a.convex.cloud")
    assert one == spool_path(tmp_path, "https://a.convex.cloud")
    assert one != spool_path(tmp_path, "https://b.convex.cloud")
    assert one.parent == tmp_path and one.name.endswith(".sqlite3")
