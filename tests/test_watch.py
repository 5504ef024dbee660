"""``s3convex watch``: a live view over Convex subscriptions (the PyPI ``convex`` client).

The command runs as a real process (stdout a pipe: JSON lines; a pseudo-terminal for the table)
against the local Convex server, fed by the daemon in drain mode (moto or LocalStack) or by
``assets:applyEvents`` directly. Every wait is on a condition with a timeout; where a test says
something did *not* arrive, a later line pushed by the same server is its barrier.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr
from rich.console import Console

from convex_local.launcher import DevToken, LocalConvex, start_local_convex
from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.convex_live import LiveCredentials, LiveSubscription
from s3convex.consumer.ops.watch import render
from s3convex.consumer.ops.watcher import (
    Feed,
    StopRule,
    Target,
    Watcher,
    WatchState,
    asset_line,
    upload_progress,
)
from s3convex.core.errors import ConvexFunctionError, ConvexUnavailable, PermanentError
from s3convex.core.retrying import RetryBudget
from tests.backends import free_port
from tests.ops_support import run_cli_on_a_terminal
from tests.stack import ROOT, Stack

WAIT = 60.0  # seconds per awaited line: generous for 2 shared cores
Line = dict[str, Any]


# --- the command as a process --------------------------------------------------------------------

class WatchProcess:
    """``s3convex watch ARGS`` with stdout a pipe; its JSON lines collected as they come."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, "-m", "s3convex", "watch", *args], cwd=ROOT, env=dict(env),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[Line] = []
        self.raw: list[str] = []
        self.stderr = ""
        self._out = threading.Thread(target=self._read, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.raw.append(raw)
            self.lines.append(json.loads(raw))

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    async def until(self, predicate: Callable[[Line], bool], what: str,
                    timeout: float = WAIT) -> Line:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if predicate(line):
                    return line
            seen = len(self.lines)
            if self.process.poll() is not None:
                self._out.join(5)
                if any(predicate(line) for line in self.lines[seen:]):
                    return next(line for line in self.lines[seen:] if predicate(line))
            assert self.process.poll() is None, (
                f"watch exited ({self.process.returncode}) before {what}: {self.lines} {self.stderr}")
            assert time.monotonic() < deadline, f"no {what} within {timeout} s: {self.lines}"
            await asyncio.sleep(0.02)

    async def wait(self, timeout: float = WAIT) -> int:
        code = await asyncio.to_thread(self.process.wait, timeout)
        self._out.join(5)
        self._err.join(5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def assets(self, key: str | None = None) -> list[Line]:
        return [line for line in self.lines
                if line["type"] == "asset" and (key is None or line["key"] == key)]

    @property
    def output(self) -> str:
        return "".join(self.raw) + self.stderr


@pytest.fixture
def watches():
    started: list[WatchProcess] = []

    def start(env: Mapping[str, str], *args: str) -> WatchProcess:
        watch = WatchProcess(env, *args)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        watch.stop()


def run_watch(env: Mapping[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3convex", "watch", *args], cwd=ROOT, env=dict(env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def convex_env(server: LocalConvex, **extra: str) -> dict[str, str]:
    """This process's environment with the deployment (and its deploy key), nothing of AWS."""
    return {**os.environ, "CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.admin_key, **extra}


def is_(kind: str, **fields: Any) -> Callable[[Line], bool]:
    return lambda line: line["type"] == kind and all(line.get(k) == v for k, v in fields.items())


def new_session(name: str) -> str:
    return f"watch-{name}-{uuid.uuid4().hex[:8]}"


def key_of(session: str, file: str, scene: str = "intro") -> str:
    return f"sessions/{session}/scenes/{scene}/v1/{file}"


_clock = [1_900_000_000_000]


async def apply(convex: ConvexClient, bucket: str, key: str, session: str, *,
                removed: bool = False) -> None:
    """One S3 event straight into ``assets:applyEvents``, as the daemon sends it."""
    _clock[0] += 1000
    event: dict[str, Any] = {
        "type": "removed" if removed else "created", "bucket": bucket, "key": key,
        "eventName": "ObjectRemoved:Delete" if removed else "ObjectCreated:Put",
        "eventTime": _clock[0], "sessionId": session, "sceneId": "intro", "version": 1,
        "kind": "video"}
    if not removed:
        event.update(size=5, contentType="video/mp4")
    await convex.mutation("assets:applyEvents", {"events": [event]})


# --- through the daemon: uploads, a delete -------------------------------------------------------

async def test_watch_shows_each_upload_as_it_arrives_then_the_delete(stack: Stack, watches) -> None:
    session = new_session("uploads")
    keys = [key_of(session, name) for name in ("video.mp4", "source.py", "meta.json")]
    watch = watches({**os.environ, **stack.env}, "--session", session,
                    "--until-status", "deleted", "--count", "1", "--exit-after", "180s")
    synced = await watch.until(is_("synced"), "the (empty) current state")
    assert synced["assets"] == 0 and synced["more"] is False and synced["bound"] == 1000

    for key in keys:  # one at a time: the order of arrival is the order of the uploads
        stack.put(key, key.encode(), ContentType="application/octet-stream")
        assert await stack.wait_for_depth(1) >= 1
        assert await stack.drain() == 0
        await watch.until(is_("asset", key=key, status="available"), f"{key} available")
    assert [line["key"] for line in watch.assets()] == keys  # each once, in order of arrival

    stack.s3.delete_object(Bucket=stack.bucket, Key=keys[1])
    assert await stack.wait_for_depth(1) >= 1
    assert await stack.drain() == 0
    deleted = await watch.until(is_("asset", key=keys[1], status="deleted"), "the delete")
    assert await watch.wait() == 0, watch.stderr  # --until-status deleted --count 1

    assert deleted["revision"] == 2 and isinstance(deleted["revision"], int)
    assert isinstance(deleted["deletedAt"], int) and deleted["sessionId"] == session
    first = watch.assets(keys[0])[0]
    assert first["size"] == len(keys[0]) and isinstance(first["size"], int)
    assert first["kind"] == "video" and first["sceneId"] == "intro" and first["version"] == 1
    assert first["bucket"] == stack.bucket and first["revision"] == 1
    assert '"revision": 1,' in "".join(watch.raw) and ".0," not in "".join(watch.raw)
    # The summary is another subscription (sessions:get): it may come a moment after the assets.
    summaries = [line["summary"] for line in watch.lines if line["type"] == "session"]
    assert (summaries[0]["available"], summaries[0]["deleted"]) == (1, 0)
    assert any((s["available"], s["deleted"]) == (3, 0) for s in summaries), summaries
    assert all(isinstance(s["bytes"], int) for s in summaries)
    # The lines never carry a URL (presigned ones are credentials), nor the deploy key.
    assert all("url" not in line for line in watch.assets())
    assert "X-Amz-Signature" not in watch.output and "X-Amz-Credential" not in watch.output
    assert stack.env["CONVEX_DEPLOY_KEY"] not in watch.output


async def test_watch_one_key_until_it_is_available(stack: Stack, watches) -> None:
    key = key_of(new_session("key"), "video.mp4")
    watch = watches({**os.environ, **stack.env}, "--key", f"{stack.bucket}/{key}",
                    "--until-status", "available", "--exit-after", "120s")
    synced = await watch.until(is_("synced"), "the current state: no record yet")
    assert synced["assets"] == 0 and synced["bound"] is None
    stack.put(key, b"frames", ContentType="video/mp4")
    assert await stack.wait_for_depth(1) >= 1
    assert await stack.drain() == 0
    assert await watch.wait() == 0, watch.stderr
    [line] = watch.assets()
    assert (line["key"], line["status"], line["size"], line["contentType"]) == (
        key, "available", 6, "video/mp4")
    assert "urlExpiresAt" in line and "url" not in line  # presigned: when it expires, not the URL


# --- the server restarts mid-watch -----------------------------------------------------------

async def test_watch_reconnects_after_the_server_restarts_and_shows_what_changed(
        tmp_path: Path, watches) -> None:
    port, state = free_port(), tmp_path / "convex-state.json"
    admin_key = "watch-restart-" + uuid.uuid4().hex
    extra = {"CONVEX_LOCAL_SAVE_DEBOUNCE_MS": "10"}
    server = start_local_convex(admin_key, port=port, state_file=state, extra_env=extra)
    session, bucket = new_session("restart"), "watch-bucket"
    kept, removed, added = (key_of(session, f"{n}.mp4") for n in ("kept", "removed", "added"))
    try:
        async with ConvexClient(server.url, SecretStr(admin_key)) as convex:
            await apply(convex, bucket, kept, session)
            await apply(convex, bucket, removed, session)
        watch = watches(convex_env(server), "--session", session, "--probe-every", "0.5s",
                        "--exit-after", "180s")
        await watch.until(is_("synced"), "the current state")
        assert sorted(line["key"] for line in watch.assets()) == sorted([kept, removed])

        server.stop()
        assert server.process.returncode == 0, "".join(server.stderr_tail)
        down = await watch.until(is_("connection", state="down"), "the outage")
        assert down["error"].startswith("sessions:get: ConnectError")

        server = start_local_convex(admin_key, port=port, state_file=state, extra_env=extra)
        async with ConvexClient(server.url, SecretStr(admin_key)) as convex:
            await apply(convex, bucket, removed, session, removed=True)
            await apply(convex, bucket, added, session)
        await watch.until(is_("asset", key=added, status="available"), "the asset added after")
        await watch.until(is_("asset", key=removed, status="deleted"), "the delete after")
        await watch.until(is_("connection", state="live"), "the connection back")
        # What did not change is not shown again: one line for `kept`, from the first snapshot.
        assert [line["revision"] for line in watch.assets(kept)] == [1]
        assert [line["status"] for line in watch.assets(removed)] == ["available", "deleted"]
        # The WebSocket client reconnected by itself: the watcher never had to subscribe again
        # (were it to end or fail the subscription instead, the watcher would, and say 2 here).
        # A second `synced` comes when the values it sent again arrived before the probe saw
        # the server back.
        subscriptions = {line["subscriptions"] for line in watch.lines if line["type"] == "synced"}
        assert subscriptions == {1}, watch.lines
    finally:
        server.stop()


async def test_a_subscription_that_ends_is_opened_again_and_shows_only_what_changed(
        convex: ConvexClient, convex_server: LocalConvex, watches) -> None:
    """The WebSocket client runs in a worker process; killed, its subscriptions end: the
    watcher checks over HTTP, subscribes again and prints only what changed meanwhile."""
    session, bucket = new_session("worker"), "watch-bucket"
    before, after = key_of(session, "before.mp4"), key_of(session, "after.mp4")
    await apply(convex, bucket, before, session)
    watch = watches(convex_env(convex_server), "--session", session, "--exit-after", "120s",
                    "--until-status", "available", "--count", "2")
    await watch.until(is_("synced", subscriptions=1), "the current state")
    pid = watch.process.pid
    workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()  # Linux
    assert len(workers) == 1
    assert "s3convex.adapters.convex_live" in Path(f"/proc/{workers[0]}/cmdline").read_text()
    os.kill(int(workers[0]), signal.SIGKILL)
    down = await watch.until(is_("connection", state="down"), "the lost subscription")
    assert "the WebSocket worker exited (-9)" in down["error"]
    await watch.until(is_("synced", subscriptions=2), "the state, subscribed again")
    await apply(convex, bucket, after, session)
    assert await watch.wait() == 0, watch.stderr
    assert [line["key"] for line in watch.assets()] == [before, after]  # `before` once only


# --- as an end user --------------------------------------------------------------------------

async def test_watch_as_the_sessions_owner_with_a_token(
        convex: ConvexClient, convex_server: LocalConvex, mint_token: Callable[..., DevToken],
        bad_token: Callable[..., DevToken], watches) -> None:
    session, bucket = new_session("token"), "watch-bucket"
    alice = mint_token(f"alice-{session}")
    await convex.mutation("access:setOwner", {"sessionId": session, "ownerId": alice.principal,
                                              "actor": "test"})
    first = key_of(session, "first.mp4")
    await apply(convex, bucket, first, session)
    # An end user has no deploy key: only the deployment's URL, and the token.
    user_env = {k: v for k, v in os.environ.items() if k != "CONVEX_DEPLOY_KEY"}
    user_env.update(CONVEX_URL=convex_server.url, S3CONVEX_TOKEN=str(alice))

    watch = watches(user_env, "--session", session, "--exit-after", "120s",
                    "--until-status", "deleted")
    synced = await watch.until(is_("synced"), "the owner's current state")
    assert synced["bound"] == 100
    [shown] = watch.assets()
    assert (shown["key"], shown["status"], shown["size"]) == (first, "available", 5)
    assert "bucket" not in shown  # the public shape: no bucket, no raw error text
    second = key_of(session, "second.mp4")
    await apply(convex, bucket, second, session)
    await watch.until(is_("asset", key=second, status="available"), "a later asset")

    one = watches(user_env, "--asset-id", shown["assetId"], "--until-status", "deleted",
                  "--exit-after", "120s")
    await one.until(is_("synced"), "the one asset")
    await apply(convex, bucket, first, session, removed=True)
    assert await watch.wait() == 0, watch.stderr
    assert await one.wait() == 0, one.stderr  # assets:view answers `gone`: shown as deleted
    assert [line["status"] for line in one.assets()] == ["available", "deleted"]
    assert str(alice) not in watch.output + one.output

    bob = mint_token(f"bob-{session}")
    refused = await asyncio.to_thread(run_watch, {**user_env, "S3CONVEX_TOKEN": str(bob)},
                                      "--session", session)
    assert refused.returncode == 1, refused
    assert refused.stderr.startswith("s3convex: error: sessions:live: forbidden")
    assert "Traceback" not in refused.stderr and refused.stdout == ""

    expired = bad_token("expired", f"alice-{session}")
    answer = await asyncio.to_thread(run_watch, user_env, "--session", session, "--token",
                                     str(expired))
    assert answer.returncode == 1, answer
    assert "sessions:live: InvalidAuthHeader (HTTP 401)" in answer.stderr
    assert str(expired) not in answer.stderr + answer.stdout


async def test_a_token_that_expires_mid_watch_ends_it_with_the_servers_answer(
        convex: ConvexClient, convex_server: LocalConvex, mint_token: Callable[..., DevToken],
        watches) -> None:
    """The server closes the socket of an expired token and the WebSocket client reconnects
    with it again, silently; the probe's HTTP query hears the refusal."""
    session = new_session("expiry")
    short = mint_token(f"carol-{session}", ttl_seconds=2)  # refused 2 s + 5 s leeway from now
    await convex.mutation("access:setOwner", {"sessionId": session, "ownerId": short.principal,
                                              "actor": "test"})
    env = {k: v for k, v in os.environ.items() if k != "CONVEX_DEPLOY_KEY"}
    env.update(CONVEX_URL=convex_server.url, S3CONVEX_TOKEN=str(short))
    watch = watches(env, "--session", session, "--probe-every", "0.5s", "--exit-after", "120s")
    await watch.until(is_("synced"), "the current state")
    assert await watch.wait() == 1
    assert "s3convex: error: sessions:live: InvalidAuthHeader (HTTP 401)" in watch.stderr
    assert str(short) not in watch.output and "Traceback" not in watch.stderr


# --- exits -------------------------------------------------------------------------------------

async def test_bad_usage_and_settings_exit_2_and_a_refused_key_exits_1(
        convex_server: LocalConvex) -> None:
    env = convex_env(convex_server)
    for args, says in [
        ((), "exactly one of --session, --key or --asset-id"),
        (("--session", "s", "--key", "b/k"), "exactly one of"),
        (("--session", "s", "--until-status", "done"), "--until-status must be one of"),
        (("--session", "s", "--count", "2"), "--count goes with --until-status"),
        (("--key", "b/k", "--token", "t"), "--key needs the deploy key"),
        (("--asset-id", "x"), "give --token too"),
        (("--session", "s", "--exit-after", "soon"), "is not a duration"),
        (("--key", "just-a-bucket",), "BUCKET/KEY"),
    ]:
        done = await asyncio.to_thread(run_watch, env, *args)
        assert done.returncode == 2, (args, done)
        assert says in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)

    unset = {k: v for k, v in env.items() if k != "CONVEX_URL"}
    done = await asyncio.to_thread(run_watch, unset, "--session", "s")
    assert done.returncode == 2 and done.stderr.startswith("s3convex: configuration error:")
    assert "CONVEX_URL" in done.stderr

    wrong = "wrong-key-" + uuid.uuid4().hex
    done = await asyncio.to_thread(run_watch, {**env, "CONVEX_DEPLOY_KEY": wrong}, "--session", "s")
    assert done.returncode == 1, done
    assert done.stderr.startswith("s3convex: error: sessions:get: BadAdminKey (HTTP 401)")
    assert wrong not in done.stderr + done.stdout and "Traceback" not in done.stderr


async def test_ctrl_c_exits_130_and_exit_after_exits_1_when_the_status_was_not_reached(
        convex_server: LocalConvex, watches) -> None:
    session = new_session("exits")
    watch = watches(convex_env(convex_server), "--session", session)
    await watch.until(is_("synced"), "the current state")
    watch.process.send_signal(signal.SIGINT)
    assert await watch.wait() == 130
    assert "Traceback" not in watch.stderr and "panicked" not in watch.stderr, watch.stderr

    started = time.monotonic()
    done = await asyncio.to_thread(run_watch, convex_env(convex_server), "--session", session,
                                   "--until-status", "available", "--count", "2",
                                   "--exit-after", "2s")
    assert done.returncode == 1, done
    assert f"watch session {session}: 0 of 2 asset(s) available after 2 s" in done.stderr
    assert [json.loads(line)["type"] for line in done.stdout.splitlines()] == ["synced"]
    assert time.monotonic() - started < 30


async def test_on_a_terminal_a_table_of_the_sessions_assets(
        convex: ConvexClient, convex_server: LocalConvex) -> None:
    session = new_session("tty")
    key = key_of(session, "video.mp4")
    await apply(convex, "watch-bucket", key, session)
    shown = await run_cli_on_a_terminal(
        SimpleNamespace(env=convex_env(convex_server)),  # the helper reads only .env
        "watch", "--session", session, "--exit-after", "3s")
    assert shown.code == 0, shown.stderr
    assert key in shown.stdout and "available" in shown.stdout
    assert f"session {session}" in shown.stdout and "1 available" in shown.stdout
    assert "● live" in shown.stdout and '"type"' not in shown.stdout


# --- the watcher's rules, without servers --------------------------------------------------------

def test_asset_lines_are_plain_whole_numbers_without_urls_and_redacted() -> None:
    record = {"_id": "a1", "bucket": "b", "key": "k", "status": "failed", "revision": 3.0,
              "size": 5.0, "eventTime": 1.0, "updatedAt": 2.0, "url": "https://x/k?X-Amz-Signature=abc",
              "urlExpiresAt": 9.0, "error": "GET https://x/k?X-Amz-Signature=abc&X-Amz-Credential=AKIA: 403",
              "upload": {"status": "uploading", "attempt": 1.0, "bytesSent": 50.0, "bytesTotal": 200.0,
                         "runId": "r", "digest": "d"}}
    line = asset_line(record)
    assert line["assetId"] == "a1" and line["revision"] == 3 and isinstance(line["size"], int)
    assert "url" not in line and "abc" not in json.dumps(line) and "AKIA" not in json.dumps(line)
    assert line["upload"] == {"status": "uploading", "attempt": 1, "bytesSent": 50, "bytesTotal": 200}
    assert upload_progress({**line, "status": "uploading"}) == (50.0, 200.0)
    assert upload_progress({**line, "upload": {"status": "available", "bytesSent": 1}}) is None
    assert upload_progress({"status": "uploading"}) is None  # no report: a status, no bar


def test_the_view_shows_a_bar_for_an_upload_that_reports_its_bytes() -> None:
    state = WatchState(Target.session("s1", as_user=False, max_assets=2))
    state.apply(Feed("assets", "assets:listBySession", {}), {"isDone": False, "page": [
        {"_id": "1", "key": "big.mp4", "status": "uploading", "revision": 0, "updatedAt": 2.0,
         "upload": {"status": "uploading", "attempt": 1, "bytesSent": 3 * 2**20,
                    "bytesTotal": 12 * 2**20}},
        {"_id": "2", "key": "small.py", "status": "available", "revision": 1, "size": 7.0,
         "updatedAt": 1.0}]})
    state.apply(Feed("session", "sessions:get", {}), {"summary": {
        "available": 1, "deleted": 0, "failed": 0, "uploading": 1, "bytes": 7.0, "byKind": {},
        "scenes": 1, "filesDone": 1, "filesTotal": 2, "bytesDone": 7.0, "bytesTotal": 12582919}})
    state.connection = "live"
    out = Console(record=True, width=160, color_system=None)
    out.print(render(state))
    text = out.export_text()
    assert "25% of 12.0 MiB" in text and "━━━" in text  # the bar, and its figures
    assert "1 available · 1 uploading" in text and "uploads: 1 of 2 files" in text
    assert "showing the first 2: more exist" in text and "● live" in text
    assert text.index("big.mp4") < text.index("small.py")  # the newest change first


async def test_what_the_worker_says_maps_into_our_errors_without_the_secret() -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.secret-token"
    sub = LiveSubscription("sessions:live", LiveCredentials.token(SecretStr(secret)).scrub,
                           lambda: None)
    sub.deliver({"value": {"n": 1.0, "big": {"$integer": 2**60}, "raw": {"$bytes": "aGk="}}})
    sub.deliver({"error": "convex", "message": "[Request ID: 1a2b] Server Error\nUncaught "
                 "ConvexError: {\"code\":\"forbidden\"}\n    at fail (../convex/model/public.ts:37:9)",
                 "data": {"code": "forbidden"}})
    sub.deliver({"error": "failed", "message": f"[Request ID: 3c] Server Error\nbad token {secret}"})
    sub.deliver({"error": "ended", "message": "the WebSocket worker exited (-9)"})
    assert await sub.next() == {"n": 1.0, "big": 2**60, "raw": b"hi"}
    with pytest.raises(ConvexFunctionError) as convex_error:
        await sub.next()
    assert convex_error.value.code == "forbidden" and convex_error.value.error_data == {"code": "forbidden"}
    assert str(convex_error.value) == 'sessions:live: forbidden: Uncaught ConvexError: {"code":"forbidden"}'
    with pytest.raises(ConvexFunctionError, match=r"bad token REDACTED$"):
        await sub.next()
    with pytest.raises(ConvexUnavailable, match=r"sessions:live: the WebSocket worker exited \(-9\)"):
        await sub.next()


def test_changes_come_in_order_of_arrival_and_only_once() -> None:
    state = WatchState(Target.key("b", "k"))
    page = Feed("assets", "assets:listBySession", {})
    rows = [{"_id": i, "key": k, "status": "available", "revision": 1, "updatedAt": t, "eventTime": e}
            for i, k, t, e in [("1", "late", 20, 1), ("2", "early", 10, 5), ("3", "tie-b", 30, 2),
                               ("4", "tie-a", 30, 2)]]
    assert state.apply(page, {"page": rows, "isDone": True})
    assert [line["key"] for line in state.changes()] == ["early", "late", "tie-a", "tie-b"]
    assert state.changes() == []
    rows[0] = {**rows[0], "status": "deleted", "revision": 2, "updatedAt": 40}
    state.apply(page, {"page": rows[:3], "isDone": False})
    lines = state.changes()
    assert [(line["type"], line["key"]) for line in lines] == [("asset", "late"), ("unlisted", "tie-a")]
    assert state.more and state.count("available") == 2
    assert not state.apply(page, {"page": [], "isDone": False, "pageStatus": "SplitRequired"})


class FakeSubscription:
    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.closed = False

    async def next(self) -> Any:
        if not self.script:
            await asyncio.Event().wait()  # no more values: wait like a quiet subscription
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


class FakeLive:
    """Subscriptions that deliver scripted values; checks that answer as scripted."""

    def __init__(self, generations: list[list[Any]], checks: list[Exception | None]) -> None:
        self.generations = generations
        self.checks = checks
        self.subscribed = 0
        self.resets = 0

    async def check(self, path: str, args: Mapping[str, Any]) -> Any:
        answer = self.checks.pop(0) if self.checks else None
        if answer is not None:
            raise answer
        return None

    async def subscribe(self, path: str, args: Mapping[str, Any]) -> FakeSubscription:
        self.subscribed += 1
        return FakeSubscription(self.generations.pop(0))

    async def reset(self) -> None:
        self.resets += 1


class Collect:
    def __init__(self) -> None:
        self.lines: list[Line] = []

    def update(self, state: WatchState, lines: list[Line]) -> None:
        self.lines.extend(lines)


def _record(key: str, status: str, revision: int) -> dict[str, Any]:
    return {"_id": key, "key": key, "status": status, "revision": revision, "updatedAt": revision}


FAST = RetryBudget(attempts=None, seconds=5, base=0.001, cap=0.01)


async def test_a_subscription_that_fails_is_opened_again_and_shows_only_what_changed() -> None:
    a, b = _record("a", "available", 1), _record("b", "available", 1)
    live = FakeLive(
        generations=[[a, ConvexFunctionError("assets:getByKey", "socket trouble")],
                     [b, {**b, "status": "deleted", "revision": 2}]],
        checks=[None, ConvexUnavailable("down", operation="assets:getByKey"), None])
    sink = Collect()
    watcher = Watcher(live, Target.key("bucket", "k"), sink, StopRule(until=("deleted", 1)),
                      probe_every=0, start_budget=FAST, resubscribe_budget=FAST)
    await asyncio.wait_for(watcher.run(), 10)
    assert live.subscribed == 2 and live.resets == 2
    kinds = [(line["type"], line.get("key"), line.get("status")) for line in sink.lines]
    assert kinds == [
        ("asset", "a", "available"), ("synced", None, None),
        ("connection", None, None),  # the subscription failed: unreachable until it is back
        ("asset", "b", "available"), ("unlisted", "a", None), ("connection", None, None),
        ("synced", None, None), ("asset", "b", "deleted")]
    assert [line["state"] for line in sink.lines if line["type"] == "connection"] == ["down", "live"]
    assert sink.lines[1]["subscriptions"] == 1 and sink.lines[6]["subscriptions"] == 2


async def test_a_refusal_ends_the_watch_and_an_outage_at_start_is_waited_for() -> None:
    feed_error = ConvexFunctionError("sessions:live", "forbidden", {"code": "forbidden"})
    live = FakeLive(generations=[], checks=[ConvexUnavailable("down"), feed_error])
    with pytest.raises(ConvexFunctionError) as raised:
        await Watcher(live, Target.session("s", as_user=True, max_assets=1), Collect(),
                      StopRule(), start_budget=FAST).run()
    assert raised.value is feed_error and live.subscribed == 0

    live = FakeLive(generations=[], checks=[ConvexUnavailable("down")] * 100)
    budget = RetryBudget(attempts=3, base=0.001, cap=0.01)
    with pytest.raises(ConvexUnavailable):
        await Watcher(live, Target.key("b", "k"), Collect(), StopRule(), start_budget=budget).run()

    live = FakeLive(generations=[[None]], checks=[None, PermanentError("token expired")])
    sink = Collect()
    with pytest.raises(PermanentError, match="token expired"):  # the probe's refusal
        await asyncio.wait_for(Watcher(live, Target.key("b", "k"), sink, StopRule(),
                                       probe_every=0.01).run(), 10)
    assert [line["type"] for line in sink.lines] == ["synced"]
