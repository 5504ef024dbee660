"""``s3convex retention``: obsolete scene versions under the retention policy (R4.3).

    s3convex retention plan  [--session S] [--keep N] [--max-age-days D]   what would go, sizes
    s3convex retention apply [--session S] [--keep N] [--max-age-days D]   mark it for cleanup

The policy defaults to ``RETENTION_KEEP_VERSIONS`` / ``RETENTION_MAX_AGE_DAYS``: keep the current
version plus N older ones, and/or versions seen within D days (with both, a version goes only
when both let it). The current version, and every key the current manifest.json lists, never
goes. ``apply`` marks the files ``cleanup_pending`` (reason ``retention``); the cleanup worker
(``s3convex cleanup``, or the daemon) removes them from S3.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from typing import Annotated, Any

import typer
from rich.table import Table

from s3convex.consumer.ops.clients import clients
from s3convex.consumer.ops.output import JsonOption, console, emit, human_bytes
from s3convex.consumer.retention import Retention, RetentionPolicy
from s3convex.core.errors import ConfigError
from s3convex.settings import AwsSettings, CleanupSettings, ConvexSettings, load

app = typer.Typer(name="retention", help="Obsolete scene versions: plan, apply.",
                  no_args_is_help=True, add_completion=False)

SessionOption = Annotated[str | None, typer.Option("--session", help="Only this session.")]
KeepOption = Annotated[int | None, typer.Option(
    "--keep", min=0, help="Older versions kept besides the current (default RETENTION_KEEP_VERSIONS).")]
AgeOption = Annotated[float | None, typer.Option(
    "--max-age-days", min=0.001, help="Drop versions last seen longer ago (default RETENTION_MAX_AGE_DAYS).")]


def _policy(keep: int | None, max_age_days: float | None) -> RetentionPolicy:
    settings = load(CleanupSettings)
    if keep is None and max_age_days is None:
        keep, max_age_days = settings.retention_keep_versions, settings.retention_max_age_days
    try:
        return RetentionPolicy(keep, max_age_days)
    except ValueError as exc:
        raise ConfigError(f"{exc} (or --keep / --max-age-days)") from None


def _run(work: Any) -> Any:
    aws, convex_settings = load(AwsSettings), load(ConvexSettings)

    async def main() -> Any:
        async with clients(aws=aws, convex=convex_settings, max_pool_connections=4) as opened:
            return await work(opened)

    return asyncio.run(main())


@app.command()
def plan(session: SessionOption = None, keep: KeepOption = None, max_age_days: AgeOption = None,
         json_output: JsonOption = False) -> None:
    """What the policy would remove: each obsolete version, its files and bytes."""
    policy = _policy(keep, max_age_days)

    async def work(opened: Any) -> dict[str, Any]:
        retention = Retention(opened.convex, opened.aws.s3, policy)
        versions = [v.to_dict() async for v in retention.plan(session=session)]
        return {"policy": policy.args(), "versions": versions,
                "files": sum(v["files"] for v in versions), "bytes": sum(v["bytes"] for v in versions)}

    emit(_run(work), json_output=json_output, render=_render_plan)


@app.command()
def apply(session: SessionOption = None, keep: KeepOption = None, max_age_days: AgeOption = None,
          actor: Annotated[str | None, typer.Option("--actor", envvar="S3CONVEX_ACTOR")] = None,
          json_output: JsonOption = False) -> None:
    """Mark the obsolete versions' files for cleanup (reason: retention)."""
    policy = _policy(keep, max_age_days)
    who = actor or f"{getpass.getuser()}@{socket.gethostname()}"

    async def work(opened: Any) -> dict[str, Any]:
        totals = await Retention(opened.convex, opened.aws.s3, policy).apply(actor=who, session=session)
        return {"policy": policy.args(), **totals}

    emit(_run(work), json_output=json_output, render=lambda d: console().print(
        f"marked {d['marked']} file(s) of {d['versions']} version(s), {human_bytes(d['bytes'])}, "
        f"for cleanup ({d['refused']} no longer obsolete)"))


def _render_plan(document: dict[str, Any]) -> None:
    table = Table(title=f"obsolete: {document['files']} file(s), {human_bytes(document['bytes'])}",
                  header_style="bold")
    for column in ("Session", "Scene", "Version", "Current", "Files", "Size"):
        table.add_column(column, overflow="fold")
    for v in document["versions"]:
        table.add_row(v["sessionId"], v["sceneId"], str(v["version"]), str(v["currentVersion"]),
                      str(v["files"]), human_bytes(v["bytes"]))
    console().print(table)


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex retention`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.add_typer(app, name="retention")
