"""``s3convex infra up|status|down``: the command line of :mod:`s3convex.infra`'s provisioning.

The commands live here, beside every other operator command, and call the provisioning library
(:class:`s3convex.infra.provision.Provisioner`, whose reports are the plain data of
:mod:`s3convex.infra.plan`); ``s3convex.infra`` itself stays a library with no command line,
below ``s3convex.consumer`` in the layers. Settings come from the environment (and ``.env``)
exactly as for the daemon, minus Convex. Exit codes: 0 done / all present, 1 something missing
(``status``) or an AWS error, 2 bad configuration — errors through the one exit path of
:func:`s3convex.consumer.cli.main`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from s3convex.consumer.ops.bridge import minio_command
from s3convex.consumer.ops.output import JsonOption, console, emit, print_json
from s3convex.infra.desired import load_infra_settings
from s3convex.infra.policies import COMPONENTS, Component, policy_documents, resolve_arns
from s3convex.infra.provision import Provisioner

T = TypeVar("T")

app = typer.Typer(
    name="infra",
    help="Create, check and remove the S3 bucket, SQS queues and S3 → SQS notification.",
    no_args_is_help=True,
    add_completion=False,
)

_ACTION_STYLE = {"none": "green", "create": "yellow", "update": "yellow", "delete": "red"}
_STATE_STYLE = {"present": "green", "missing": "red", "different": "yellow", "removed": "red"}


@app.command()
def up(json_output: JsonOption = False) -> None:
    """Create what is missing and fix what differs; change nothing that is already right."""
    report = _provision(lambda p: p.up())

    def render(document: dict[str, Any]) -> None:
        _print_steps(document["steps"], column="action")
        changes = [s for s in document["steps"] if s["action"] != "none"]
        if document["changed"]:
            console().print(f"Applied {len(changes)} change(s).")
        else:
            console().print(f"Nothing to change: all {len(document['steps'])} resources are up to date.")

    emit(report.to_dict(), json_output=json_output, render=render)


@app.command()
def status(json_output: JsonOption = False) -> None:
    """Show what exists and what is missing or different (exit 1 unless all is present)."""
    plan = _provision(lambda p: p.status())

    def render(document: dict[str, Any]) -> None:
        _print_steps(document["steps"], column="state")
        if not document["up_to_date"]:
            console().print("Run `s3convex infra up` to create or fix these.")

    emit(plan.to_dict(), json_output=json_output, render=render)
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
    report = _provision(lambda p: p.down(delete_bucket=delete_bucket, force=force))

    def render(document: dict[str, Any]) -> None:
        if document["changed"]:
            _print_steps(document["removed"], column="action")
        else:
            console().print("Nothing to remove.")

    emit(report.to_dict(), json_output=json_output, render=render)


# `s3convex infra minio --bucket B`: the MinIO side of the webhook bridge (consumer/ops/bridge.py).
app.command("minio")(minio_command)


@app.command()
def policy(
    component: Annotated[Component | None, typer.Option(
        "--component", help="Print only this component's document (default: all, by name).")] = None,
    account_id: Annotated[str | None, typer.Option(
        "--account-id", envvar="AWS_ACCOUNT_ID",
        help="The account in the ARNs (default: SQS_QUEUE_URL's, else the queue's QueueArn).")] = None,
) -> None:
    """Print least-privilege IAM policy documents (JSON), scoped to the configured bucket and queues."""
    settings = load_infra_settings()
    arns = resolve_arns(settings.aws, settings.sqs, account_id)
    documents = policy_documents(settings.aws, arns, [component] if component else COMPONENTS)
    print_json(documents[component] if component else documents)  # always JSON: it is piped to IAM


def _provision(operation: Callable[[Provisioner], T]) -> T:
    """One operation of a :class:`Provisioner` made from the S3 and SQS settings."""
    return operation(Provisioner.from_settings(load_infra_settings()))


def _print_steps(steps: list[dict[str, Any]], *, column: str) -> None:
    """Steps as :meth:`Plan.to_dict` / :meth:`DownReport.to_dict` document them."""
    styles = _STATE_STYLE if column == "state" else _ACTION_STYLE
    table = Table(show_header=True, header_style="bold")
    for title in ("Resource", "Name", column.capitalize(), "Details"):
        table.add_column(title, overflow="fold")
    for step in steps:
        value = step[column]
        style = styles.get(value, "")
        details = "\n".join(f"{d['field']}: {_short(d['current'])} → {_short(d['desired'])}"
                            for d in step["differences"])
        table.add_row(step["resource"], step["name"], f"[{style}]{value}[/{style}]", details)
    console().print(table)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 200 else text[:197] + "..."


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex infra`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.add_typer(app, name="infra")
