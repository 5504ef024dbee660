"""``s3convex url``: hand out an asset URL as AssetAccess does, manage who may read, refresh.

    s3convex url get KEY --as PRINCIPAL        the URL, or exit 1 with why not
    s3convex url grant PRINCIPAL --session S   (or --key K) read access, optionally --expires-in
    s3convex url revoke PRINCIPAL --session S  (or --key K)
    s3convex url owner SESSION PRINCIPAL       make PRINCIPAL the session's owner
    s3convex url audit [--principal P | --key K]
    s3convex url refresh                       one sweep of the URL refresher

Every decision and change is audited in Convex (``accessAudit``) with ``--actor`` (default
``$S3CONVEX_ACTOR``, else ``user@host``) as who did it. Output as every command's: on a terminal
``get`` prints the bare URL (its source and expiry on stderr), elsewhere JSON (``| jq -r .url``).
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from s3convex.adapters.convex import ConvexClient
from s3convex.consumer.ops.clients import OpsClients, clients
from s3convex.consumer.ops.output import JsonOption, console, emit, iso_ms, parse_duration
from s3convex.core.errors import AssetGone
from s3convex.settings import AwsSettings, ConvexSettings, Settings, load, load_settings

T = TypeVar("T")

app = typer.Typer(
    name="url",
    help="Asset URLs: get one as a principal, grant/revoke access, audit, refresh.",
    no_args_is_help=True,
    add_completion=False,
)

ActorOption = Annotated[
    str | None,
    typer.Option("--actor", envvar="S3CONVEX_ACTOR", help="Who is doing this (for the audit)."),
]
SessionOption = Annotated[
    str | None, typer.Option("--session", help="The whole session (its id).")
]
KeyOption = Annotated[str | None, typer.Option("--key", help="One asset (its key).")]
BucketOption = Annotated[
    str | None, typer.Option("--bucket", envvar="S3CONVEX_URL_BUCKET",
                             help="The asset's bucket (default: S3_BUCKET).")
]


@app.command()
def get(
    key: Annotated[str, typer.Argument(help="The object key.")],
    principal: Annotated[
        str, typer.Option("--as", envvar="S3CONVEX_PRINCIPAL", help="Who is asking.")
    ],
    bucket: BucketOption = None,
    json_output: JsonOption = False,
) -> None:
    """A URL PRINCIPAL may use for KEY (exit 1, no URL, when denied or gone)."""
    from s3convex.access import AssetAccess

    settings = load_settings()

    async def issue(opened: OpsClients) -> dict[str, Any]:
        access = AssetAccess.from_settings(settings, opened.convex, opened.aws.s3)
        where = bucket or settings.aws.bucket
        try:
            return (await access.get_url(principal, where, key)).to_dict()
        except AssetGone as exc:
            raise await _with_why(opened.convex, exc, where, key) from None

    issued = _run_with_aws(settings, issue, max_pool_connections=4)
    emit(issued, json_output=json_output, render=_print_issued)


async def _with_why(convex: ConvexClient, exc: AssetGone, bucket: str, key: str) -> AssetGone:
    """The gone error with why (convex/LIFECYCLE.md): deleted by whom and for what, or missing."""
    record = await convex.query("assets:getByKey", {"bucket": bucket, "key": key}) or {}
    if record.get("status") == "missing":
        why = f"missing from S3 since {iso_ms(record.get('missingSince'))}"
    elif record.get("deleteReason"):
        why = f"{record['deleteReason']} (by {record.get('deletedBy', 'unknown')})"
        if record.get("status") != "deleted":
            why += f", {record['status']}"
    else:
        return exc
    return AssetGone(f"{exc}: {why}", deleted_at=exc.deleted_at, audit_id=exc.audit_id)


def _print_issued(issued: dict[str, Any]) -> None:
    typer.echo(issued["url"])
    expiry = "never" if issued["expiresAt"] is None else iso_ms(issued["expiresAt"])
    typer.echo(f"{issued['source']} URL, expires {expiry}, audit {issued['auditId']}", err=True)


@app.command()
def grant(
    principal: Annotated[str, typer.Argument(help="Who may read.")],
    session: SessionOption = None,
    key: KeyOption = None,
    bucket: BucketOption = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", envvar="S3CONVEX_GRANT_EXPIRES_IN",
                                 help="End the grant after 90s, 15m, 2h, 7d…")
    ] = None,
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Let PRINCIPAL read a whole session (--session) or one asset (--key)."""
    seconds = _positive_duration(expires_in) if expires_in else None
    args: dict[str, Any] = {"principal": principal, "actor": _actor(actor),
                            "scope": _scope(session, key, bucket)}
    if seconds is not None:
        args["expiresAt"] = int((time.time() + seconds) * 1000)
    granted = _run_convex(lambda convex: convex.mutation("access:grant", args))

    def render(doc: dict[str, Any]) -> None:
        until = f" until {iso_ms(doc['expiresAt'])}" if doc.get("expiresAt") else ""
        typer.echo(f"granted {doc['_id']} to {principal}{until}")

    emit(granted, json_output=json_output, render=render)


