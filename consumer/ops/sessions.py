"""``s3convex sessions``: an operator deletes or restores a session (convex/LIFECYCLE.md).

    s3convex sessions delete S [--reason R] [--grace SECONDS]   hide it, mark its assets
    s3convex sessions restore S                                 undo, while the grace lasts
    s3convex sessions status S                                  where a deletion is

The web app's owner does the same through the public ``sessions:delete`` / ``sessions:restore``.
``--grace`` overrides Convex's ``CLEANUP_GRACE_SECONDS`` for this deletion (0: the next cleanup
pass removes the files). Marking runs in pages in Convex; ``status`` shows the progress.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from typing import Annotated, Any

import typer

from s3convex.consumer.ops.clients import clients
from s3convex.consumer.ops.output import JsonOption, console, emit, iso_ms
from s3convex.core.errors import NotFound
from s3convex.settings import ConvexSettings, load

app = typer.Typer(name="sessions", help="Delete or restore a session.", no_args_is_help=True,
                  add_completion=False)
SessionArgument = Annotated[str, typer.Argument(help="The session id.")]


def _call(kind: str, path: str, args: dict[str, Any]) -> Any:
    settings = load(ConvexSettings)

    async def main() -> Any:
        async with clients(convex=settings) as opened:
            return await opened.convex.call(kind, path, args)  # type: ignore[arg-type]

    return asyncio.run(main())


@app.command()
def delete(session: SessionArgument,
           reason: Annotated[str | None, typer.Option("--reason", help="Why (kept on every record).")] = None,
           grace: Annotated[int | None, typer.Option("--grace", min=0, help="Seconds before S3 is touched.")] = None,
           actor: Annotated[str | None, typer.Option("--actor", envvar="S3CONVEX_ACTOR")] = None,
           json_output: JsonOption = False) -> None:
    """Delete SESSION: hidden at once, its files removed from S3 after the grace."""
    args: dict[str, Any] = {"sessionId": session,
                            "actor": actor or f"{getpass.getuser()}@{socket.gethostname()}"}
    if reason:
        args["reason"] = reason
    if grace is not None:
        args["graceSeconds"] = grace
    emit(_call("mutation", "lifecycle:deleteSession", args), json_output=json_output, render=_render)


@app.command()
def restore(session: SessionArgument, json_output: JsonOption = False) -> None:
    """Undo SESSION's deletion while its grace lasts."""
    emit(_call("mutation", "lifecycle:restoreSession", {"sessionId": session}),
         json_output=json_output, render=_render)


@app.command()
def status(session: SessionArgument, json_output: JsonOption = False) -> None:
    """Where SESSION's deletion is (exit 1 if it was never deleted)."""
    progress = _call("query", "lifecycle:progress", {"sessionId": session})
    if progress is None:
        raise NotFound(f"session {session} was never deleted", operation="lifecycle:progress")
    emit(progress, json_output=json_output, render=_render)


def _render(p: dict[str, Any]) -> None:
    console().print(
        f"session {p['sessionId']}: {p['state']} — marked {p['marked']}, pending {p['pending']}, "
        f"failed {p['failed']}, deleted {p['deleted']}; grace until {iso_ms(p['graceUntil'])}"
        + (f"; by {p['deletedBy']}: {p['deleteReason']}" if p.get("deletedBy") else ""))


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex sessions`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.add_typer(app, name="sessions")
