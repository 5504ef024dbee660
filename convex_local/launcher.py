"""Start and stop the local Convex server (``convex_local/``, a development tool like ``localstack/``; not part of the wheel) from Python.

The server is a Node process that runs this project's own ``convex/`` functions through
convex-test and speaks Convex's HTTP API. It prints one JSON line
``{"event": "listening", "url": ...}`` once it accepts connections; we wait for that line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVER_ENTRY = PROJECT_ROOT / "convex_local" / "server.ts"


class LocalConvexError(RuntimeError):
    pass


@dataclass
class LocalConvex:
    url: str
    admin_key: str
    process: subprocess.Popen[str]
    stderr_tail: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_local_convex(
    admin_key: str,
    *,
    port: int = 0,
    state_file: Path | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> LocalConvex:
    tsx = PROJECT_ROOT / "node_modules" / ".bin" / "tsx"
    if not tsx.exists():
        raise LocalConvexError("node_modules missing: run `npm ci` in the project root first")
    env = {
        **os.environ,
        "CONVEX_LOCAL_PORT": str(port),
        "CONVEX_LOCAL_ADMIN_KEY": admin_key,
        **({"CONVEX_LOCAL_STATE": str(state_file)} if state_file else {}),
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [shutil.which("node") or "node", str(tsx), str(SERVER_ENTRY)],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    tail: list[str] = []
    threading.Thread(target=_collect, args=(process.stderr, tail), daemon=True).start()
    url = _await_listening(process, timeout)
    if url is None:
        process.kill()
        raise LocalConvexError("local Convex server did not start: " + "".join(tail[-20:]))
    threading.Thread(target=_collect, args=(process.stdout, None), daemon=True).start()
    return LocalConvex(url=url, admin_key=admin_key, process=process, stderr_tail=tail)


def _await_listening(process: subprocess.Popen[str], timeout: float) -> str | None:
    result: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "listening":
                result.append(str(event["url"]))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else None


def _collect(stream, sink: list[str] | None) -> None:
    for line in stream:
        if sink is not None:
            sink.append(line)
            del sink[:-200]