@app.command()
def revoke(
    principal: Annotated[str, typer.Argument(help="Whose access ends.")],
    session: SessionOption = None,
    key: KeyOption = None,
    bucket: BucketOption = None,
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """End PRINCIPAL's grants on a session (--session) or an asset (--key)."""
    args = {"principal": principal, "actor": _actor(actor), "scope": _scope(session, key, bucket)}
    revoked = _run_convex(lambda convex: convex.mutation("access:revoke", args))
    emit({"principal": principal, "revoked": revoked}, json_output=json_output,
         render=lambda doc: typer.echo(f"revoked {doc['revoked']} grant(s)"))


@app.command()
def owner(
    session: Annotated[str, typer.Argument(help="The session id.")],
    principal: Annotated[str, typer.Argument(help="Its new owner.")],
    actor: ActorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make PRINCIPAL the owner of SESSION (who may read all of its assets)."""
    args = {"sessionId": session, "ownerId": principal, "actor": _actor(actor)}
    _run_convex(lambda convex: convex.mutation("access:setOwner", args))
    emit({"sessionId": session, "ownerId": principal}, json_output=json_output,
         render=lambda doc: typer.echo(f"{doc['ownerId']} owns session {doc['sessionId']}"))


@app.command()
def audit(
    principal: Annotated[str | None, typer.Option("--principal", help="Only this principal.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only this asset.")] = None,
    bucket: BucketOption = None,
    limit: Annotated[int, typer.Option("--limit", envvar="S3CONVEX_AUDIT_LIMIT", min=1, max=1000)] = 50,
    json_output: JsonOption = False,
) -> None:
    """Access decisions and changes, newest first."""
    if principal and key:
        raise typer.BadParameter("give --principal or --key, not both")
    args: dict[str, Any] = {"paginationOpts": {"cursor": None, "numItems": limit}}
    if principal:
        args["principal"] = principal
    if key:
        args.update(bucket=bucket or load(AwsSettings).bucket, key=key)

    async def newest(convex: ConvexClient) -> list[dict[str, Any]]:
        return (await convex.query("access:auditLog", args))["page"]  # one page: the newest

    emit(_run_convex(newest), json_output=json_output, render=_print_audit)


def _print_audit(rows: list[dict[str, Any]]) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("At", "Action", "Outcome", "Principal", "What", "Reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        what = row.get("key") or (f"session {row['sessionId']}" if row.get("sessionId") else "")
        table.add_row(iso_ms(row["at"]), row["action"], row["outcome"], row["principal"], what,
                      row.get("reason") or "")
    console().print(table)


@app.command()
def refresh(json_output: JsonOption = False) -> None:
    """Re-sign every stored URL expiring within URL_REFRESH_MARGIN, once."""
    from s3convex.adapters.urls import url_source
    from s3convex.consumer.url_refresh import UrlRefresher

    settings = load_settings()

    async def sweep(opened: OpsClients) -> dict[str, Any]:
        refresher = UrlRefresher(opened.convex, url_source(settings.urls, opened.aws),
                                 [settings.aws.bucket],
                                 margin_s=settings.urls.effective_refresh_margin,
                                 interval_s=settings.urls.refresh_interval)
        return (await refresher.refresh_once()).to_dict()

    report = _run_with_aws(settings, sweep, max_pool_connections=8)
    emit(report, json_output=json_output, render=lambda doc: typer.echo(
        ", ".join(f"{name} {count}" for name, count in doc.items())))


# --- plumbing ------------------------------------------------------------------------------


def _run_convex(work: Callable[[ConvexClient], Awaitable[T]]) -> T:
    """Run ``work`` with a Convex client: what only changes or reads access needs."""
    convex_settings = load(ConvexSettings)

    async def main() -> T:
        async with clients(convex=convex_settings) as opened:
            return await work(opened.convex)

    return asyncio.run(main())


def _run_with_aws(settings: Settings, work: Callable[[OpsClients], Awaitable[T]], *,
                  max_pool_connections: int) -> T:
    """Run ``work`` with Convex and the AWS clients (what signs URLs)."""

    async def main() -> T:
        async with clients(aws=settings.aws, convex=settings.convex,
                           max_pool_connections=max_pool_connections) as opened:
            return await work(opened)

    return asyncio.run(main())


def _scope(session: str | None, key: str | None, bucket: str | None) -> dict[str, str]:
    if session is not None and key is None:
        return {"sessionId": session}
    if key is not None and session is None:
        return {"bucket": bucket or load(AwsSettings).bucket, "key": key}
    raise typer.BadParameter("give exactly one of --session or --key")


def _actor(actor: str | None) -> str:
    return actor or f"{getpass.getuser()}@{socket.gethostname()}"


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 15m, 2h or 7d")
    return seconds


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex url`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.add_typer(app, name="url")
