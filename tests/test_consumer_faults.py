"""The daemon under faults: Convex down for a while, kill -9 mid-drain, SIGTERM under load.

Each loses nothing: every event reaches Convex exactly once in its history, nothing is left
invisible on the queue, nothing lands in the DLQ.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from convex_local.launcher import start_local_convex
from s3convex.adapters.convex import ConvexClient
from tests.backends import free_port
from tests.stack import Stack, log_lines

pytestmark = pytest.mark.e2e


async def _upload(stack: Stack, prefix: str, count: int) -> list[str]:
    keys = [f"{prefix}/{i:04d} clip.mp4" for i in range(count)]
    for key in keys:
        stack.put(key, key.encode())
    assert await stack.wait_for_depth(count, timeout=60) >= count
    return keys


async def _assert_all_landed_once(stack: Stack, keys: list[str]) -> None:
    for key in keys:
        record = await stack.record(key)
        assert record is not None and record["status"] == "available", key
        assert len(await stack.history(key)) == 1, f"{key}: duplicate versions"
    assert stack.take_all(stack.dlq_url) == []




async def _wait_for_log(path: Path, message: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(line.get("msg") == message for line in log_lines(path)):
        assert time.monotonic() < deadline, f"no {message!r} in {path.read_text()[-2000:]}"
        await asyncio.sleep(0.05)


async def test_convex_outage_delays_work_and_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "convex.json"
    key = "outage-admin-key-0123456789"
    server = start_local_convex(key, port=port, state_file=state)
    keys = await _upload(stack, "outage", 20)
    server.stop()  # Convex is down before the daemon starts

    daemon = asyncio.create_task(stack.drain(convex_url=server.url, convex_deploy_key=key))
    try:
        await _hold_until_convex_returns(stack, daemon, key, port, state, keys)
    finally:
        daemon.cancel()  # on failure, never leave a daemon polling into later tests


async def _hold_until_convex_returns(stack: Stack, daemon: asyncio.Task[int], key: str, port: int,
                                     state: Path, keys: list[str]) -> None:
    deadline = time.monotonic() + 60
    while stack.depth()["invisible"] == 0:  # the daemon receives, fails to reach Convex...
        assert time.monotonic() < deadline and not daemon.done()
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # ...and keeps holding the batch in flight, not releasing it
    assert not daemon.done()
    assert stack.depth()["invisible"] > 0
    server = start_local_convex(key, port=port, state_file=state)
    try:
        assert await asyncio.wait_for(daemon, 120) == 0
        async with ConvexClient(server.url, SecretStr(key)) as convex:
            for k in keys:
                record = await convex.query("assets:getByKey", {"bucket": stack.bucket, "key": k})
                assert record["status"] == "available", k
    finally:
        server.stop()
    assert stack.take_all(stack.dlq_url) == []


async def test_kill_9_mid_drain_then_restart_loses_nothing(stack: Stack, tmp_path: Path, convex_faults) -> None:
    keys = await _upload(stack, "crash", 150)
    convex_faults(latencyMs=30)  # slow enough that the kill lands mid-drain
    log = tmp_path / "daemon.log"
    first = stack.spawn("--drain", log_path=log, extra_env={"CONSUMER_FLUSH_EVENTS": "10"})
    await _wait_for_log(log, "flush")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    applied_before_restart = sum(1 for line in log_lines(log) if line.get("msg") == "flush")
    assert applied_before_restart >= 1

    second = stack.spawn("--drain", log_path=tmp_path / "restart.log")
    assert await asyncio.to_thread(second.wait, 120) == 0

    await _assert_all_landed_once(stack, keys)
    assert stack.depth() == {"visible": 0, "invisible": 0, "delayed": 0}


async def test_sigterm_under_load_exits_cleanly_and_leaves_nothing_invisible(
    stack: Stack, tmp_path: Path, convex_faults
) -> None:
    keys = await _upload(stack, "term", 120)
    convex_faults(latencyMs=1500)  # more work in flight than the grace period can finish
    log = tmp_path / "daemon.log"
    daemon = stack.spawn(log_path=log, extra_env={"CONSUMER_GRACE_SECONDS": "3",
                                                  "CONSUMER_FLUSH_EVENTS": "5"})
    await _wait_for_log(log, "flush")
    signalled = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(daemon.wait, 30)
    took = time.monotonic() - signalled
    assert code == 0, log.read_text()[-3000:]
    assert took < 3 + 10, f"exit took {took:.1f}s for a 3s grace period"  # grace + closing clients
    assert stack.depth()["invisible"] == 0  # unfinished work was released, not left hidden
    stopped = [line for line in log_lines(log) if line.get("msg") == "consumer stopped"]
    assert stopped and stopped[0]["failed"] is False
    assert stopped[0]["released"] > 0  # the release path was really exercised

    convex_faults()
    assert await stack.drain() == 0
    await _assert_all_landed_once(stack, keys)


async def test_heartbeat_keeps_slow_work_from_a_second_replica(
    stack: Stack, convex_faults, metric_reader
) -> None:
    from tests.test_metrics import RECEIVED, Deltas, snapshot

    keys = await _upload(stack, "slow", 3)
    queued = stack.depth()["visible"]
    convex_faults(latencyMs=9000)  # 1.5x the queue's 6 s visibility timeout, per mutation
    before = snapshot(metric_reader)

    # Two replicas on one queue: without the heartbeat the second would receive the same
    # messages again once their visibility ran out mid-mutation.
    assert await asyncio.gather(stack.drain(consumer_flush_events=1),
                                stack.drain(consumer_flush_events=1)) == [0, 0]

    received = Deltas(before, snapshot(metric_reader))(RECEIVED)
    assert received == queued  # every message received exactly once
    convex_faults()
    await _assert_all_landed_once(stack, keys)


async def test_sigterm_during_convex_outage_releases_held_work(stack: Stack, tmp_path: Path) -> None:
    server = start_local_convex("outage-term-key-0123456789", port=free_port())
    dead_url = server.url
    server.stop()
    keys = await _upload(stack, "held", 10)
    log = tmp_path / "daemon.log"
    daemon = stack.spawn(log_path=log, extra_env={"CONVEX_URL": dead_url,
                                                  "CONSUMER_GRACE_SECONDS": "2"})
    await _wait_for_log(log, "convex unavailable, holding batch")
    daemon.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(daemon.wait, 30)
    assert code == 0, log.read_text()[-3000:]
    assert stack.depth()["invisible"] == 0  # held messages were handed back, not stranded

    assert await stack.drain() == 0  # Convex (the shared server) is up: everything lands
    await _assert_all_landed_once(stack, keys)
