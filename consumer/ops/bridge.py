"""``s3convex bridge``: run the MinIO webhook bridge (:mod:`s3convex.consumer.bridge`).

Settings: ``BRIDGE_*`` (:class:`~s3convex.settings.BridgeSettings`; ``BRIDGE_AUTH_TOKEN`` is
required), the bucket and endpoint (``S3_BUCKET``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``) and the
queues (``SQS_QUEUE_NAME`` / ``SQS_QUEUE_URL``, ``SQS_DLQ_NAME``). A missing or invalid one
exits 2 naming it, through :func:`s3convex.consumer.cli.main`; the token is never printed.
``s3convex infra minio`` prints the MinIO side of the setup.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

import typer

from s3convex.consumer.ops.output import JsonOption, emit
from s3convex.core.errors import ConfigError
from s3convex.settings import AwsSettings, BridgeSettings, SqsSettings, TelemetrySettings, load

_TARGET_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # it ends MinIO's variable names


def bridge_command(
    port: Annotated[int | None, typer.Option(
        "--port", help="Port to listen on (default: $BRIDGE_PORT or 8088; 0 picks a free one).")] = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="Address to listen on (default: $BRIDGE_HOST or 0.0.0.0).")] = None,
) -> None:
    """Receive MinIO's webhook notifications and put them on the SQS queue the daemon reads."""
    from s3convex.consumer.bridge import run_bridge
    from s3convex.consumer.logs import configure_logging
    from s3convex.consumer.telemetry import configure_metrics

    overrides: dict[str, Any] = {"BRIDGE_PORT": port, "BRIDGE_HOST": host}
    bridge, aws, sqs, telemetry = _load_all({k: v for k, v in overrides.items() if v is not None})
    configure_logging(telemetry.log_level)
    # The daemon's exporters (OTEL_* variables): Prometheus on the bridge's own /metrics, OTLP
    # when an endpoint is set; shutting the provider down flushes what OTLP has not sent yet.
    provider = configure_metrics()
    try:
        code = asyncio.run(run_bridge(bridge, aws, sqs))
    finally:
        if provider is not None:
            provider.shutdown()
    raise typer.Exit(code)


def _load_all(overrides: dict[str, Any]) -> tuple[BridgeSettings, AwsSettings, SqsSettings, TelemetrySettings]:
    """Every part the bridge needs; the problems of all of them in one line."""
    problems: list[str] = []
    loaded: list[Any] = []
    for part in (BridgeSettings, AwsSettings, SqsSettings, TelemetrySettings):
        try:
            loaded.append(load(part, **overrides))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))
    bridge, aws, sqs, telemetry = loaded
    return bridge, aws, sqs, telemetry


def minio_command(
    bucket: Annotated[str, typer.Option("--bucket", envvar="S3_BUCKET", help="The MinIO bucket to notify about.")],
    endpoint: Annotated[str | None, typer.Option(
        "--endpoint", help="The bridge's URL as MinIO reaches it (default: http://localhost:$BRIDGE_PORT/).")] = None,
    port: Annotated[int, typer.Option("--port", envvar="BRIDGE_PORT", help="The bridge's port, for the default endpoint.")] = 8088,
    alias: Annotated[str, typer.Option("--alias", help="The `mc` alias of the MinIO server.")] = "local",
    target_id: Annotated[str, typer.Option("--id", help="The webhook target's id in MinIO.")] = "S3CONVEX",
    queue_dir: Annotated[str, typer.Option(
        "--queue-dir", help="Where MinIO keeps events the bridge has not taken yet (absolute path on MinIO's host).")
    ] = "/data/.s3convex-events",
    queue_limit: Annotated[int, typer.Option("--queue-limit", min=1, help="Events MinIO keeps at most.")] = 100_000,
    json_output: JsonOption = False,
) -> None:
    """Print the `mc` commands (or MinIO environment) that make MinIO post a bucket's events to the bridge."""
    document = minio_setup(bucket, endpoint or f"http://localhost:{port}/", alias=alias, target_id=target_id,
                           queue_dir=queue_dir, queue_limit=queue_limit)

    def render(doc: dict[str, Any]) -> None:
        typer.echo("# 1. Point MinIO's webhook target at the bridge, with mc (then restart MinIO):")
        typer.echo("\n".join(doc["mc"]["config"]))
        typer.echo("# ... or in MinIO's environment instead:")
        typer.echo("\n".join(f'export {name}="{value}"' for name, value in doc["environment"].items()))
        typer.echo("# 2. Send the bucket's puts and deletes to it:")
        typer.echo(doc["mc"]["subscribe"])

    emit(document, json_output=json_output, render=render)


def minio_setup(bucket: str, endpoint: str, *, alias: str, target_id: str, queue_dir: str,
                queue_limit: int) -> dict[str, Any]:
    """The MinIO side of the bridge. The token is written as ``$BRIDGE_AUTH_TOKEN`` (the shell
    fills it in), so the secret is never printed."""
    load(AwsSettings, S3_BUCKET=bucket)  # the bucket name is checked as the daemon checks it
    if not _TARGET_ID.match(target_id):
        raise typer.BadParameter("must be 1-64 of A-Z a-z 0-9 _", param_hint="--id")
    if not re.match(r"^https?://[^\s\"]+$", endpoint):
        raise typer.BadParameter("must be an http:// or https:// URL", param_hint="--endpoint")
    if not queue_dir.startswith("/") or any(c.isspace() or c == '"' for c in queue_dir):
        raise typer.BadParameter("must be an absolute path (MinIO requires it)", param_hint="--queue-dir")
    token = "$BRIDGE_AUTH_TOKEN"
    arn = f"arn:minio:sqs::{target_id}:webhook"
    settings = {"endpoint": endpoint, "auth_token": token, "queue_dir": queue_dir, "queue_limit": str(queue_limit)}
    config = " ".join(f'{name}="{value}"' for name, value in settings.items())
    return {
        "arn": arn,
        "mc": {
            "config": [f"mc admin config set {alias} notify_webhook:{target_id} {config}",
                       f"mc admin service restart {alias}"],
            "subscribe": f"mc event add {alias}/{bucket} {arn} --event put,delete",
        },
        "environment": {
            f"MINIO_NOTIFY_WEBHOOK_ENABLE_{target_id}": "on",
            **{f"MINIO_NOTIFY_WEBHOOK_{name.upper()}_{target_id}": value for name, value in settings.items()},
        },
    }


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex bridge`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.command("bridge")(bridge_command)
