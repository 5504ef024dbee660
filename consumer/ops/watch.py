"""``s3convex watch``: a session's assets (or one asset) as they change, live, over a Convex
subscription (:mod:`s3convex.consumer.ops.watcher` has what is subscribed and how it follows
it; :mod:`s3convex.adapters.convex_live` the WebSocket client).

- ``--session S``, ``--key BUCKET/KEY`` (deploy key), ``--asset-id ID`` (with ``--token``);
- as the operator, with ``CONVEX_DEPLOY_KEY``: the internal queries; as an end user, with
  ``--token JWT`` (or ``S3CONVEX_TOKEN``): the public ones, which answer only the session's
  owner or a grantee;
- on a terminal, a table that changes in place: one row per asset with its status (a bar for an
  upload that reports its bytes), the session's counts, the connection; otherwise (or with
  ``--json``) one JSON line per change: ``asset`` lines (first the current state, then one per
  asset that changed), ``session`` (its summary), ``synced`` (the current state is complete),
  ``connection`` (``down`` with the error: the deployment became unreachable or the
  subscription was lost; ``live`` again), ``unlisted``;
- ``--until-status available --count 3`` exits 0 once 3 assets are available; ``--exit-after
  90s`` exits 0 then (1 if ``--until-status`` did not hold by then); Ctrl-C exits 130.

Neither the deploy key, nor a token, nor a stored URL is ever printed: asset lines carry
``urlExpiresAt``, not the URL, and free-text errors are redacted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from pydantic import SecretStr
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from s3convex.adapters.convex_live import LiveConvex, LiveCredentials
from s3convex.consumer.ops.assets import parse_location
from s3convex.consumer.ops.output import (
    JsonOption,
    console,
    human_bytes,
    json_line,
    parse_duration,
    wants_json,
)
from s3convex.consumer.ops.watcher import (
    PROBE_SECONDS,
    Line,
    StopRule,
    Target,
    Watcher,
    WatchState,
    upload_progress,
)
from s3convex.settings import ConvexSettings, load

# Asset statuses: the S3 side's three, and the uploader's two (convex/uploads.ts).
STATUSES = ("available", "deleted", "failed", "pending", "uploading")
DEFAULT_MAX_ASSETS = 1000
# One page, re-run on every change: 2,000 records of the largest size the schema allows (~7 KB)
# read 14 MB, inside Convex's 16 MiB per function.
MAX_ASSETS = 2000


# --- where the changes go ------------------------------------------------------------------------

class JsonLines:
    """One JSON line per change on stdout, flushed at once (a pipe sees it as it happens)."""

    def update(self, state: WatchState, lines: list[Line]) -> None:
        for line in lines:
            typer.echo(json_line(line))


class LiveView:
    """A rich table redrawn in place on each change."""

    def __init__(self, live: Live) -> None:
        self._live = live

    def update(self, state: WatchState, lines: list[Line]) -> None:
        self._live.update(render(state), refresh=True)


_STATUS_STYLE = {"available": "green", "deleted": "red", "failed": "yellow", "uploading": "cyan",
                 "pending": "dim"}


def render(state: WatchState) -> RenderableType:
    """The view of ``state``: a header (what, counts, connection) and one row per asset,
    newest change first."""
    counts = state.counts()
    header = Text.assemble((state.target.label, "bold"), "  ")
    header.append(" · ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no assets yet")
    summary = state.summary or {}
    if summary:
        header.append(f"  ({human_bytes(summary.get('bytes'))} available, "
                      f"{summary.get('scenes', 0)} scene(s))")
        if summary.get("filesTotal"):
            header.append(f"  uploads: {summary.get('filesDone', 0)} of {summary['filesTotal']} "
                          f"files, {human_bytes(summary.get('bytesDone'))} of "
                          f"{human_bytes(summary.get('bytesTotal'))}")
    if state.more:
        header.append(f"  showing the first {state.target.bound}: more exist", style="yellow")
    live = state.connection == "live"
    connection = Text("● live" if live else f"● {state.connection}: {state.problem or '…'}",
                      style="green" if live else "yellow")
    if state.changed_at is not None:
        connection.append(f"  last change {time.strftime('%H:%M:%S', time.localtime(state.changed_at))}",
                          style="dim")
    table = Table(show_header=True, header_style="bold", expand=False)
    for column in ("Key", "Kind", "Scene / v", "Status", "Progress", "Size", "Rev", "Updated"):
        table.add_column(column, overflow="fold")
    rows = sorted(state.assets.values(), key=lambda a: (a.get("updatedAt") or 0), reverse=True)
    for line in rows:
        status = str(line.get("status"))
        scene = " / ".join(str(line[k]) for k in ("sceneId", "version") if line.get(k) is not None)
        table.add_row(str(line.get("key")), str(line.get("kind") or "-"), scene or "-",
                      Text(status, style=_STATUS_STYLE.get(status, "")), _progress_cell(line),
                      human_bytes(line.get("size")), str(line.get("revision", "-")),
                      _clock_time(line.get("updatedAt")))
    return Group(header, connection, table)


def _clock_time(ms: float | None) -> str:
    """A record's time as this terminal's wall clock (HH:MM:SS): it changes while you look."""
    return "-" if ms is None else time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def _progress_cell(line: Line) -> RenderableType:
    progress = upload_progress(line)
    if progress is None:
        return Text("")
    sent, total = progress
    cell = Table.grid(padding=(0, 1))
    cell.add_row(ProgressBar(total=total, completed=min(sent, total), width=12),
                 Text(f"{100 * min(sent, total) / total:.0f}% of {human_bytes(total)}"))
    return cell


@contextmanager
def _sink(json_output: bool) -> Iterator[JsonLines | LiveView]:
    if wants_json(json_output):
        yield JsonLines()
        return
    with Live(Text("connecting…"), console=console(), refresh_per_second=4,
              vertical_overflow="ellipsis") as live:
        yield LiveView(live)


# --- the command ---------------------------------------------------------------------------------

def watch_command(
    session: Annotated[str | None, typer.Option("--session", help="Watch this session's assets.")] = None,
    key: Annotated[str | None, typer.Option(
        "--key", metavar="BUCKET/KEY", help="Watch one asset (with the deploy key).")] = None,
    asset_id: Annotated[str | None, typer.Option(
        "--asset-id", help="Watch one asset by its Convex id (with --token).")] = None,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="S3CONVEX_TOKEN", show_envvar=True,
        help="Watch as this end user (a JWT): public queries only. Default: the deploy key. "
             "Prefer the variable: an argument is visible to others in `ps`.")] = None,
    until_status: Annotated[str | None, typer.Option(
        "--until-status", help="Exit 0 once --count assets have this status.")] = None,
    count: Annotated[int | None, typer.Option(
        "--count", min=1, help="How many assets --until-status waits for (default 1).")] = None,
    exit_after: Annotated[str | None, typer.Option(
        "--exit-after", metavar="DURATION",
        help="Exit after this long (90s, 15m): 0, or 1 if --until-status did not hold.")] = None,
    max_assets: Annotated[int, typer.Option(
        "--max-assets", min=1, max=MAX_ASSETS,
        help="Assets of a session watched at most (deploy key; a token sees the newest 100).")
    ] = DEFAULT_MAX_ASSETS,
    probe_every: Annotated[str, typer.Option(
        "--probe-every", metavar="DURATION",
        help="Ask Convex over HTTP this often whether it is reachable and still accepts the "
             "credentials (0: never).")] = f"{PROBE_SECONDS:g}s",
    json_output: JsonOption = False,
) -> None:
    """Watch a session's assets (or one asset) change, live, over a Convex subscription."""
    if sum(x is not None for x in (session, key, asset_id)) != 1:
        raise typer.BadParameter("name exactly one of --session, --key or --asset-id")
    if token is not None and not token.strip():
        raise typer.BadParameter("--token is empty")
    if key is not None and token is not None:
        raise typer.BadParameter("--key needs the deploy key; with --token, name the asset by "
                                 "--asset-id (sessions:live lists the ids)")
    if asset_id is not None and token is None:
        raise typer.BadParameter("--asset-id reads the public assets:view: give --token too "
                                 "(with the deploy key, use --key BUCKET/KEY)")
    if count is not None and until_status is None:
        raise typer.BadParameter("--count goes with --until-status")
    if until_status is not None and until_status not in STATUSES:
        raise typer.BadParameter(f"--until-status must be one of {', '.join(STATUSES)}")
    seconds = parse_duration(exit_after) if exit_after is not None else None
    if seconds is not None and seconds <= 0:
        raise typer.BadParameter("--exit-after must be longer than 0 s")
    probe_seconds = parse_duration(probe_every)

    if session is not None:
        target = Target.session(session, as_user=token is not None, max_assets=max_assets)
    elif key is not None:
        target = Target.key(*parse_location(key))
    else:
        target = Target.asset_id(str(asset_id))
    stop = StopRule(until=(until_status, count or 1) if until_status else None, exit_after=seconds)

    if token is None:
        deployment = load(ConvexSettings)
        credentials = LiveCredentials.deploy_key(deployment.deploy_key)
    else:  # an end user has no deploy key: only the deployment's URL and timeout are read
        deployment = load(ConvexSettings, deploy_key="not-used-with-a-token")
        credentials = LiveCredentials.token(SecretStr(token.strip()))

    async def watch(sink: JsonLines | LiveView) -> None:
        async with LiveConvex(deployment.base_url, credentials, timeout=deployment.timeout) as live:
            await Watcher(live, target, sink, stop, probe_every=probe_seconds).run()

    with _sink(json_output) as sink:
        asyncio.run(watch(sink))


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex watch`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.command("watch")(watch_command)
