"""The real-time path end to end, through Convex's own clients.

S3 (moto or LocalStack) → SQS → the daemon (drain mode, or ``s3convex run`` as a process) →
the local Convex server → a subscribed client. Every test runs twice, once per client:

- ``python``: PyPI ``convex`` (``ConvexClient.subscribe``, async iteration: the client holds
  the GIL while it blocks, its async iterator does not);
- ``browser``: ``convex/browser``'s ``ConvexClient`` on Node over ``ws``
  (``tests/realtime/subscribe.ts``, one JSON line per update on its stdout).

Users are dev JWTs (``mint_token``) the server verifies against ``convex/auth.config.ts``;
owners and grants are set through the internal ``access:*`` functions with the admin key,
naming the token's principal (``tokenIdentifier`` = ``<iss>|<sub>``).

Every wait is on a condition with a timeout. Where a test asserts that something did *not*
arrive, it first waits for a later event that the same server pushed after it (a barrier).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

import convex
from convex_local.launcher import BAD_TOKEN_KINDS, DevToken, LocalConvex
from s3convex.adapters.convex import ConvexClient as AdminClient
from tests.backends import free_port
from tests.stack import ROOT, Stack

pytestmark = pytest.mark.e2e

TSX = ROOT / "node_modules" / ".bin" / "tsx"
SUBSCRIBER = ROOT / "tests" / "realtime" / "subscribe.ts"
WAIT = 30.0  # seconds: generous for 2 shared cores; a pass takes well under a second per step
PAGE = {"numItems": 20, "cursor": None}

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


# --- subscribers -----------------------------------------------------------------------------

class Watch:
    """One subscription through one client kind; ``events`` in arrival order."""

    kind = "?"

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def until(self, predicate: Predicate, what: str, timeout: float = WAIT) -> Event:
        """The first event (from the start) that matches; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for event in list(self.events):
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.kind}: no {what} within {timeout} s; got {self.events!r}")
            await asyncio.sleep(0.02)

    def updates(self) -> list[Any]:
        return [e["value"] for e in self.events if e["event"] == "update"]

    def errors(self) -> list[Any]:
        return [e["data"] for e in self.events if e["event"] == "error"]

    def close(self) -> None:
        raise NotImplementedError


class PythonWatch(Watch):
    """PyPI ``convex``: one ``ConvexClient`` (one WebSocket) iterated asynchronously."""

    kind = "python"

    def __init__(self, url: str, query: str, args: dict[str, Any], token: str | None) -> None:
        super().__init__()
        self.client = convex.ConvexClient(url)
        if token is not None:
            self.client.set_auth(token)
        self.subscription = self.client.subscribe(query, args)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                value = await self.subscription.__anext__()
            except convex.ConvexError as error:
                self.events.append({"event": "error", "data": error.data, "t": time.time() * 1e3})
            except Exception as error:  # the stream itself ended: record it, stop
                self.events.append({"event": "failed", "message": repr(error)})
                return
            else:
                self.events.append({"event": "update", "value": value, "t": time.time() * 1e3})

    def close(self) -> None:
        # Unsubscribe before cancelling: a cancelled ``anext`` drops the inner subscription,
        # and ``QuerySubscription.unsubscribe`` would then subscribe again to unsubscribe.
        if not self.subscription.invalidated and self.subscription.inner.exists():
            self.subscription.inner.unsubscribe()
            self.subscription.invalidated = True
        self.task.cancel()


