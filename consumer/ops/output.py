"""What every command prints through: table-or-JSON output, progress, durations.

Output rule, for every command: a command builds one JSON-shaped document and hands it to
:func:`emit` with the function that renders it for people. On a terminal that function prints it
(a rich table, a line); when stdout is not a terminal, or with ``--json``, the document is
printed as JSON instead, so ``s3convex replay list | jq`` just works. Either way the document
goes through :func:`plain` first: Convex's JSON gives every number as a float (``5.0``), and a
size, a count or a revision reads as ``5`` — tables and JSON show the same whole numbers.

Progress bars go to stderr and only when stderr is a terminal; cron jobs and pipes see none of
them. Errors are not printed here: commands raise, and :func:`s3convex.consumer.cli.main` is
the one exit path.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

JsonOption = Annotated[
    bool,
    typer.Option("--json", envvar="S3CONVEX_JSON",
                 help="Print JSON (the default when stdout is not a terminal)."),
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# --- the output rule ---------------------------------------------------------------------------

def wants_json(flag: bool) -> bool:
    return flag or not sys.stdout.isatty()


def plain(data: Any) -> Any:
    """``data`` with every whole-number float an ``int``, through dicts, lists and tuples.

    Convex's JSON writes every number as a float (``"size": 5.0``, ``"revision": 1.0``); what
    this project stores and counts are whole numbers, and should print as such.
    """
    if isinstance(data, float):
        return int(data) if data.is_integer() else data
    if isinstance(data, Mapping):
        return {key: plain(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [plain(value) for value in data]
    return data


def emit(document: Any, *, json_output: bool, render: Callable[[Any], None]) -> None:
    """Print a command's result: ``render(document)`` on a terminal, JSON otherwise.

    ``render`` receives the document after :func:`plain`, so it shows what JSON would.
    """
    document = plain(document)
    if wants_json(json_output):
        print_json(document)
    else:
        render(document)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(plain(data), indent=2, default=str, ensure_ascii=False))


def json_line(data: Any) -> str:
    """One JSONL line (no newline) of ``data``, with the same whole numbers as :func:`emit`."""
    return json.dumps(plain(data), default=str, ensure_ascii=False)


def console() -> Console:
    return Console()


# --- parsing and formatting --------------------------------------------------------------------

def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d``, ``1w`` → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 15m, 2h or 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_rate(text: str) -> float:
    """``50``, ``50/s``, ``3000/m`` → messages per second."""
    value, _, unit = text.strip().partition("/")
    per = {"": 1, "s": 1, "m": 60, "h": 3600}.get(unit.strip())
    try:
        rate = float(value) / per if per else 0.0
    except ValueError:
        rate = 0.0
    if rate <= 0:
        raise typer.BadParameter(f"{text!r} is not a rate like 50/s or 3000/m")
    return rate


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{max(0.0, seconds):.0f}s"


def human_bytes(size: float | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def iso_ms(ms: float | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def now_ms() -> int:
    return int(time.time() * 1000)


def new_run_id() -> str:
    """``20261101T120000Z-1a2b3c4d``: sorts by start time, unique across operators."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


# --- progress ----------------------------------------------------------------------------------

class ProgressView:
    """``update(done, total=None, note=...)``; silent unless stderr is a terminal."""

    def __init__(self, progress: Progress | None, task: Any) -> None:
        self._progress = progress
        self._task = task

    def update(self, completed: int, total: int | None = None, note: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total, note=note)


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator[ProgressView]:
    err = Console(stderr=True)
    if not err.is_terminal:
        yield ProgressView(None, None)
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[note]}")]
    with Progress(*columns, console=err, transient=False) as bar:
        yield ProgressView(bar, bar.add_task(description, total=total, note=""))
