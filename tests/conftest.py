"""Shared fixtures: the real local servers every integration test talks to.

- S3 + SQS: moto or LocalStack, chosen once per session with ``--backend`` (``tests/backends.py``).
- Convex: the project's local Convex server (``convex_local``), running ``convex/``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from convex_local.launcher import LocalConvex, start_local_convex
from s3convex.adapters.convex import ConvexClient

pytest_plugins = ["tests.backends"]


@pytest.fixture(scope="session")
def convex_server() -> Iterator[LocalConvex]:
    server = start_local_convex(admin_key="test-admin-" + secrets.token_hex(16))
    yield server
    server.stop()


def set_convex_faults(server: LocalConvex, **faults: float) -> None:
    """Tell the local Convex server to inject faults (rate503, rate429, latencyMs, failAfterCommit)."""
    body = {"rate503": 0, "rate429": 0, "latencyMs": 0, "failAfterCommit": 0, **faults}
    response = httpx.post(
        f"{server.url}/_local/faults",
        json=body,
        headers={"Authorization": f"Convex {server.admin_key}"},
    )
    response.raise_for_status()


@pytest.fixture
def convex_faults(convex_server: LocalConvex) -> Iterator[object]:
    """Set faults for one test; they are cleared afterwards whatever happens."""
    yield lambda **faults: set_convex_faults(convex_server, **faults)
    set_convex_faults(convex_server)


@pytest.fixture
async def convex(convex_server: LocalConvex) -> AsyncIterator[ConvexClient]:
    async with ConvexClient(convex_server.url, SecretStr(convex_server.admin_key)) as client:
        yield client


@pytest.fixture(scope="session")
def metric_reader():
    """An in-memory OpenTelemetry reader; the global provider can be set once per process."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from s3convex.consumer.telemetry import configure_metrics

    reader = InMemoryMetricReader()
    configure_metrics(reader)
    return reader


@pytest.fixture
async def stack(aws_resources, convex_server: LocalConvex, convex: ConvexClient,
                monkeypatch: pytest.MonkeyPatch):
    """Provisioned bucket + queue + DLQ + notifications, and settings pointing at Convex."""
    from s3convex.infra.desired import load_infra_settings
    from s3convex.infra.provision import Provisioner
    from tests.stack import TEST_TUNING, Stack

    env = {
        **aws_resources.env,
        **TEST_TUNING,
        "CONVEX_URL": convex_server.url,
        "CONVEX_DEPLOY_KEY": convex_server.admin_key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    Provisioner.from_settings(load_infra_settings()).up()
    sqs = aws_resources.client("sqs")
    yield Stack(
        resources=aws_resources,
        env=env,
        convex=convex,
        s3=aws_resources.client("s3"),
        sqs=sqs,
        queue_url=sqs.get_queue_url(QueueName=aws_resources.queue_name)["QueueUrl"],
        dlq_url=sqs.get_queue_url(QueueName=aws_resources.dlq_name)["QueueUrl"],
    )
