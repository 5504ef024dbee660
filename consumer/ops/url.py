"""``s3convex url``: hand out an asset URL as AssetAccess does, manage who may read, refresh.

    s3convex url get KEY --as PRINCIPAL        the URL on stdout, or exit 1 with why not
    s3convex url grant PRINCIPAL --session S   (or --key K) read access, optionally --expires-in
    s3convex url revoke PRINCIPAL --session S  (or --key K)
    s3convex url owner SESSION PRINCIPAL       make PRINCIPAL the session's owner
    s3convex url audit [--principal P | --key K]
    s3convex url refresh                       one sweep of the URL refresher

Every decision and change is audited in Convex (``accessAudit``) with ``--actor`` (default
``$S3CONVEX_ACTOR``, else ``user@host``) as who did it.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from s3convex.adapters.convex import ConvexClient
from s3convex.settings import Settings, load_settings

T = TypeVar("T")

app = typer.Typer(
    name="url",
    help="Asset URLs: get one as a principal, grant/revoke access, audit, refresh.",
    no_args_is_help=True,
    add_completion=False,
)

JsonOption = Annotated[
    bool, typer.Option("--json", envvar="S3CONVEX_JSON", help="Print JSON on stdout.")
]
ActorOption = Annotated[
    str | None,
    typer.Option("--actor", envvar="S3CONVEX_ACTOR", help="Who is doing this (for the audit)."),
]
SessionOption = Annotated[
    str | None, typer.Option("--session", help="The whole session (its id).")
]
KeyOption = Annotated[str | None, typer.Option("--key", help="One asset (its key).")]
BucketOption = Annotated[
    str | None, typer.Option("--bucket", help="The asset's bucket (default: S3_BUCKET).")
]
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@app.command()
def get(
    key: Annotated[str, typer.Argument(help="The object key.")],
    principal: Annotated[
        str, typer.Option("--as", envvar="S3CONVEX_PRINCIPAL", help="Who is asking.")
    ],
    bucket: BucketOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print a URL PRINCIPAL may use for KEY (exit 1, no URL, when denied or gone)."""
    from s3convex.access import AssetAccess
    from s3convex.adapters.aws import open_clients

    async def issue(settings: Settings, convex: ConvexClient) -> Any:
        async with open_clients(settings.aws, max_pool_connections=4) as aws:
            access = AssetAccess.from_settings(settings, convex, aws.s3)
            return await access.get_url(principal, bucket or settings.aws.bucket, key)

    issued = _run(issue)
    if json_output:
        _print_json(issued.to_dict())
        return
    typer.echo(issued.url)
    expiry = "never" if issued.expires_at_ms is None else _iso(issued.expires_at_ms)
    typer.echo(f"{issued.source} URL, expires {expiry}, audit {issued.audit_id}", err=True)


@app.command()
def grant(
    principal: Annotated[str, typer.Argument(help="Who may read.")],
    session: SessionOption = None,
    key: KeyOption = None,
    bucket: BucketOption = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="End the grant after 90s, 15m, 2h, 7d…")
    ] = None,
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Let PRINCIPAL read a whole session (--session) or one asset (--key)."""
    seconds = _duration(expires_in) if expires_in else None

    async def call(settings: Settings, convex: ConvexClient) -> Any:
        args: dict[str, Any] = {"principal": principal, "actor": _actor(actor),
                                "scope": _scope(settings, session, key, bucket)}
        if seconds is not None:
            args["expiresAt"] = int((time.time() + seconds) * 1000)
        return await convex.mutation("access:grant", args)

    granted = _run(call)
    if json_output:
        _print_json(granted)
    else:
        until = f" until {_iso(granted['expiresAt'])}" if granted.get("expiresAt") else ""
        typer.echo(f"granted {granted['_id']} to {principal}{until}")


@app.command()
def revoke(
    principal: Annotated[str, typer.Argument(help="Whose access ends.")],
    session: SessionOption = None,
    key: KeyOption = None,
    bucket: BucketOption = None,
    actor: ActorOption = None,
) -> None:
    """End PRINCIPAL's grants on a session (--session) or an asset (--key)."""

    async def call(settings: Settings, convex: ConvexClient) -> Any:
        return await convex.mutation("access:revoke", {
            "principal": principal, "actor": _actor(actor),
            "scope": _scope(settings, session, key, bucket)})

    typer.echo(f"revoked {int(_run(call))} grant(s)")  # Convex numbers arrive as floats


