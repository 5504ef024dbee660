"""``s3convex upload DIR --session S --scene X --version N``: a scene version into S3, tracked in
Convex — the command line of :class:`s3convex.storage.S3Storage` (``upload_dir``).

    s3convex upload out/intro --session s1 --scene intro --version 3 [--owner alice]
                    [--include GLOB]… [--exclude GLOB]… [--concurrency N] [--json]
    s3convex upload-spool [--json]      # deliver what S3_UPLOAD_SPOOL_DIR holds, now

Every file is checked before anything is sent; a progress bar (bytes and files) shows on a
terminal's stderr; then a summary table, or JSON when stdout is not a terminal. Exit codes: 0 all
uploaded and the manifest written; 1 a file failed (listed on stderr, with why), a file could not
be read, or Convex could not take the status; 2 a usage error — a missing directory, a session,
scene or version the key layout cannot hold — or bad configuration. Errors through the one exit
path of :func:`s3convex.consumer.cli.main`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from s3convex.consumer.ops.output import JsonOption, console, emit, human_bytes
from s3convex.core.errors import ConfigError, SyncError
from s3convex.settings import Settings, load_settings
from s3convex.storage import (
    FailedFile,
    KeyOutsideLayout,
    PlannedFile,
    S3Storage,
    UploadedFile,
    UploadResult,
    UploadSubscriber,
)
from s3convex.storage.keys import build_key
from s3convex.storage.plan import MANIFEST_NAME


def upload_command(
    directory: Annotated[Path, typer.Argument(
        exists=True, file_okay=False, dir_okay=True, readable=True,
        help="The scene version's files (one directory level: the layout's {file} is one segment).")],
    session: Annotated[str, typer.Option("--session", envvar="S3CONVEX_UPLOAD_SESSION",
                                         help="The session id.")],
    scene: Annotated[str, typer.Option("--scene", envvar="S3CONVEX_UPLOAD_SCENE",
                                       help="The scene id.")],
    version: Annotated[int, typer.Option("--version", envvar="S3CONVEX_UPLOAD_VERSION", min=0,
                                         help="The scene's version number.")],
    owner: Annotated[str | None, typer.Option(
        "--owner", envvar="S3CONVEX_UPLOAD_OWNER",
        help="Create the session first, owned by this principal (uploads:createSession).")] = None,
    include: Annotated[list[str] | None, typer.Option(
        "--include", help="Only files whose path in DIR matches this glob (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", help="Leave out files whose path in DIR matches this glob (repeatable).")] = None,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", envvar="S3CONVEX_UPLOAD_CONCURRENCY", min=1, max=128,
        help="Requests in flight, files and parts together (default: S3_UPLOAD_CONCURRENCY).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Upload DIR as VERSION of SCENE in SESSION, then its manifest.json; status in Convex."""
    settings = load_settings()
    try:  # what the flags name must fit the key layout: a usage error, before any work
        build_key(settings.aws.key_layout, session=session, scene=scene, version=version,
                  name=MANIFEST_NAME)
    except KeyOutsideLayout as exc:
        raise typer.BadParameter(exc.problem) from None
    result = asyncio.run(_upload(settings, directory, session=session, scene=scene,
                                 version=version, owner=owner, include=include or ["*"],
                                 exclude=exclude or [], concurrency=concurrency))
    emit(result.to_dict(), json_output=json_output, render=_print_result)
    problems = [f"{item.file.name}: {item.error}" for item in result.failed]
    if result.manifest_error:
        problems.append(f"{MANIFEST_NAME}: {result.manifest_error}")
    problems.extend(f"status: {error}" for error in result.status_errors)
    if result.status_spooled and not problems:  # not an error: the status follows when it can
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"s3convex: Convex unreachable: {result.status_spooled} status writes are spooled in "
            f"{settings.upload.spool_dir} and are delivered by the next upload (or "
            f"`s3convex upload-spool`)", markup=False)
    if problems:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"s3convex: error: {len(result.failed)} of "
                  f"{len(result.failed) + len(result.uploaded)} files failed"
                  if result.failed else "s3convex: error: the upload is incomplete")
        for problem in problems:
            err.print(f"  {problem}", markup=False)
        raise typer.Exit(1)


