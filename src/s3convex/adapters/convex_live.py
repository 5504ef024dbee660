"""Convex's WebSocket subscriptions through the PyPI ``convex`` client, for ``s3convex watch``.

The daemon's hot path keeps the HTTP client (:mod:`s3convex.adapters.convex`); what the PyPI
client is good at is ``subscribe``: a query Convex runs again, and pushes, whenever what it
read changes. This module runs it with the credentials of an operator (the deploy key) or of an
end user (a JWT) and maps what it raises into :mod:`s3convex.core.errors` — the table below,
the only mapping of this library's errors.

What the client does, as checked against the local Convex server (``tests/test_watch.py``):

- after the server goes away it reconnects by itself, with its own backoff, and delivers each
  subscribed query's value again (the same value when nothing changed meanwhile);
- ``subscribe`` waits until its socket is connected, holding the GIL: while the server is
  unreachable the whole interpreter stops — a thread does not help, and Ctrl-C is not seen;
- a pending async ``next`` that is cancelled drops its subscription, and its Rust task takes
  the GIL once more afterwards: an interpreter that is shutting down by then aborts
  (``PyGILState_Release``, exit -6). Dropping the client under a pending ``next`` panics;
- a deploy key or token the server refuses is never reported: the client reconnects with it
  again and again, and the subscription stays silent.

So the client runs in a **worker process** of its own (``python -m
s3convex.adapters.convex_live``, started by :class:`LiveConvex`): whatever it blocks or aborts
stays there, this process stays responsive (Ctrl-C, deadlines) and stops it with a signal. The
worker reads its credentials from its stdin (never from its arguments or environment), sends one
JSON line per value on a pipe of its own (the client prints function log lines on stdout, which
goes to its stderr), ignores SIGINT (Ctrl-C is this process's to act on) and dies with its
parent (Linux: ``PR_SET_PDEATHSIG``) or when its stdin closes.

And every subscription starts with the same query over HTTP with the same credentials
(:meth:`LiveConvex.check`): a refused key or token (401), an unknown function (404), a function
that throws and an unreachable server come back as our errors, through the HTTP adapter's
table. The caller repeats the check from time to time (``s3convex watch --probe-every``) to
learn what the WebSocket client does not say: that the server is unreachable, or that it now
refuses the credentials (a token that expired, a key that was rotated).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from s3convex.adapters.convex import ConvexClient
from s3convex.core.errors import ConvexFunctionError, ConvexUnavailable, SyncError

CredentialKind = Literal["deploy_key", "token"]
WORKER_MODULE = "s3convex.adapters.convex_live"
_STDERR_TAIL = 20  # lines of the worker's stderr kept, to say why it exited

# --- the table: what the PyPI client raises (the worker sends its name), and what it means -----
#   convex.ConvexError: the query threw ConvexError(data)  "convex"  → ConvexFunctionError, .error_data
#   Exception: any other failure of the query (it threw,   "failed"  → ConvexFunctionError
#     an unknown function, arguments its validator refused)
#   StopAsyncIteration: the client stopped delivering      "ended"   → ConvexUnavailable
#   (the worker exited)                                              → ConvexUnavailable
# Messages lose the "[Request ID: …] Server Error" prefix and the stack trace, and never hold
# the credentials.
_REQUEST_ID = re.compile(r"^\s*\[Request ID: [^\]]*\]\s*(Server Error\s*)?")
_STACK_LINE = re.compile(r"^\s+at ")


@dataclass(frozen=True, slots=True)
class LiveCredentials:
    """Who subscribes: the operator (``deploy_key``: internal queries) or an end user
    (``token``: a JWT the deployment's auth provider accepts; public queries only)."""

    kind: CredentialKind
    secret: SecretStr

    @classmethod
    def deploy_key(cls, key: SecretStr) -> LiveCredentials:
        return cls("deploy_key", key)

    @classmethod
    def token(cls, token: SecretStr) -> LiveCredentials:
        return cls("token", token)

    def scrub(self, text: str) -> str:
        """``text`` without the secret, should a server ever echo it."""
        secret = self.secret.get_secret_value()
        return text.replace(secret, "REDACTED") if secret else text


def _message(text: str, scrub: Callable[[str], str]) -> str:
    lines = _REQUEST_ID.sub("", text).strip().splitlines()
    return scrub(" ".join(line.strip() for line in lines if not _STACK_LINE.match(line)).strip())


class LiveSubscription:
    """One subscribed query: ``await sub.next()`` is its next value (the first is its current
    one), or the error its result was; :meth:`close` unsubscribes."""

    def __init__(self, path: str, scrub: Callable[[str], str],
                 unsubscribe: Callable[[], None]) -> None:
        self.path = path
        self._scrub = scrub
        self._unsubscribe = unsubscribe
        self._results: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def deliver(self, message: dict[str, Any]) -> None:
        self._results.put_nowait(message)

    async def next(self) -> Any:
        message = await self._results.get()
        if "value" in message:
            return _decode(message["value"])
        kind, text = message.get("error"), _message(str(message.get("message", "")), self._scrub)
        if kind == "convex":
            raise ConvexFunctionError(self.path, text, _decode(message.get("data")))
        if kind == "failed":
            raise ConvexFunctionError(self.path, text)
        raise ConvexUnavailable(text or "the subscription ended", operation=self.path)

    def close(self) -> None:
        self._unsubscribe()


class LiveConvex:
    """Subscriptions over a WebSocket (in the worker) and HTTP checks (here), with the same
    credentials.

    ``async with LiveConvex(url, credentials, timeout=10) as live``: :meth:`check` a query over
    HTTP, then :meth:`subscribe` to it; :meth:`reset` stops the worker with its subscriptions,
    so the next :meth:`subscribe` connects afresh.
    """

    def __init__(self, url: str, credentials: LiveCredentials, *, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.credentials = credentials
        if credentials.kind == "deploy_key":
            self._http = ConvexClient(self.url, credentials.secret, timeout=timeout)
        else:  # the HTTP API takes a user's JWT as "Authorization: Bearer <jwt>"
            self._http = ConvexClient(self.url, None, timeout=timeout,
                                      transport=_BearerTransport(credentials.secret))
        self._worker: _Worker | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> LiveConvex:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.reset()
        finally:
            await self._http.aclose()

    async def check(self, path: str, args: Mapping[str, Any]) -> Any:
        """Query ``path`` once over HTTP with these credentials (one attempt): its value, or the
        error the HTTP adapter's table says it is (``ConvexForbidden`` for a refused key or
        token, ``ConvexUnavailable`` when the server cannot be reached, …)."""
        try:
            return await self._http.query(path, args)
        except SyncError as exc:
            exc.args = tuple(self.credentials.scrub(str(a)) for a in exc.args)
            raise

    async def subscribe(self, path: str, args: Mapping[str, Any]) -> LiveSubscription:
        """Subscribe to query ``path`` with ``args`` (the worker starts with the first)."""
        if self._worker is not None and self._worker.gone:
            await self.reset()
        if self._worker is None:
            self._worker = await _Worker.start(self.url, self.credentials)
        worker, sub_id = self._worker, next(self._ids)
        subscription = LiveSubscription(path, self.credentials.scrub,
                                        lambda: worker.send({"op": "unsubscribe", "id": sub_id}))
        worker.subscriptions[sub_id] = subscription
        worker.send({"op": "subscribe", "id": sub_id, "path": path, "args": dict(args)})
        return subscription

    async def reset(self) -> None:
        """Stop the worker: every subscription ends with it."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()


class _Worker:
    """The worker process, and the tasks that read what it says."""

    def __init__(self, process: asyncio.subprocess.Process, values: asyncio.StreamReader,
                 scrub: Callable[[str], str]) -> None:
        self.process = process
        self.subscriptions: dict[int, LiveSubscription] = {}
        self.stderr_tail: list[str] = []
        self.gone = False
        self._values = values
        self._scrub = scrub
        self._readers = [asyncio.create_task(self._read_values()),
                         asyncio.create_task(self._read_stderr())]

    @classmethod
    async def start(cls, url: str, credentials: LiveCredentials) -> _Worker:
        read_fd, write_fd = os.pipe()  # the worker's values: a pipe of their own, not its stdout
        try:
            values, transport = await _reader_of(read_fd)
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", WORKER_MODULE, str(write_fd), pass_fds=(write_fd,),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE)
            except BaseException:
                transport.close()
                raise
        finally:
            os.close(write_fd)
        worker = cls(process, values, credentials.scrub)
        worker.send({"url": url, "kind": credentials.kind,
                     "secret": credentials.secret.get_secret_value()})
        return worker

    def send(self, message: dict[str, Any]) -> None:
        stdin = self.process.stdin
        if self.gone or stdin is None or stdin.is_closing():
            return
        stdin.write((json.dumps(message) + "\n").encode())

    async def _read_values(self) -> None:
        try:
            while line := await self._values.readline():
                message = json.loads(line)
                subscription = self.subscriptions.get(message.get("id"))
                if subscription is not None:
                    subscription.deliver(message)
        finally:
            self.gone = True
            code = await self.process.wait()
            tail = _message(" / ".join(self.stderr_tail[-3:]), self._scrub)
            why = f"the WebSocket worker exited ({code})" + (f": {tail}" if tail else "")
            for subscription in self.subscriptions.values():
                subscription.deliver({"error": "ended", "message": why})

    async def _read_stderr(self) -> None:
        stderr = self.process.stderr
        while stderr is not None and (line := await stderr.readline()):
            self.stderr_tail.append(line.decode(errors="replace").rstrip())
            del self.stderr_tail[:-_STDERR_TAIL]

    async def stop(self) -> None:
        self.gone = True
        if self.process.returncode is None:
            self.process.kill()  # it may be blocked in `subscribe`, holding its GIL
        await self.process.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


async def _reader_of(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    """A stream reader on pipe ``fd`` (it owns the descriptor from now on)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 2**20)  # one line is one query result
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                os.fdopen(fd, "rb", buffering=0))
    return reader, transport


