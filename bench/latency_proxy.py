"""A TCP proxy that adds latency: every chunk waits ``delay`` before it is forwarded.

Both directions are delayed, so a request/response round trip costs ``2 × delay`` more, as
a far-away S3/SQS endpoint would. Chunks keep their order and are not throttled: a stream of
chunks is delayed, not slowed (latency, not bandwidth). Connection set-up itself is not
delayed; the clients under test keep their connections alive, as they do in production.

    python bench/latency_proxy.py --target 127.0.0.1:4566 --delay-ms 10 [--port 0]

prints one JSON line ``{"event": "listening", "url": "http://127.0.0.1:PORT"}`` once it accepts
connections and runs until SIGTERM/SIGINT. Loopback only: it listens on 127.0.0.1 and refuses
a target that is not a loopback address.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ipaddress
import json
import signal
import sys

_HIGH_WATER = 1 << 20  # pause the reading side while this much waits to be written


class _Leg(asyncio.Protocol):
    """One TCP connection of a proxied pair; what it reads is written to ``peer`` later."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.transport: asyncio.Transport | None = None
        self.peer: _Leg | None = None
        self._due: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._queued = 0
        self._loop = asyncio.get_running_loop()
        self._closed = False

    # -- reading side: schedule what arrives for the peer ---------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self._due and self._timer is None:  # data that arrived before this leg connected
            self._timer = self._loop.call_at(self._due[0][0], self._flush)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        self.peer._enqueue(data)

    def eof_received(self) -> bool:
        if self.peer is not None:
            self.peer._enqueue(None)  # forward the half-close after the data before it
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self.peer is not None and not self.peer._closed:
            self.peer._enqueue(None)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    # -- writing side: data from the peer, written once due --------------------------------
    def _enqueue(self, data: bytes | None) -> None:
        self._due.append((self._loop.time() + self.delay, data))
        if data:
            self._queued += len(data)
            if self._queued > _HIGH_WATER and self.peer and self.peer.transport:
                self.peer.transport.pause_reading()
        if self._timer is None:
            self._timer = self._loop.call_at(self._due[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self.transport is None:
            return  # not connected yet: connection_made flushes
        now = self._loop.time()
        while self._due and self._due[0][0] <= now:
            _, data = self._due.popleft()
            if data is None:
                self._close_write()
                self._due.clear()
                return
            self._queued -= len(data)
            if not self._closed:
                self.transport.write(data)
        if self._queued <= _HIGH_WATER // 2 and self.peer and self.peer.transport:
            with contextlib.suppress(RuntimeError):
                self.peer.transport.resume_reading()
        if self._due:
            self._timer = self._loop.call_at(self._due[0][0], self._flush)

    def _close_write(self) -> None:
        if self.transport is None or self._closed:
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()
        if self.peer is not None and self.peer._closed:
            self.transport.close()


class LatencyProxy:
    """``async with LatencyProxy(("127.0.0.1", 4566), delay=0.01) as proxy: proxy.url``."""

    def __init__(self, target: tuple[str, int], *, delay: float, port: int = 0) -> None:
        if not ipaddress.ip_address(target[0]).is_loopback:
            raise ValueError(f"target {target[0]} is not a loopback address")
        self.target = target
        self.delay = delay
        self.port = port
        self._server: asyncio.Server | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> LatencyProxy:
        loop = asyncio.get_running_loop()

        def accept() -> _Leg:
            client = _Leg(self.delay)
            upstream = _Leg(self.delay)
            client.peer, upstream.peer = upstream, client

            async def connect() -> None:
                try:
                    await loop.create_connection(lambda: upstream, *self.target)
                except OSError:
                    if client.transport is not None:
                        client.transport.close()

            task = loop.create_task(connect())
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)
            return client

        self._server = await loop.create_server(accept, "127.0.0.1", self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _serve(target: tuple[str, int], delay: float, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with LatencyProxy(target, delay=delay, port=port) as proxy:
        print(json.dumps({"event": "listening", "url": proxy.url}), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to (loopback)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="delay per direction (10)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    try:
        asyncio.run(_serve((host, int(port)), args.delay_ms / 1000, args.port))
    except ValueError as exc:
        print(f"latency_proxy: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
