"""``s3convex infra up|status|down``: a thin layer over :class:`s3convex.infra.provision.Provisioner`.

Settings come from the environment (and ``.env``) exactly as for the daemon, minus Convex.
Exit codes: 0 done / all present, 1 something missing or an AWS error, 2 bad configuration.
``--json`` prints the report as one JSON document on stdout for scripts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from s3convex.core.errors import ConfigError, SyncError
from s3convex.infra.desired import load_infra_settings
from s3convex.infra.plan import DownReport, Plan, Step
from s3convex.infra.provision import Provisioner

app = typer.Typer(
    name="infra",
    help="Create, check and remove the S3 bucket, SQS queues and S3 → SQS notification.",
    no_args_is_help=True,
    add_completion=False,
)

JsonOption = Annotated[
    bool,
    typer.Option("--json", envvar="S3CONVEX_JSON", help="Print the report as JSON on stdout."),
]
_ACTION_STYLE = {"none": "green", "create": "yellow", "update": "yellow", "delete": "red"}
_STATE_STYLE = {"present": "green", "missing": "red", "different": "yellow", "removed": "red"}


@app.command()
def up(json_output: JsonOption = False) -> None:
    """Create what is missing and fix what differs; change nothing that is already right."""
    report = _run(lambda p: p.up())
    if json_output:
        _print_json(report.to_dict())
        return
    _print_steps(report.plan.steps, column="action")
    if report.changed:
        _console().print(f"Applied {len(report.plan.changes)} change(s).")
    else:
        _console().print(
            f"Nothing to change: all {len(report.plan.steps)} resources are up to date."
        )


@app.command()
def status(json_output: JsonOption = False) -> None:
    """Show what exists and what is missing or different (exit 1 unless all is present)."""
    plan: Plan = _run(lambda p: p.status())
    if json_output:
        _print_json(plan.to_dict())
    else:
        _print_steps(plan.steps, column="state")
        if not plan.up_to_date:
            _console().print("Run `s3convex infra up` to create or fix these.")
    raise typer.Exit(0 if plan.up_to_date else 1)


@app.command()
def down(
    delete_bucket: Annotated[
        bool, typer.Option("--delete-bucket", help="Also delete the bucket (refused if not empty).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="With --delete-bucket: delete every object first.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Remove our notification entry and both queues (others' entries are kept)."""
    # Deliberately no environment defaults for --delete-bucket/--force: destroying data takes
    # a flag typed on the command line.
    if force and not delete_bucket:
        raise typer.BadParameter("--force only applies together with --delete-bucket")
    report: DownReport = _run(lambda p: p.down(delete_bucket=delete_bucket, force=force))
    if json_output:
        _print_json(report.to_dict())
    elif report.changed:
        _print_steps(report.removed, column="action")
    else:
        _console().print("Nothing to remove.")


def _run(operation: Callable[[Provisioner], Any]) -> Any:
    """Load settings, run one operation, and turn our errors into a plain message + exit code."""
    try:
        return operation(Provisioner.from_settings(load_infra_settings()))
    except ConfigError as exc:
        _error(f"configuration error: {exc}")
        raise typer.Exit(2) from None
    except SyncError as exc:
        _error(_cause_chain(exc))
        raise typer.Exit(1) from None


def _cause_chain(exc: BaseException) -> str:
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 5:
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__
    return "\n  caused by ".join(parts)


def _console() -> Console:
    return Console()


def _error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)  # plain: rich would wrap long URLs


def _print_json(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _print_steps(steps: tuple[Step, ...], *, column: str) -> None:
    table = Table(show_header=True, header_style="bold")
    for title in ("Resource", "Name", column.capitalize(), "Details"):
        table.add_column(title, overflow="fold")
    for step in steps:
        value = step.state if column == "state" else step.action
        style = (_STATE_STYLE if column == "state" else _ACTION_STYLE).get(value, "")
        details = "\n".join(
            f"{d.field}: {_short(d.current)} → {_short(d.desired)}" for d in step.differences
        )
        table.add_row(step.resource, step.name, f"[{style}]{value}[/{style}]", details)
    _console().print(table)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 200 else text[:197] + "..."


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex infra`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.add_typer(app, name="infra")


def main() -> None:
    app(prog_name="infra")


if __name__ == "__main__":
    main()