@app.command()
def owner(
    session: Annotated[str, typer.Argument(help="The session id.")],
    principal: Annotated[str, typer.Argument(help="Its new owner.")],
    actor: ActorOption = None,
) -> None:
    """Make PRINCIPAL the owner of SESSION (who may read all of its assets)."""

    async def call(settings: Settings, convex: ConvexClient) -> Any:
        return await convex.mutation("access:setOwner", {
            "sessionId": session, "ownerId": principal, "actor": _actor(actor)})

    _run(call)
    typer.echo(f"{principal} owns session {session}")


@app.command()
def audit(
    principal: Annotated[str | None, typer.Option("--principal", help="Only this principal.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only this asset.")] = None,
    bucket: BucketOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    json_output: JsonOption = False,
) -> None:
    """Access decisions and changes, newest first."""
    if principal and key:
        raise typer.BadParameter("give --principal or --key, not both")

    async def call(settings: Settings, convex: ConvexClient) -> Any:
        args: dict[str, Any] = {"paginationOpts": {"cursor": None, "numItems": limit}}
        if principal:
            args["principal"] = principal
        if key:
            args.update(bucket=bucket or settings.aws.bucket, key=key)
        return (await convex.query("access:auditLog", args))["page"]

    rows = _run(call)
    if json_output:
        _print_json(rows)
        return
    for row in rows:
        what = row.get("key") or (f"session {row['sessionId']}" if row.get("sessionId") else "")
        extra = f" ({row['reason']})" if row.get("reason") else ""
        typer.echo(f"{_iso(row['at'])}  {row['action']:<8} {row['outcome']:<11} "
                   f"{row['principal']}  {what}{extra}")


@app.command()
def refresh(json_output: JsonOption = False) -> None:
    """Re-sign every stored URL expiring within URL_REFRESH_MARGIN, once."""
    from s3convex.adapters.aws import open_clients
    from s3convex.adapters.urls import url_source
    from s3convex.consumer.url_refresh import UrlRefresher

    async def sweep(settings: Settings, convex: ConvexClient) -> Any:
        async with open_clients(settings.aws, max_pool_connections=8) as aws:
            refresher = UrlRefresher(convex, url_source(settings.urls, aws), [settings.aws.bucket],
                                     margin_s=settings.urls.effective_refresh_margin,
                                     interval_s=settings.urls.refresh_interval)
            return await refresher.refresh_once()

    report = _run(sweep)
    if json_output:
        _print_json(report.to_dict())
    else:
        typer.echo(", ".join(f"{name} {count}" for name, count in report.to_dict().items()))


# --- plumbing ------------------------------------------------------------------------------


def _run(work: Callable[[Settings, ConvexClient], Awaitable[T]]) -> T:
    settings = load_settings()

    async def main() -> T:
        async with ConvexClient(settings.convex.base_url, settings.convex.deploy_key,
                                timeout=settings.convex.timeout) as convex:
            return await work(settings, convex)

    return asyncio.run(main())


def _scope(settings: Settings, session: str | None, key: str | None,
           bucket: str | None) -> dict[str, str]:
    if (session is None) == (key is None):
        raise typer.BadParameter("give exactly one of --session or --key")
    if session is not None:
        return {"sessionId": session}
    return {"bucket": bucket or settings.aws.bucket, "key": key}  # type: ignore[dict-item]


def _actor(actor: str | None) -> str:
    return actor or f"{getpass.getuser()}@{socket.gethostname()}"


def _duration(text: str) -> int:
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 15m, 2h or 7d")
    return int(match.group(1)) * _UNIT[match.group(2)]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex url`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.add_typer(app, name="url")
