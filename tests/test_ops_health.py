"""``s3convex health`` and the daemon's ``/healthz`` / ``/readyz`` against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from s3convex.adapters.aws import open_clients
from s3convex.adapters.convex import ConvexClient
from s3convex.consumer.daemon import Daemon
from s3convex.consumer.probes import Readiness
from tests.backends import free_port
from tests.ops_support import run_cli
from tests.stack import Stack

pytestmark = pytest.mark.e2e


def _statuses(report: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}


async def test_health_of_a_working_stack_then_of_a_drifted_one(stack: Stack) -> None:
    for key in ("h/1.txt", "h/2.txt", "h/3.txt"):
        stack.put(key, key.encode())
    await stack.wait_for_depth(3)
    assert await stack.drain() == 0

    healthy = await run_cli(stack, "health", "--settle", "0", "--json")
    assert healthy.code == 0, healthy.stdout + healthy.stderr
    assert healthy.json["healthy"] is True
    assert _statuses(healthy.json) == {"s3": "ok", "queue": "ok", "dlq": "ok", "notification": "ok",
                                       "convex": "ok", "consistency": "ok"}
    sample = next(c for c in healthy.json["checks"] if c["name"] == "consistency")
    assert sample["data"]["sampled"] == 3

    stack.sqs.send_message(QueueUrl=stack.dlq_url, MessageBody="dead")
    stack.s3.put_bucket_notification_configuration(Bucket=stack.bucket, NotificationConfiguration={})
    stack.put("h/4.txt", b"uploaded while notifications were off")
    drifted = await run_cli(stack, "health", "--settle", "0", "--json")
    statuses = _statuses(drifted.json)
    assert statuses["dlq"] == "warn" and statuses["consistency"] == "warn"
    assert statuses["notification"] == "fail"
    assert drifted.code == 1 and drifted.json["healthy"] is False


async def test_a_missing_queue_is_unhealthy(stack: Stack) -> None:
    stack.sqs.delete_queue(QueueUrl=stack.queue_url)
    await asyncio.sleep(1)  # SQS takes a moment to forget a queue

    result = await run_cli(stack, "health", "--json")

    assert result.code == 1
    checks = {c["name"]: c for c in result.json["checks"]}
    assert checks["queue"]["status"] == "fail"
    assert "not found" in checks["queue"]["detail"]
    assert checks["notification"]["status"] == "fail"
    assert checks["dlq"]["status"] == "ok" and checks["convex"]["status"] == "ok"


async def test_unreachable_convex_is_unhealthy(stack: Stack) -> None:
    result = await run_cli(stack, "health", "--timeout", "5", "--json",
                           env={"CONVEX_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.code == 1
    statuses = _statuses(result.json)
    assert statuses["convex"] == "fail" and statuses["consistency"] == "skipped"
    assert statuses["s3"] == "ok"


@contextlib.asynccontextmanager
async def _deployment_without_trace(convex_url: str) -> AsyncIterator[str]:
    """The local Convex server behind a loopback proxy that renames every ``trace:`` function to
    one that does not exist: the server's own answer for a deployment that lacks convex/trace.ts."""
    async with httpx.AsyncClient(base_url=convex_url, timeout=30) as upstream:
        async def forward(request: web.Request) -> web.Response:
            body = await request.read()
            if body and request.path.startswith("/api/"):
                document = json.loads(body)
                if str(document.get("path", "")).startswith("trace:"):
                    document["path"] = "trace_never_deployed:" + document["path"].split(":", 1)[1]
                body = json.dumps(document).encode()
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
            answer = await upstream.request(request.method, request.path_qs, content=body, headers=headers)
            return web.Response(status=answer.status_code, body=answer.content,
                                content_type=answer.headers.get("content-type", "application/json").split(";")[0])

        app = web.Application()
        app.router.add_route("*", "/{path:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


async def test_a_deployment_without_the_trace_functions_is_unhealthy(stack: Stack, convex_server) -> None:
    async with _deployment_without_trace(convex_server.url) as url:
        result = await run_cli(stack, "health", "--settle", "0", "--json", env={"CONVEX_URL": url})
    assert result.code == 1, result.stdout + result.stderr
    convex = next(c for c in result.json["checks"] if c["name"] == "convex")
    assert convex["status"] == "fail"
    assert "trace:recordDeadLetters (" in convex["detail"] and "trace:deadLetters (" in convex["detail"]
    assert "assets:" not in convex["detail"]  # the functions that are there still answer


async def test_daemon_serves_healthz_and_readyz(stack: Stack) -> None:
    port = free_port()
    daemon = Daemon(stack.settings(health_port=port))
    running = asyncio.create_task(daemon.run())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(100):
                try:
                    alive = await http.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            assert alive.status_code == 200 and alive.json() == {"status": "alive"}
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body["pollers"] == {"running": 2, "total": 2}
            assert body["sqs"]["ok"] and body["convex"]["ok"] and not body["stopping"]
            assert (await http.head("/readyz")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200  # tests/test_observability.py
            assert (await http.get("/nothing-here")).status_code == 404
            assert (await http.post("/readyz")).status_code == 405

            daemon.request_stop()
            assert await asyncio.wait_for(running, 30) == 0
            with pytest.raises(httpx.TransportError):
                await http.get("/healthz")  # the server went with the daemon
    finally:
        if not running.done():
            daemon.request_stop()
            await asyncio.wait_for(running, 30)


async def test_daemon_stops_if_its_probe_port_is_taken(stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert await asyncio.wait_for(Daemon(stack.settings(health_port=port)).run(), 30) == 1


async def test_readiness_follows_its_dependencies(stack: Stack, convex_server, convex_faults) -> None:
    async with (
        open_clients(stack.settings().aws) as aws,
        ConvexClient(convex_server.url, stack.settings().convex.deploy_key) as convex,
    ):
        async def sqs_answers() -> None:
            await aws.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])

        async def convex_answers() -> None:
            await convex.query("assets:getByKey", {"bucket": stack.bucket, "key": "probe"})

        poller = asyncio.create_task(asyncio.sleep(60))
        readiness = Readiness(pollers=lambda: [poller], fresh_seconds=0,
                              checks={"sqs": sqs_answers, "convex": convex_answers})
        try:
            ready, _ = await readiness.report()
            assert ready

            convex_faults(rate503=1.0)
            ready, details = await readiness.report()
            assert not ready and not details["convex"]["ok"] and details["sqs"]["ok"]
            assert "ConvexUnavailable" in details["convex"]["error"]
            convex_faults()

            stack.sqs.delete_queue(QueueUrl=stack.queue_url)
            await asyncio.sleep(1)
            ready, details = await readiness.report()
            assert not ready and not details["sqs"]["ok"] and details["convex"]["ok"]

            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            ready, details = await readiness.report()
            assert details["pollers"] == {"running": 0, "total": 1}
        finally:
            poller.cancel()