class _BearerTransport(httpx.AsyncBaseTransport):
    """httpx's transport with ``Authorization: Bearer <token>`` on every request."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- values on the pipe: JSON, with Convex's tags for what JSON has not --------------------------

def _encode(value: Any, int64: type) -> Any:
    """The client's values as JSON: its ``int64`` → ``{"$integer": n}``, bytes → ``{"$bytes"}``
    (numbers stay floats, as Convex sends them; the commands print whole ones as integers).
    Convex allows no field name starting with ``$``, so the tags cannot be mistaken."""
    if isinstance(value, dict):
        return {str(k): _encode(v, int64) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v, int64) for v in value]
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, int64):
        return {"$integer": value.value}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and "$integer" in value:
            return int(value["$integer"])
        if len(value) == 1 and "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        return {k: _decode(v) for k, v in value.items()}
    return value


# --- the worker process ------------------------------------------------------------------------

def _worker_main(values_fd: int) -> None:
    """``python -m s3convex.adapters.convex_live FD``: subscribe as told on stdin, one JSON line
    per result on FD; ``os._exit`` at the end, never an interpreter shutdown (see the module
    docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    os.dup2(2, 1)  # the client prints function log lines on stdout: off to stderr with them
    out = os.fdopen(values_fd, "w", buffering=1, encoding="utf-8")
    code = 0
    try:
        asyncio.run(_serve(out))
    except BrokenPipeError:  # the parent stopped reading: it is done
        pass
    except BaseException as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 1
    os._exit(code)


def _die_with_parent() -> None:
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before that took effect
            os._exit(0)


async def _serve(out: Any) -> None:
    import convex.values  # the PyPI client: imported in the worker only

    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader(limit=16 * 2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)

    def write(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")

    async def pump(sub_id: int, subscription: Any) -> None:
        while True:
            try:
                value = await subscription.__anext__()
            except StopAsyncIteration:
                return write({"id": sub_id, "error": "ended"})
            except convex.ConvexError as exc:
                write({"id": sub_id, "error": "convex", "message": str(exc),
                       "data": _encode(exc.data, convex.ConvexInt64)})
                continue
            except Exception as exc:
                write({"id": sub_id, "error": "failed", "message": str(exc)})
                continue
            write({"id": sub_id, "value": _encode(value, convex.ConvexInt64)})

    first = await commands.readline()
    if not first:
        return
    config = json.loads(first)
    client = convex.ConvexClient(config["url"])
    if config["kind"] == "deploy_key":
        client.set_admin_auth(config["secret"])
    else:
        client.set_auth(config["secret"])
    del config
    pumps: dict[int, asyncio.Task[None]] = {}
    while line := await commands.readline():
        command = json.loads(line)
        if command["op"] == "subscribe":
            # Coerced here: the client itself drops, silently, an argument it cannot convert.
            args: dict[str, Any] = convex.values.coerce_args_to_convex(command["args"])
            subscription = client.subscribe(command["path"], args)  # blocks until connected
            pumps[command["id"]] = asyncio.create_task(pump(command["id"], subscription))
        elif command["op"] == "unsubscribe" and (task := pumps.pop(command["id"], None)):
            task.cancel()  # a cancelled pending `next` drops the subscription: unsubscribed


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]))
