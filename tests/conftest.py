"""Shared fixtures: the real local servers every integration test talks to.

- S3 + SQS: moto or LocalStack, chosen once per session with ``--backend`` (``tests/backends.py``).
- Convex: the project's local Convex server (``convex_local``), running ``convex/``, with JWT
  verification on: one dev key pair per session (``dev_auth``) whose ``AUTH_*`` environment
  the server's ``convex/auth.config.ts`` reads. The deploy key works as before; public
  functions see the identity of a ``mint_token(user)`` token.

Auth fixtures
    ``dev_auth``        (session)  the :class:`~convex_local.launcher.DevAuth` the server trusts.
    ``mint_token``      (session)  ``mint_token("alice", ttl_seconds=..., claims=...)`` → a
                        :class:`~convex_local.launcher.DevToken`: the signed JWT (a ``str``)
                        with ``.principal`` (its ``tokenIdentifier``, ``<iss>|<sub>``, what
                        ``access:setOwner`` / ``access:grant`` take) and ``.subject``.
    ``principal_of``    (session)  ``principal_of("alice")`` → that principal, without a token.
    ``bad_token``       (session)  ``bad_token("expired" | "wrong_issuer" | "wrong_audience" |
                        "bad_signature", user="mallory")`` → a token the server refuses
                        (``convex_local.launcher.BAD_TOKEN_KINDS``).
    ``start_convex``    (function) ``start_convex(state_file=None, port=0, env=None,
                        admin_key=None, log_path=None)`` → a dedicated auth-enabled server (same
                        keys), stopped after the test: for restarts, persistence, full logs.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from convex_local.launcher import (
    BadTokenKind,
    DevAuth,
    DevToken,
    LocalConvex,
    start_local_convex,
)
from s3convex.adapters.convex import ConvexClient

pytest_plugins = ["tests.backends", "tests.storage_support"]


@pytest.fixture(scope="session")
def dev_auth() -> DevAuth:
    return DevAuth.generate()


@pytest.fixture(scope="session")
def convex_server(dev_auth: DevAuth) -> Iterator[LocalConvex]:
    server = start_local_convex(admin_key="test-admin-" + secrets.token_hex(16),
                                env=dev_auth.env())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mint_token(dev_auth: DevAuth) -> Callable[..., DevToken]:
    def mint(user: str, **options: Any) -> DevToken:
        return dev_auth.token(user, **options)

    return mint


@pytest.fixture(scope="session")
def principal_of(dev_auth: DevAuth) -> Callable[[str], str]:
    return dev_auth.principal


@pytest.fixture(scope="session")
def bad_token(dev_auth: DevAuth) -> Callable[..., DevToken]:
    def bad(kind: BadTokenKind, user: str = "mallory") -> DevToken:
        return dev_auth.bad_token(kind, user)

    return bad


@pytest.fixture
def start_convex(dev_auth: DevAuth) -> Iterator[Callable[..., LocalConvex]]:
    started: list[LocalConvex] = []

    def start(*, state_file: Path | None = None, port: int = 0, env: dict[str, str] | None = None,
              admin_key: str | None = None, log_path: Path | None = None) -> LocalConvex:
        server = start_local_convex(admin_key or "test-admin-" + secrets.token_hex(16), port=port,
                                    state_file=state_file, env={**dev_auth.env(), **(env or {})},
                                    log_path=log_path)
        started.append(server)
        return server

    yield start
    for server in started:
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
