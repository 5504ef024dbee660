"""The PyPI ``convex`` client as a subscriber, the counterpart of ``subscribe.ts`` for the
real-time benchmark's ``--client python`` (same config and output, ``emit: "keys"`` only):

    .venv/bin/python tests/realtime/subscribe_py.py '<config JSON>'

config: ``url``, ``tokens`` (client i uses ``tokens[i % len]``), ``clients``, ``subscriptions``
(``[{query, args}]``). stdout, one JSON line each: ``{"event":"synced","t"}`` once every
subscription has its first result, ``{"event":"key","key","times"}`` when every client has
seen an asset ``available`` in a ``sessions:live`` page, ``{"event":"closed","pending"}`` at
exit. End of stdin closes the clients. Each client is one ``ConvexClient`` (one WebSocket, its
own Rust runtime); the results are awaited with the client's async iteration.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import convex


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def main(config: dict[str, Any]) -> None:
    count = int(config.get("clients", 1))
    tokens = config.get("tokens") or [None]
    subs = config["subscriptions"]
    seen: dict[str, list[float | None]] = {}
    seen_by: list[set[str]] = [set() for _ in range(count)]
    complete: set[str] = set()  # keys every client has seen (reported once)
    unsynced = {(i, j) for i in range(count) for j in range(len(subs))}
    clients = []

    def on_value(client: int, sub: int, value: Any) -> None:
        now = time.time() * 1000
        items = value.get("page", []) if isinstance(value, dict) else []
        for item in items:
            key = item.get("key") if isinstance(item, dict) else None
            if (not isinstance(key, str) or item.get("status") != "available"
                    or key in complete or key in seen_by[client]):
                continue
            seen_by[client].add(key)
            times = seen.setdefault(key, [None] * count)
            times[client] = now
            if all(t is not None for t in times):
                del seen[key]
                complete.add(key)
                for s in seen_by:
                    s.discard(key)
                emit({"event": "key", "key": key, "times": times})
        if (client, sub) in unsynced:
            unsynced.discard((client, sub))
            if not unsynced:
                emit({"event": "synced", "t": now})

    async def follow(client: int, sub: int, subscription: Any) -> None:
        while True:
            try:
                value = await subscription.__anext__()
            except convex.ConvexError:
                continue
            on_value(client, sub, value)

    tasks = []
    for i in range(count):
        client = convex.ConvexClient(config["url"])
        token = tokens[i % len(tokens)]
        if token is not None:
            client.set_auth(token)
        clients.append(client)
        for j, sub in enumerate(subs):
            subscription = client.subscribe(sub["query"], sub.get("args") or {})
            tasks.append(asyncio.create_task(follow(i, j, subscription)))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    for task in tasks:
        task.cancel()
    emit({"event": "closed", "pending": seen})


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