async def _upload(settings: Settings, directory: Path, *, session: str, scene: str,
                  version: int, owner: str | None, include: list[str], exclude: list[str],
                  concurrency: int | None) -> UploadResult:
    with _ProgressBar() as bar:
        async with S3Storage.from_settings(settings) as storage:
            if owner is not None:
                await storage.create_session(session, owner)
            return await storage.upload_dir(directory, session, scene, version, include=include,
                                            exclude=exclude, concurrency=concurrency,
                                            subscribers=[bar])


class _ProgressBar(UploadSubscriber):
    """Bytes and files on stderr, only when stderr is a terminal (as every command's progress)."""

    def __init__(self) -> None:
        err = Console(stderr=True)
        self._progress: Progress | None = None
        if err.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TextColumn("{task.fields[files]}"), TimeElapsedColumn(),
                console=err, transient=False)
        self._task: TaskID | None = None
        self._done = 0
        self._total = 0
        self._bytes = 0

    def __enter__(self) -> _ProgressBar:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("uploading", total=0, files="")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_queued(self, file: PlannedFile, run_id: str, attempt: int) -> None:
        self._total += 1
        self._bytes += file.size
        self._update()

    def on_progress(self, file: PlannedFile, run_id: str, delta: int) -> None:
        self._update(advance=delta)

    def on_retry(self, file: PlannedFile, run_id: str, attempt: int, delay: float,
                 error: SyncError) -> None:
        if self._progress is not None:
            self._progress.console.print(f"retrying {file.name} (attempt {attempt} in "
                                         f"{delay:.1f} s): {error}", markup=False)

    def on_done(self, outcome: UploadedFile | FailedFile) -> None:
        self._done += 1
        self._update()

    def _update(self, *, advance: int = 0) -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, advance=advance, total=self._bytes,
                              files=f"{self._done}/{self._total} files")


def _print_result(document: dict[str, Any]) -> None:
    table = Table(show_header=True, header_style="bold")
    for title in ("File", "Size", "Status", "SHA-256", "Parts", "Attempt", "Error"):
        table.add_column(title, overflow="fold")
    for item in document["files"]:
        status = item["status"]
        style = "green" if status == "available" else "red"
        table.add_row(item["name"], human_bytes(item["size"]), f"[{style}]{status}[/{style}]",
                      (item.get("sha256") or "")[:16], str(item.get("parts", "")),
                      str(item["attempt"]), item.get("error") or "")
    out = console()
    out.print(table)
    manifest = document["manifest"] or "not written (files failed)"
    out.print(f"{document['uploaded']} uploaded, {document['failed']} failed, "
              f"{human_bytes(document['bytes'])}; run {document['runId']}; manifest {manifest}",
              markup=False, highlight=False)


def upload_spool_command(json_output: JsonOption = False) -> None:
    """Deliver the status writes spooled while Convex was unreachable (S3_UPLOAD_SPOOL_DIR)."""
    settings = load_settings()
    if settings.upload.spool_dir is None:
        raise ConfigError("S3_UPLOAD_SPOOL_DIR is not set: there is no spool to deliver")
    document = asyncio.run(_deliver_spool(settings))
    emit(document, json_output=json_output, render=lambda d: console().print(
        f"spool {d['spool']}: {d['delivered']} delivered, {d['left']} left, "
        f"{len(d['errors'])} refused by Convex", markup=False, highlight=False))
    if document["left"] or document["errors"]:
        raise typer.Exit(1)


async def _deliver_spool(settings: Settings) -> dict[str, Any]:
    async with S3Storage.from_settings(settings) as storage:  # opening delivers
        spool = storage.spool
        assert spool is not None
        return {"spool": str(spool.spool.path), "delivered": spool.delivered,
                "left": await spool.pending(), "errors": list(spool.errors)}


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex upload`` and ``s3convex upload-spool`` (see
    ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.command("upload")(upload_command)
    root.command("upload-spool")(upload_spool_command)
