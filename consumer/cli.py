"""``s3convex`` — the command line.

Every command reads its settings from the environment (see ``s3convex.settings``); flags only
override. Every command prints through :mod:`s3convex.consumer.ops.output`: a table on a
terminal, JSON otherwise. There is one error exit path (:func:`main`): commands raise, never
print an error and exit themselves; a configuration problem prints one line and exits 2, a usage
error typer's message and exits 2, any other error of ours (or a file that cannot be read or
written) its cause chain and exits 1 — never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from s3convex.core.errors import ConfigError, SyncError

app = typer.Typer(
    name="s3convex",
    help="Keep S3 objects and their Convex asset records in sync.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command groups live beside the code they drive. Each module named here exposes
# ``register(app)``, which adds its commands or sub-app. Only the group a command line names is
# imported (``s3convex run`` imports none of them); ``--help`` and anything unknown import all.
COMMAND_MODULES = {
    "infra": "s3convex.consumer.ops.infra",  # s3convex infra up|status|down
    "assets": "s3convex.consumer.ops.assets",  # s3convex assets show|list
    "replay": "s3convex.consumer.ops.replay",  # s3convex replay list|show|replay|export|import
    "reconcile": "s3convex.consumer.ops.reconcile",  # s3convex reconcile
    "health": "s3convex.consumer.ops.health",  # s3convex health
    "url": "s3convex.consumer.ops.url",  # s3convex url
    "watch": "s3convex.consumer.ops.watch",  # s3convex watch --session S | --key K
    "upload": "s3convex.consumer.ops.upload",  # s3convex upload DIR --session S --scene X --version N
    "trace": "s3convex.consumer.ops.trace",  # s3convex trace BUCKET/KEY
    "bridge": "s3convex.consumer.ops.bridge",  # s3convex bridge (MinIO webhook → SQS)
    "cleanup": "s3convex.consumer.ops.cleanup",  # s3convex cleanup [--dry-run] [--session S] [--limit N]
    "retention": "s3convex.consumer.ops.retention",  # s3convex retention plan|apply
    "sessions": "s3convex.consumer.ops.sessions",  # s3convex sessions delete|restore|status
}
_OWN_COMMANDS = frozenset({"run", "config"})


def register_commands(argv: list[str]) -> None:
    """Add the command groups ``argv`` (the arguments after the program name) can reach."""
    first = argv[0] if argv else None
    if first in _OWN_COMMANDS:
        return
    named = [first] if first in COMMAND_MODULES else list(COMMAND_MODULES)
    for name in named:
        importlib.import_module(COMMAND_MODULES[name]).register(app)


@app.command()
def run(
    drain: Annotated[
        bool, typer.Option("--drain", help="Exit 0 once the queue is empty and all work is acked.")
    ] = False,
) -> None:
    """Run the consumer daemon: receive → decode → dispatch → apply → ack."""
    from s3convex.consumer.daemon import run_daemon
    from s3convex.consumer.logs import configure_logging
    from s3convex.settings import load_settings

    settings = load_settings()
    configure_logging(settings.telemetry.log_level)
    raise typer.Exit(run_daemon(settings, drain=drain))


@app.command("config")
def show_config(
    json_output: Annotated[bool, typer.Option(
        "--json", envvar="S3CONVEX_JSON",
        help="Print JSON (the default when stdout is not a terminal).")] = False,
) -> None:
    """Print the effective configuration (secrets hidden) and exit 2 if it is invalid."""
    from s3convex.consumer.ops.output import emit
    from s3convex.settings import load_settings

    settings = load_settings()
    variables = {name.upper(): value for name, value in sorted(settings.as_environment().items())}

    def render(document: dict[str, object]) -> None:
        for name, value in document.items():
            typer.echo(f"{name}={value if value is not None else ''}")

    emit(variables, json_output=json_output, render=render)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        register_commands(argv)
        exit_code = app(args=argv, standalone_mode=False)
    except ConfigError as exc:
        print(f"s3convex: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    except SyncError as exc:
        print(f"s3convex: error: {_cause_chain(exc)}", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("s3convex: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors arrive here in non-standalone mode: exit 2
        _show_usage_error(exc)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file named on the command line, a closed pipe
        print(f"s3convex: error: {_cause_chain(exc)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(exit_code if isinstance(exit_code, int) else 0)


def _show_usage_error(exc: typer.TyperException) -> None:
    """Typer's own rendering: the usage line, a hint, ``Error: ...`` (plain, on stderr)."""
    show = getattr(exc, "show", None)  # every error typer's parser raises has one
    if callable(show):
        show()
    else:
        print(f"Error: {exc.format_message()}", file=sys.stderr)


def _cause_chain(exc: BaseException) -> str:
    """``error <- its cause <- …``: each exception's message, following ``__cause__`` (or the
    implicit ``__context__``) to the root, each one once."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(str(current) or type(current).__name__)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)