class BrowserWatch(Watch):
    """``convex/browser`` ConvexClient in a Node process (``tests/realtime/subscribe.ts``)."""

    kind = "browser"

    def __init__(self, url: str, query: str, args: dict[str, Any], token: str | None,
                 paginated: dict[str, int] | None, stderr: Path) -> None:
        super().__init__()
        config = {"url": url, "query": query, "args": args, "token": token,
                  **({"paginated": paginated} if paginated else {})}
        self.stderr = stderr.open("a")
        self.process = subprocess.Popen(
            [str(TSX), str(SUBSCRIBER), json.dumps(config)], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # end of stdin: close the clients, exit 0
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.reader.join(5)
        self.stderr.close()


WatchFactory = Callable[..., Watch]


@pytest.fixture(params=["python", "browser"])
async def subscribe(request: pytest.FixtureRequest, convex_server: LocalConvex,
                    tmp_path: Path) -> AsyncIterator[WatchFactory]:
    """``subscribe(query, args, token=None, url=None, paginated=None)`` → a :class:`Watch`
    with the client this test runs with; ``paginated={"initialNumItems": n}`` uses the browser
    client's paginated subscription (the Python client has none: it subscribes to the first
    page, as ``useQuery`` with ``paginationOpts`` does)."""
    watches: list[Watch] = []

    def make(query: str, args: dict[str, Any], token: str | None = None, url: str | None = None,
             paginated: dict[str, int] | None = None) -> Watch:
        target = url or convex_server.url
        watch: Watch
        if request.param == "python":
            if paginated is not None:
                args = {**args, "paginationOpts": {"numItems": paginated["initialNumItems"],
                                                   "cursor": None}}
            watch = PythonWatch(target, query, args, token)
        else:
            watch = BrowserWatch(target, query, args, token, paginated,
                                 tmp_path / "subscriber.stderr")
        watches.append(watch)
        return watch

    yield make
    for watch in watches:
        watch.close()


# --- helpers ---------------------------------------------------------------------------------

def session_of(stack: Stack, name: str = "s") -> str:
    return f"{stack.resources.prefix}-{name}"


def key_of(session: str, name: str, scene: str = "intro", version: int = 1) -> str:
    return f"sessions/{session}/scenes/{scene}/v{version}/{name}"


def user(stack: Stack, name: str) -> str:
    """A subject no other test (or xdist worker) uses on the shared server."""
    return f"{name}-{stack.resources.prefix}"


def live_args(session: str) -> dict[str, Any]:
    return {"sessionId": session, "paginationOpts": PAGE}


def items_of(value: Any) -> list[dict[str, Any]]:
    """The items of a page: ``page`` of a query's result, ``results`` of a paginated one."""
    return value.get("page", value.get("results", [])) if isinstance(value, dict) else []


def keys_in(value: Any) -> list[str]:
    """The asset keys of a ``sessions:live`` result (or a paginated page), in order."""
    return [item["key"] for item in items_of(value)]


def has_available(key: str) -> Predicate:
    return lambda event: event["event"] == "update" and any(
        item["key"] == key and item["status"] == "available" for item in items_of(event["value"]))


def lists_sessions(*sessions: str) -> Predicate:
    return lambda event: event["event"] == "update" and [
        item["sessionId"] for item in items_of(event["value"])] == list(sessions)


def connected_again(events: list[Event]) -> bool:
    """The browser client's connection went up, down and up again."""
    states = [e["connected"] for e in events if e["event"] == "connection"]
    try:
        first_up = states.index(True)
        down = states.index(False, first_up)
        states.index(True, down)
    except ValueError:
        return False
    return True


def is_update(event: Event) -> bool:
    return event["event"] == "update"


def error_is(data: dict[str, Any]) -> Predicate:
    return lambda event: event["event"] == "error" and event["data"] == data


FORBIDDEN = {"code": "forbidden"}
UNAUTHENTICATED = {"code": "forbidden", "reason": "unauthenticated"}


async def upload(stack: Stack, *keys: str, convex_server: LocalConvex | None = None) -> None:
    """Put the objects and let the daemon (drain mode) carry their events to Convex."""
    for key in keys:
        stack.put(key, key.encode(), ContentType="video/mp4")
    await stack.wait_for_depth(len(keys))
    if convex_server is None:
        assert await stack.drain() == 0
    else:
        assert await stack.drain(convex_url=convex_server.url,
                                 convex_deploy_key=convex_server.admin_key) == 0


async def set_owner(admin: AdminClient, session: str, token: DevToken) -> None:
    await admin.mutation("access:setOwner",
                         {"sessionId": session, "ownerId": token.principal, "actor": "test"})


@contextlib.contextmanager
def running_daemon(stack: Stack, log_path: Path, **env: str) -> Iterator[subprocess.Popen[str]]:
    """``s3convex run`` as a process for the block; SIGTERM and a clean exit afterwards."""
    daemon = stack.spawn(log_path=log_path, extra_env=env or None)
    try:
        yield daemon
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            assert daemon.wait(30) == 0, log_path.read_text()[-3000:]
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
            raise


# --- tests -----------------------------------------------------------------------------------

async def test_owner_receives_the_available_update_of_an_upload(
        stack: Stack, subscribe: WatchFactory, mint_token: Callable[..., DevToken],
        tmp_path: Path) -> None:
    session = session_of(stack)
    alice = mint_token(user(stack, "alice"))
    await set_owner(stack.convex, session, alice)
    live = subscribe("sessions:live", live_args(session), token=alice)

    first = await live.until(is_update, "the first result")
    assert first["value"]["role"] == "owner"
    assert first["value"]["session"]["sessionId"] == session
    assert keys_in(first["value"]) == []

    key = key_of(session, "take one.mp4")
    with running_daemon(stack, tmp_path / "daemon.log"):
        stack.put(key, b"0123456789", ContentType="video/mp4")
        event = await live.until(has_available(key), "the upload's available update")

    value = event["value"]
    asset, = value["page"]
    assert {k: asset[k] for k in ("key", "kind", "sceneId", "version", "status", "size",
                                  "contentType")} == {
        "key": key, "kind": "video", "sceneId": "intro", "version": 1, "status": "available",
        "size": 10, "contentType": "video/mp4"}
    assert "error" not in asset or asset["error"] is None
    assert value["scenes"][0]["sceneId"] == "intro" and value["scenes"][0]["currentVersion"] == 1
    assert "ownerId" not in json.dumps(value) and alice.principal not in json.dumps(value)
    assert live.errors() == []


async def test_a_stranger_gets_forbidden_and_no_data_and_anonymous_gets_nothing(
        stack: Stack, subscribe: WatchFactory, mint_token: Callable[..., DevToken]) -> None:
    session = session_of(stack)
    alice, bob = mint_token(user(stack, "alice")), mint_token(user(stack, "bob"))
    await set_owner(stack.convex, session, alice)
    first = key_of(session, "a.mp4")
    await upload(stack, first)

    owner = subscribe("sessions:live", live_args(session), token=alice)
    stranger = subscribe("sessions:live", live_args(session), token=bob)
    anonymous = subscribe("sessions:live", live_args(session))
    anonymous_list = subscribe("sessions:mine", {"paginationOpts": PAGE})
    await owner.until(has_available(first), "the owner's data")
    await stranger.until(error_is(FORBIDDEN), "forbidden")
    await anonymous.until(error_is(UNAUTHENTICATED), "forbidden (unauthenticated)")
    empty = await anonymous_list.until(is_update, "the anonymous list")
    assert empty["value"]["page"] == [] and empty["value"]["isDone"] is True

    # Barrier: a second upload reaches the owner; nothing of it reaches the others.
    second = key_of(session, "b.mp4")
    await upload(stack, second)
    await owner.until(has_available(second), "the owner's second update")
    for watch in (stranger, anonymous):
        assert watch.updates() == [], watch.events
        assert all(data in (FORBIDDEN, UNAUTHENTICATED) for data in watch.errors())
    # A non-existent session answers exactly as a forbidden one: no existence hint.
    ghost = subscribe("sessions:live", live_args(session_of(stack, "ghost")), token=bob)
    assert (await ghost.until(lambda e: e["event"] == "error", "an error"))["data"] == FORBIDDEN
    assert anonymous_list.updates() == [empty["value"]]


async def test_a_grant_shows_the_data_to_a_subscribed_stranger_and_a_revoke_takes_it_away(
        stack: Stack, subscribe: WatchFactory, mint_token: Callable[..., DevToken]) -> None:
    session = session_of(stack)
    alice, carol = mint_token(user(stack, "alice")), mint_token(user(stack, "carol"))
    await set_owner(stack.convex, session, alice)
    key = key_of(session, "clip.mp4")
    await upload(stack, key)

    carol_live = subscribe("sessions:live", live_args(session), token=carol)
    await carol_live.until(error_is(FORBIDDEN), "forbidden before the grant")

    await stack.convex.mutation("access:grant", {
        "principal": carol.principal, "scope": {"sessionId": session}, "actor": "test"})
    granted = await carol_live.until(has_available(key), "the data after the grant")
    assert granted["value"]["role"] == "grantee"
    after_grant = len(carol_live.events)

    assert await stack.convex.mutation("access:revoke", {
        "principal": carol.principal, "scope": {"sessionId": session}, "actor": "test"}) == 1
    deadline = time.monotonic() + WAIT
    while not any(e["event"] == "error" for e in carol_live.events[after_grant:]):
        assert time.monotonic() < deadline, f"no error after the revoke: {carol_live.events}"
        await asyncio.sleep(0.02)
    revoked = next(e for e in carol_live.events[after_grant:] if e["event"] == "error")
    assert revoked["data"] == FORBIDDEN
    assert carol_live.updates() == [granted["value"]]  # nothing else was ever shown


async def test_the_client_reconnects_after_a_server_restart_and_converges(
        stack: Stack, subscribe: WatchFactory, mint_token: Callable[..., DevToken],
        start_convex: Callable[..., LocalConvex], tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "convex-state.json"
    admin_key = "restart-admin-" + os.urandom(8).hex()
    options = dict(state_file=state, port=port, admin_key=admin_key,
                   env={"CONVEX_LOCAL_SAVE_DEBOUNCE_MS": "20"})
    server = start_convex(**options)
    session = session_of(stack)
    alice = mint_token(user(stack, "alice"))
    async with AdminClient(server.url, SecretStr(admin_key)) as admin:
        await set_owner(admin, session, alice)
    before = key_of(session, "before.mp4")
    await upload(stack, before, convex_server=server)

    live = subscribe("sessions:live", live_args(session), token=alice, url=server.url)
    await live.until(has_available(before), "the data before the restart")
    server.stop()
    assert server.process.returncode == 0, "".join(server.stderr_tail)

    server = start_convex(**options)
    after = key_of(session, "after.mp4")
    await upload(stack, after, convex_server=server)
    converged = await live.until(has_available(after), "the data after the restart")
    assert keys_in(converged["value"]) == [after, before]
    if live.kind == "browser":  # the browser client reports its connection: it reconnected
        assert connected_again(live.events), live.events
        last = [e for e in live.events if e["event"] == "connection"][-1]
        assert last["connected"] and last["connectionCount"] >= 2, last


async def test_a_subscribed_page_sees_inserts_in_order(
        stack: Stack, subscribe: WatchFactory, mint_token: Callable[..., DevToken],
        tmp_path: Path) -> None:
    """The React pattern: ``usePaginatedQuery`` (browser: ``onPaginatedUpdate_experimental``)
    or ``useQuery`` with the first page (python) on ``sessions:live``, and ``sessions:mine``."""
    session = session_of(stack)
    alice = mint_token(user(stack, "alice"))
    await set_owner(stack.convex, session, alice)
    page = subscribe("sessions:live", {"sessionId": session}, token=alice,
                     paginated={"initialNumItems": 3})
    await page.until(is_update, "the first (empty) page")

    uploaded: list[str] = []
    with running_daemon(stack, tmp_path / "daemon.log"):
        for n in range(5):  # more than the first page asked for: the reactive page grows
            key = key_of(session, f"take {n}.mp4", scene=f"scene-{n}")
            stack.put(key, b"x", ContentType="video/mp4")
            uploaded.append(key)
            await page.until(has_available(key), f"upload {n}")

    newest_first = list(reversed(uploaded))
    assert keys_in(page.updates()[-1]) == newest_first
    # Every update shows a prefix-closed view: the newest k uploads, newest first, no gaps.
    for value in page.updates():
        shown = keys_in(value)
        assert shown == newest_first[len(newest_first) - len(shown):], shown
    assert page.errors() == []

    mine = subscribe("sessions:mine", {}, token=alice, paginated={"initialNumItems": 10})
    await mine.until(lists_sessions(session), "my one session")
    later = session_of(stack, "later")
    await set_owner(stack.convex, later, alice)
    await mine.until(lists_sessions(later, session), "the new session first")


async def test_refused_tokens_never_see_data(
        stack: Stack, subscribe: WatchFactory, mint_token: Callable[..., DevToken],
        bad_token: Callable[..., DevToken], convex_server: LocalConvex) -> None:
    """Expired, wrong issuer, wrong audience, bad signature — each minted for the *owner's*
    subject, so a refusal is all that keeps the owner's data from it."""
    session = session_of(stack)
    owner_subject = user(stack, "alice")
    alice = mint_token(owner_subject)
    await set_owner(stack.convex, session, alice)
    first = key_of(session, "secret.mp4")
    await upload(stack, first)

    refused = {kind: subscribe("sessions:live", live_args(session),
                               token=bad_token(kind, owner_subject))
               for kind in BAD_TOKEN_KINDS}
    owner = subscribe("sessions:live", live_args(session), token=alice)
    await owner.until(has_available(first), "the owner's data")
    for kind, watch in refused.items():
        if watch.kind == "browser":
            # The browser client is told: its token is refused (after a forced refresh that
            # brings the same token), it falls back to no identity and gets `unauthenticated`.
            auth = await watch.until(lambda e: e["event"] == "auth", f"{kind}: onChange")
            assert auth["ok"] is False, kind
            await watch.until(error_is(UNAUTHENTICATED), f"{kind}: unauthenticated")

    # Barrier: the owner sees a later upload; the refused clients saw no data at all.
    second = key_of(session, "secret-2.mp4")
    await upload(stack, second)
    await owner.until(has_available(second), "the owner's second update")
    for kind, watch in refused.items():
        assert watch.updates() == [], (kind, watch.events)
        assert all(data == UNAUTHENTICATED for data in watch.errors()), (kind, watch.events)
        assert not any(e["event"] == "auth" and e["ok"] for e in watch.events), kind

    # The same tokens over HTTP: 401 with Convex's codes.
    expected = {"expired": "InvalidAuthHeader", "wrong_issuer": "NoAuthProvider",
                "wrong_audience": "NoAuthProvider", "bad_signature": "InvalidAuthHeader"}
    async with httpx.AsyncClient() as http:
        for kind in BAD_TOKEN_KINDS:
            response = await http.post(
                f"{convex_server.url}/api/query",
                json={"path": "sessions:live", "args": live_args(session), "format": "json"},
                headers={"Authorization": f"Bearer {bad_token(kind, owner_subject)}"})
            assert (response.status_code, response.json()["code"]) == (401, expected[kind]), kind


async def test_no_deploy_key_presigned_signature_or_token_in_any_log(
        stack: Stack, subscribe: WatchFactory, mint_token: Callable[..., DevToken],
        start_convex: Callable[..., LocalConvex], convex_server: LocalConvex, tmp_path: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    """The daemon's log, the Convex server's whole stderr (request log on), the subscriber's
    stderr and this process's own output, after a run that stores presigned URLs, pushes them
    to a subscriber and hands one out through ``access:requestUrl``."""
    server_log = tmp_path / "convex.stderr"
    admin_key = "log-admin-" + os.urandom(12).hex()
    server = start_convex(admin_key=admin_key, log_path=server_log,
                          env={"CONVEX_LOCAL_LOG": "1"})
    session = session_of(stack)
    alice = mint_token(user(stack, "alice"))
    async with AdminClient(server.url, SecretStr(admin_key)) as admin:
        await set_owner(admin, session, alice)
        video = key_of(session, "movie.mp4")
        scene = subscribe("sessions:sceneView", {"sessionId": session, "sceneId": "intro"},
                          token=alice, url=server.url)
        daemon_log = tmp_path / "daemon.log"
        with running_daemon(stack, daemon_log, CONVEX_URL=server.url,
                            CONVEX_DEPLOY_KEY=admin_key):
            stack.put(video, b"frames", ContentType="video/mp4")
            shown = await scene.until(
                lambda e: is_update(e) and e["value"]["files"].get("video", {}).get("urlState")
                == "ready", "the scene with its video URL")
            url = shown["value"]["files"]["video"]["url"]
            assert "X-Amz-Signature=" in url  # the secret we look for is really there
            record = await admin.query("assets:getByKey", {"bucket": stack.bucket, "key": video})
            async with httpx.AsyncClient() as http:  # the audited way, as the web app asks
                answer = (await http.post(
                    f"{server.url}/api/mutation",
                    json={"path": "access:requestUrl", "args": {"assetId": record["_id"]},
                          "format": "json"},
                    headers={"Authorization": f"Bearer {alice}"})).json()
            assert answer["status"] == "success" and answer["value"]["status"] == "ready", answer
    server.stop()

    signature = url.split("X-Amz-Signature=")[1].split("&")[0]
    subscriber_log = tmp_path / "subscriber.stderr"
    logs = {
        "daemon": daemon_log.read_text(),
        "convex server": server_log.read_text(),
        "subscriber": subscriber_log.read_text() if subscriber_log.exists() else "",
    }
    captured = capfd.readouterr()
    logs["this process"] = captured.out + captured.err
    assert video in logs["daemon"] or session in logs["daemon"] or logs["daemon"].strip(), \
        "the daemon logged nothing: the check would prove nothing"
    assert '"event":"ws_open"' in logs["convex server"].replace(" ", ""), "request log is off"
    shared_tail = "".join(convex_server.stderr_tail)  # the session's server: its last 200 lines
    assert convex_server.admin_key not in shared_tail and "X-Amz-Signature=" not in shared_tail
    for name, text in logs.items():
        assert admin_key not in text, f"deploy key in the {name} log"
        assert "X-Amz-Signature=" not in text, f"a presigned URL in the {name} log"
        assert signature not in text, f"a URL signature in the {name} log"
        assert str(alice) not in text, f"a user's JWT in the {name} log"
